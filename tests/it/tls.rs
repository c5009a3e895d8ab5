//! HTTPS: certificates made at test time by a throwaway CA, the real binary on `--listen
//! https://...`, real xinetd and real systemd with the project's units, and two TLS clients
//! (curl, and python3's ssl module via tests/apps/tls_client.py), plus h2load for HTTP/2.
//!
//! Each certificate's serial number (and common name `serial-N`) tells which one a client got.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::nspawn::{Container, PAYLOAD};
use crate::support::server::Ondemand;
use crate::support::tls::{certificate_toml, curl_https, probe, Issued, TestCa};
use crate::support::upstream::{app_path, TestUpstream, PYTHON};
use crate::support::xinetd::{current_uid, Exited, Xinetd};
use crate::support::{
    bin, free_port, get, raw_request, run_ondemand, tempdir, wait_until, write_file, ChildGuard,
};

/// Starts ondemand with `config` on a plain socket and on `https://127.0.0.1:PORT`; returns it and
/// the HTTPS port. Both sockets are bound before the plain one accepts.
fn start_https(config: &str) -> (Ondemand, u16) {
    let port = free_port();
    let od = Ondemand::start_with_args(config, &["--listen", &format!("https://127.0.0.1:{port}")]);
    (od, port)
}

fn serial(probe: &Value) -> u64 {
    probe["serial"]
        .as_u64()
        .unwrap_or_else(|| panic!("no serial in {probe}"))
}

const TWO_HOSTS: &str = r#"
[server]
idle_timeout = "never"

[[app]]
name = "a"
host = "a.test"
respond = { body = "a\n" }

[[app]]
name = "b"
host = ["b.test", "*.b.test"]
respond = { body = "b\n" }

[[app]]
name = "other"
respond = { body = "other\n" }
"#;

#[test]
fn sni_selects_each_hosts_certificate_and_clients_without_sni_get_the_default() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let a = ca.issue(certs.path(), "a", &["a.test"], 1);
    let b = ca.issue(certs.path(), "b", &["b.test", "*.b.test"], 2);
    let d = ca.issue(certs.path(), "default", &["default.test"], 3);
    let config = format!(
        "{TWO_HOSTS}\n{}{}{}",
        certificate_toml(&a, "\"a.test\"", false),
        certificate_toml(&b, "\"b.test\", \"*.b.test\"", false),
        certificate_toml(&d, "\"default.test\"", true),
    );
    let (od, port) = start_https(&config);

    // Plain HTTP never reads a certificate: they are loaded by the first handshake needing them.
    assert_eq!(get(od.port, "a.test", "/").unwrap().text(), "a\n");
    assert!(
        !od.log_text().contains("loaded certificate"),
        "{}",
        od.log_text()
    );

    for (host, body) in [("a.test", "a\n"), ("b.test", "b\n"), ("www.b.test", "b\n")] {
        let (code, got, _, err) = curl_https(port, host, "/", &ca.ca_pem, &[]);
        assert_eq!(code, 0, "curl https://{host}: {err}");
        assert_eq!(got, body, "https://{host}");
    }
    let log = od.log_text();
    assert!(log.contains("loaded certificate #1"), "{log}");
    assert!(log.contains("loaded certificate #2"), "{log}");
    assert!(
        !log.contains("loaded certificate #3"),
        "not needed yet:\n{log}"
    );

    for (sni, want) in [
        (Some("a.test"), 1),
        (Some("b.test"), 2),
        (Some("x.b.test"), 2),
        (Some("default.test"), 3),
    ] {
        let p = probe(port, &ca.ca_pem, sni, None, Some((sni.unwrap(), "/")));
        assert_eq!(p["ok"], true, "{sni:?}: {p}");
        assert_eq!(serial(&p), want, "{sni:?}: {p}");
        assert_eq!(p["subject_cn"], format!("serial-{want}"));
    }
    // No SNI (as for an IP address): the default certificate, and the request is routed by Host.
    let p = probe(port, &ca.ca_pem, None, None, Some(("b.test", "/")));
    assert_eq!(serial(&p), 3, "{p}");
    assert_eq!(p["body"], "b\n", "{p}");
    let (code, body, _, err) = curl_https(port, "127.0.0.1", "/", &ca.ca_pem, &["-k"]);
    assert_eq!((code, body.as_str()), (0, "other\n"), "{err}");
    // A name no certificate names gets the default too (the client then judges the name).
    let (code, _, _, err) = curl_https(port, "unknown.test", "/", &ca.ca_pem, &[]);
    assert_eq!(
        code, 60,
        "curl refuses the default certificate for another name: {err}"
    );
}

#[test]
fn an_unknown_sni_without_a_default_is_refused_with_unrecognized_name() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let a = ca.issue(certs.path(), "a", &["a.test"], 1);
    let config = format!("{TWO_HOSTS}\n{}", certificate_toml(&a, "\"a.test\"", false));
    let (od, port) = start_https(&config);

    let p = probe(port, &ca.ca_pem, Some("zzz.test"), None, None);
    assert_eq!(p["ok"], false, "{p}");
    let error = p["error"].as_str().unwrap();
    assert!(error.contains("UNRECOGNIZED_NAME"), "python: {error}");
    let (code, _, _, err) = curl_https(port, "zzz.test", "/", &ca.ca_pem, &[]);
    assert_eq!(code, 35, "curl: a TLS handshake error: {err}");
    assert!(err.contains("unrecognized name"), "curl: {err}");
    od.wait_log(
        "no certificate for SNI name \"zzz.test\"",
        Duration::from_secs(5),
    );

    // No SNI and no default: handshake_failure.
    let p = probe(port, &ca.ca_pem, None, None, None);
    assert!(
        p["error"].as_str().unwrap().contains("HANDSHAKE_FAILURE"),
        "{p}"
    );
    // Refusals leave the server serving.
    let p = probe(
        port,
        &ca.ca_pem,
        Some("a.test"),
        None,
        Some(("a.test", "/")),
    );
    assert_eq!((serial(&p), p["body"].as_str()), (1, Some("a\n")), "{p}");
}

#[test]
fn alpn_gives_http2_to_curl_and_h2load_and_http1_to_who_asks() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let a = ca.issue(certs.path(), "a", &["a.test", "127.0.0.1"], 1);
    let config = format!("{TWO_HOSTS}\n{}", certificate_toml(&a, "\"a.test\"", true));
    let (_od, port) = start_https(&config);

    let (code, body, version, err) = curl_https(port, "a.test", "/", &ca.ca_pem, &["--http2"]);
    assert_eq!(
        (code, body.as_str(), version.as_str()),
        (0, "a\n", "2"),
        "{err}"
    );
    let (code, body, version, err) = curl_https(port, "a.test", "/", &ca.ca_pem, &["--http1.1"]);
    assert_eq!(
        (code, body.as_str(), version.as_str()),
        (0, "a\n", "1.1"),
        "{err}"
    );

    let p = probe(port, &ca.ca_pem, Some("a.test"), Some("h2,http/1.1"), None);
    assert_eq!(
        (p["alpn"].as_str(), p["version"].as_str()),
        (Some("h2"), Some("TLSv1.3")),
        "{p}"
    );
    let p = probe(
        port,
        &ca.ca_pem,
        Some("a.test"),
        Some("http/1.1"),
        Some(("a.test", "/")),
    );
    assert_eq!(
        (p["alpn"].as_str(), p["body"].as_str()),
        (Some("http/1.1"), Some("a\n")),
        "{p}"
    );
    // TLS 1.2 clients are served too.
    let (code, _, _, err) = curl_https(port, "a.test", "/", &ca.ca_pem, &["--tls-max", "1.2"]);
    assert_eq!(code, 0, "TLS 1.2: {err}");
    let (code, _, _, err) = curl_https(port, "a.test", "/", &ca.ca_pem, &["--tls-max", "1.1"]);
    assert_eq!(code, 35, "TLS 1.1 is refused: {err}");

    // Multiplexed HTTP/2 over TLS: 4 connections, 10 streams each at a time. h2load sends SNI
    // from the URL's host (none for an address: the default certificate).
    let out = Command::new("h2load")
        .args(["-n", "400", "-c", "4", "-m", "10", "-H", "host: a.test"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .expect("run h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("400 succeeded, 0 failed, 0 errored"),
        "h2load:\n{text}"
    );
}

#[test]
fn forwarded_headers_tell_the_upstream_the_request_came_over_https() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let a = ca.issue(certs.path(), "a", &["app.test"], 1);
    let up = TestUpstream::tcp("up");
    let config = format!(
        "[server]\nidle_timeout = \"never\"\n[[app]]\nname = \"app\"\nhost = \"app.test\"\n\
         proxy = {{ upstream = \"{}\" }}\n{}",
        up.address,
        certificate_toml(&a, "\"app.test\"", false)
    );
    let (od, port) = start_https(&config);
    let header = |echo: &Value, name: &str| -> Option<String> {
        echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    for extra in [&["--http2"][..], &["--http1.1"][..]] {
        let (code, body, _, err) = curl_https(port, "app.test", "/echo", &ca.ca_pem, extra);
        assert_eq!(code, 0, "{err}");
        let echo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            header(&echo, "x-forwarded-proto").as_deref(),
            Some("https"),
            "{echo}"
        );
        let forwarded = header(&echo, "forwarded").unwrap();
        assert!(forwarded.contains("proto=https"), "{forwarded}");
        assert!(
            forwarded.contains(&format!("host=\"app.test:{port}\"")),
            "{forwarded}"
        );
    }
    let r = get(od.port, "app.test", "/echo").unwrap();
    let echo: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        header(&echo, "x-forwarded-proto").as_deref(),
        Some("http"),
        "{echo}"
    );
}

#[test]
fn https_redirect_sends_plain_http_to_https_and_serves_https() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let a = ca.issue(certs.path(), "a", &["a.test", "b.test"], 1);
    let https_port = free_port();
    let config = format!(
        "[server]\nidle_timeout = \"never\"\n\
         [[app]]\nname = \"a\"\nhost = \"a.test\"\nhttps_redirect = {https_port}\nrespond = {{ body = \"a\\n\" }}\n\
         [[app]]\nname = \"b\"\nhost = \"b.test\"\nhttps_redirect = true\nrespond = {{ body = \"b\\n\" }}\n\
         [[app]]\nname = \"open\"\nrespond = {{ body = \"open\\n\" }}\n{}",
        certificate_toml(&a, "\"a.test\", \"b.test\"", false)
    );
    let od = Ondemand::start_with_args(
        &config,
        &["--listen", &format!("https://127.0.0.1:{https_port}")],
    );

    let r = get(od.port, "a.test:8080", "/x/y?q=1").unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{https_port}/x/y?q=1").as_str())
    );
    let r = raw_request(
        od.port,
        b"POST /form HTTP/1.1\r\nHost: b.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 308, "a POST keeps its method: {r:?}");
    assert_eq!(r.header("location"), Some("https://b.test/form"));
    assert_eq!(get(od.port, "open.test", "/").unwrap().text(), "open\n");

    // Following the redirect lands on the HTTPS socket, which serves the app.
    let out = Command::new("curl")
        .args(["-sS", "-L", "--max-time", "20", "--cacert"])
        .arg(&ca.ca_pem)
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", od.port)])
        .args(["--resolve", &format!("a.test:{https_port}:127.0.0.1")])
        .args(["-w", "%{url_effective}"])
        .arg(format!("http://a.test:{}/x", od.port))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("a\nhttps://a.test:{https_port}/x"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_https_socket_answers_plain_http_with_400_and_closes_silent_clients_on_time() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let a = ca.issue(certs.path(), "a", &["a.test"], 1);
    let config = format!(
        "[server]\nidle_timeout = \"never\"\nfirst_request_timeout = \"1s\"\nheader_read_timeout = \"1s\"\n\
         [[app]]\nname = \"a\"\nrespond = {{ body = \"a\\n\" }}\n{}",
        certificate_toml(&a, "\"a.test\"", false)
    );
    let (_od, port) = start_https(&config);

    let r = get(port, "a.test", "/").unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("speaks HTTPS"), "{}", r.text());

    // A client that connects and never starts a handshake is closed at first_request_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed without a byte");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );

    // A slow request head over TLS gets the same 408 as on plain HTTP, inside the TLS session.
    let out = Command::new(PYTHON)
        .arg(app_path("tls_client.py"))
        .args(["partial", "--port", &port.to_string(), "--ca"])
        .arg(&ca.ca_pem)
        .args([
            "--sni",
            "a.test",
            "--send",
            "GET / HTTP/1.1\\r\\nHost: a.te",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let response = v["response"].as_str().unwrap();
    assert!(response.starts_with("HTTP/1.1 408 "), "{v}");
    let seconds = v["seconds"].as_f64().unwrap();
    assert!((0.8..5.0).contains(&seconds), "{v}");
}

/// The `ondemand check` error for a config naming `cert` and `key` for host a.test: the cert
/// value is at 7:8, the key value at 8:7, the hosts at 6:9.
fn check_error(dir: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> String {
    let config = format!(
        "[[app]]\nname = \"a\"\nhost = \"a.test\"\nrespond = {{}}\n\n[[certificate]]\n\
         hosts = [\"a.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let path = write_file(dir, "check.toml", &config);
    let (code, stdout, stderr) = run_ondemand(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "check must refuse it; stdout: {stdout}");
    stderr.trim().to_string()
}

#[test]
fn check_refuses_expired_mismatched_missing_and_misnamed_certificates_with_their_location() {
    let dir = tempdir();
    let d = dir.path();
    let ca = TestCa::new(d);
    let good = ca.issue(d, "good", &["a.test"], 1);
    let other = ca.issue(d, "other", &["a.test"], 2);
    let expired = ca.issue_with(d, "expired", &["a.test"], 3, |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let future = ca.issue_with(d, "future", &["a.test"], 4, |p| {
        p.not_before = rcgen::date_time_ymd(2999, 1, 1);
    });
    let misnamed = ca.issue(d, "misnamed", &["b.test"], 5);
    let garbage = write_file(d, "garbage.pem", "not a certificate\n");
    let cfg = d.join("check.toml");
    let at = |line_col: &str| format!("{}:{line_col}: certificate #1: ", cfg.display());

    let e = check_error(d, &expired.cert, &expired.key);
    assert!(e.contains(&at("8:8")), "{e}");
    assert!(
        e.contains("expired on 2020-01-01T00:00:00Z") && e.contains("expired.pem"),
        "{e}"
    );
    assert!(e.contains("renew it"), "{e}");

    let e = check_error(d, &future.cert, &future.key);
    assert!(
        e.contains(&at("8:8")) && e.contains("not valid before 2999-01-01"),
        "{e}"
    );

    let e = check_error(d, &good.cert, &other.key);
    assert!(e.contains(&at("9:7")), "{e}");
    assert!(
        e.contains(&format!(
            "the private key in {} does not belong to the certificate in {}",
            other.key.display(),
            good.cert.display()
        )),
        "{e}"
    );

    let missing = d.join("missing.pem");
    let e = check_error(d, &missing, &good.key);
    assert!(e.contains(&at("8:8")), "{e}");
    assert!(
        e.contains(&format!(
            "cannot read the certificate file {}",
            missing.display()
        )) && e.contains("No such file"),
        "{e}"
    );
    let e = check_error(d, &good.cert, &d.join("missing.key"));
    assert!(
        e.contains(&at("9:7")) && e.contains("cannot read the key file"),
        "{e}"
    );
    // Unreadable (the tests run as root, so a directory stands in for a file it may not read).
    let e = check_error(d, d, &good.key);
    assert!(
        e.contains(&at("8:8")) && e.contains("Is a directory"),
        "{e}"
    );

    let e = check_error(d, &garbage, &good.key);
    assert!(
        e.contains(&at("8:8")) && e.contains("holds no certificate in PEM form"),
        "{e}"
    );
    let e = check_error(d, &good.cert, &garbage);
    assert!(
        e.contains(&at("9:7")) && e.contains("holds no private key"),
        "{e}"
    );

    let e = check_error(d, &misnamed.cert, &misnamed.key);
    assert!(e.contains(&at("7:9")), "{e}");
    assert!(
        e.contains("not valid for host \"a.test\" (it names b.test)"),
        "{e}"
    );

    // And a good one passes, listing the certificate.
    let config = format!(
        "[[app]]\nname = \"a\"\nhost = \"a.test\"\nrespond = {{}}\n{}",
        certificate_toml(&good, "\"a.test\"", false)
    );
    let path = write_file(d, "ok.toml", &config);
    let (code, stdout, stderr) = run_ondemand(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("NAMES   CERTIFICATE"), "{stdout}");
    assert!(
        stdout.contains(&format!("a.test  {}", good.cert.display())),
        "{stdout}"
    );

    // `serve` does not read certificates at start: an expired one is served (and logged).
    let config = format!(
        "[server]\nidle_timeout = \"never\"\n[[app]]\nname = \"a\"\nrespond = {{}}\n{}",
        certificate_toml(&expired, "\"a.test\"", false)
    );
    let (od, port) = start_https(&config);
    let (code, _, _, _) = curl_https(port, "a.test", "/", &ca.ca_pem, &[]);
    assert_eq!(code, 60, "curl refuses the expired certificate");
    od.wait_log("expired on 2020-01-01", Duration::from_secs(5));
}

/// Replaces `target`'s files with `new`'s the way certbot's renewal does it for each file: the
/// new content appears at once (a rename), never half-written.
fn renew(target: &Issued, new: &Issued) {
    for (from, to) in [(&new.cert, &target.cert), (&new.key, &target.key)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

/// Starts tests/apps/tls_client.py in load mode and waits until it has made its first request;
/// its output (the summary is the last line) comes through the receiver once it exits.
fn load_client(
    port: u16,
    ca: &std::path::Path,
    stop: &std::path::Path,
    mode: &str,
) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut child = Command::new(PYTHON)
        .arg(app_path("tls_client.py"))
        .args(["load", "--port", &port.to_string(), "--ca"])
        .arg(ca)
        .args(["--sni", "a.test", "--max-seconds", "60", mode, "--stop"])
        .arg(stop)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tls_client.py load");
    let stdout = child.stdout.take().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if line == "started" {
                let _ = started_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(all);
    });
    started
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the {mode} load client made no request within 20 s"));
    (ChildGuard::new(child), rx)
}

#[test]
fn reload_under_load_serves_renewed_certificates_without_a_failed_request() {
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let live = ca.issue(certs.path(), "live", &["a.test"], 1);
    let config = format!(
        "[server]\nidle_timeout = \"never\"\nkeepalive_timeout = \"30s\"\n\
         [[app]]\nname = \"a\"\nrespond = {{ body = \"a\\n\" }}\n{}",
        certificate_toml(&live, "\"a.test\"", false)
    );
    let (od, port) = start_https(&config);
    let stop = certs.path().join("stop");
    let mut clients = vec![
        load_client(port, &ca.ca_pem, &stop, "--keep-alive"),
        load_client(port, &ca.ca_pem, &stop, "--new-connections"),
        load_client(port, &ca.ca_pem, &stop, "--new-connections"),
    ];
    // Each client has been served the first certificate before it is renewed.

    for serial in 2..=4u64 {
        let renewed = ca.issue(
            certs.path(),
            &format!("renewed-{serial}"),
            &["a.test"],
            serial,
        );
        renew(&live, &renewed);
        let reloads = od.log_text().matches("configuration reloaded").count();
        od.child.signal(nix::sys::signal::Signal::SIGHUP);
        wait_until("the reload", Duration::from_secs(10), || {
            od.log_text().matches("configuration reloaded").count() > reloads
        });
        // New handshakes get the renewed certificate.
        wait_until(
            &format!("serial {serial} to be served"),
            Duration::from_secs(10),
            || serial_of(port, &ca.ca_pem) == serial,
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::fs::write(&stop, "").unwrap();

    let mut summaries = Vec::new();
    for (client, output) in &mut clients {
        client
            .wait_timeout(Duration::from_secs(20))
            .expect("load client ends once told to stop");
        let text = output.recv_timeout(Duration::from_secs(5)).unwrap();
        let summary: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {text:?}"));
        summaries.push(summary);
    }
    eprintln!("load clients: {summaries:?}");
    for s in &summaries {
        assert_eq!(s["failures"], 0, "{s}\n{}", od.log_text());
        assert!(s["requests"].as_u64().unwrap() > 20, "{s}");
    }
    // The kept-alive connection kept its session (the first certificate) throughout; the
    // per-request connections saw every certificate in turn.
    let kept: Vec<&String> = summaries[0]["serials"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(kept, vec!["1"], "{}", summaries[0]);
    for s in &summaries[1..] {
        let seen = s["serials"].as_object().unwrap();
        for serial in ["1", "2", "3", "4"] {
            assert!(seen.contains_key(serial), "serial {serial} never seen: {s}");
        }
    }
    assert_eq!(serial_of(port, &ca.ca_pem), 4);
}

fn serial_of(port: u16, ca: &std::path::Path) -> u64 {
    serial(&probe(port, ca, Some("a.test"), None, None))
}

/// xinetd passes one socket per service: the second service of the shipped drop-in
/// (xinetd/ondemand), with `--xinetd-socket-name https`, serves HTTPS. Only what a test must
/// change is rewritten: enabled, a free loopback port, our user, the binary and config paths.
#[test]
fn under_xinetd_the_shipped_https_service_serves_https_and_exits_when_idle() {
    let shipped = include_str!("../../xinetd/ondemand");
    let block = &shipped[shipped
        .find("service ondemand-https\n")
        .expect("xinetd/ondemand has a service ondemand-https")..];
    let value = |key: &str| -> String {
        block
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("service ondemand-https has no `{key}` line"))
    };
    assert_eq!(value("port"), "443");
    assert_eq!(value("wait"), "yes");
    assert_eq!(
        value("server_args"),
        "serve --config /etc/ondemand/ondemand.toml --xinetd-socket-name https"
    );
    let x = Xinetd::start_service(|dir, port| {
        let ca = TestCa::new(dir);
        let a = ca.issue(dir, "a", &["a.test"], 7);
        let config = format!(
            "[server]\nidle_timeout = \"300ms\"\nlog = \"{}/ondemand.log\"\nlog_level = \"debug\"\n\
             [[app]]\nname = \"a\"\nhost = \"a.test\"\nrespond = {{ body = \"a\\n\" }}\n{}",
            dir.display(),
            certificate_toml(&a, "\"a.test\"", false)
        );
        let config_path = write_file(dir, "ondemand.toml", &config);
        let mut out = String::new();
        for line in block.lines() {
            let key = line.split_whitespace().next().unwrap_or("");
            let line = match key {
                "disable" => "\tdisable = no".to_string(),
                "port" => format!("\tport = {port}\n\tbind = 127.0.0.1"),
                "flags" => "\tflags = IPv4".to_string(),
                "user" => format!("\tuser = {}", current_uid()),
                "group" => continue,
                "server" => format!("\tserver = {}", bin().display()),
                "server_args" => format!(
                    "\tserver_args = {}",
                    value("server_args").replace(
                        "/etc/ondemand/ondemand.toml",
                        &config_path.display().to_string()
                    )
                ),
                "env" => format!("\tenv = RUNTIME_DIRECTORY={}/run", dir.display()),
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    let ca_pem = x.dir().join("ca.pem");
    for round in 1..=2 {
        let (code, body, version, err) = curl_https(x.port(), "a.test", "/", &ca_pem, &[]);
        // (curl's connection ends with the response; the instance then idles out.)
        assert_eq!(
            (code, body.as_str(), version.as_str()),
            (0, "a\n", "2"),
            "round {round}: {err}\n{}",
            x.report()
        );
        let pid = *x
            .wait_started(round, Duration::from_secs(10))
            .last()
            .unwrap();
        assert_eq!(
            x.wait_exited(pid, Duration::from_secs(10)),
            Exited::Code(0),
            "{}",
            x.report()
        );
    }
    let log = x.file("ondemand.log");
    assert!(log.contains("serving on socket \"https\""), "{log}");
    assert_eq!(
        log.matches("loaded certificate #1").count(),
        2,
        "once per instance:\n{log}"
    );
}

/// The project's units under a real systemd: ondemand.socket (http) and ondemand-https.socket
/// start the same ondemand.service, which gets both sockets whichever one was hit first.
#[test]
fn under_systemd_the_https_socket_unit_starts_the_same_service_with_both_sockets() {
    let deadline = Instant::now() + Duration::from_secs(110);
    let mut config = String::from(
        "[server]\nidle_timeout = \"300ms\"\ndrain_timeout = \"2s\"\n\
         [[app]]\nname = \"a\"\nhost = \"a.test\"\nhttps_redirect = true\nrespond = { body = \"a\\n\" }\n",
    );
    let ct = Container::boot(&config);
    let ca = TestCa::new(&ct.payload());
    ca.issue(&ct.payload(), "a", &["a.test"], 9);
    let inside = Issued {
        cert: format!("{PAYLOAD}/a.pem").into(),
        key: format!("{PAYLOAD}/a.key").into(),
    };
    config.push_str(&certificate_toml(&inside, "\"a.test\"", false));
    ct.write_config(&config);
    let (http, https) = (free_port(), free_port());
    ct.install_units(http);
    ct.install_https_socket(https);
    ct.check(&[
        "systemctl",
        "enable",
        "--now",
        "ondemand.socket",
        "ondemand-https.socket",
    ]);
    assert_eq!(ct.is_active("ondemand-https.socket"), "active");
    assert_eq!(ct.is_active("ondemand.service"), "inactive");

    // First activation through the HTTPS socket.
    let (code, body, _, err) = curl_https(https, "a.test", "/", &ca.ca_pem, &[]);
    assert_eq!((code, body.as_str()), (0, "a\n"), "{err}\n{}", journal(&ct));
    // The same instance also has the plain socket: it redirects.
    let r = get(http, "a.test", "/x").unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("https://a.test/x"));
    let j = journal(&ct);
    assert!(j.contains("serving 1 app on 2 sockets"), "{j}");

    // Idle exit, then the plain socket starts it again, still with both.
    wait_until("the idle exit", deadline - Instant::now(), || {
        ct.is_active("ondemand.service") == "inactive"
    });
    assert_eq!(get(http, "a.test", "/").unwrap().status, 301);
    let (code, body, _, err) = curl_https(https, "a.test", "/", &ca.ca_pem, &[]);
    assert_eq!((code, body.as_str()), (0, "a\n"), "{err}\n{}", journal(&ct));
    let j = journal(&ct);
    assert_eq!(j.matches("serving 1 app on 2 sockets").count(), 2, "{j}");

    // The README's certbot deploy hook does nothing, successfully, while ondemand is idle.
    wait_until("the second idle exit", deadline - Instant::now(), || {
        ct.is_active("ondemand.service") == "inactive"
    });
    ct.check(&["systemctl", "try-reload-or-restart", "ondemand.service"]);
    assert_eq!(ct.is_active("ondemand.service"), "inactive");
    assert_eq!(ct.is_active("ondemand-https.socket"), "active");
}

fn journal(ct: &Container) -> String {
    let out = ct.exec(&[
        "journalctl",
        "--no-pager",
        "-u",
        "ondemand.service",
        "-u",
        "ondemand-https.socket",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
