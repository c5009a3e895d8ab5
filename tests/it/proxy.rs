//! The `proxy` handler against real upstreams (the project's `tests/apps/upstream.py`, and
//! Python's own `http.server`), with real clients (raw sockets, curl, a `websockets` client):
//! methods and bodies, header rewriting, streaming in bounded memory, Expect and trailers,
//! WebSocket tunnels, dead and hanging upstreams, balancing and body limits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::server::Ondemand;
use crate::support::upstream::{app_path, TestUpstream, PYTHON};
use crate::support::{
    client_connected_to, free_port, raw_request, read_response, tempdir, wait_for_port, wait_until,
    ChildGuard, Response,
};

fn proxy_app(name: &str, path: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\npath = \"{path}\"\n\
         proxy = {{ upstream = {upstream}{extra} }}\n\n"
    )
}

fn quoted(address: &str) -> String {
    format!("\"{address}\"")
}

const NEVER_IDLE: &str = "[server]\nidle_timeout = \"never\"\n\n";

fn json(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", resp.status, resp.text()))
}

/// The upstream's view of a request's headers: lower-cased name → values in order.
fn seen_headers(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_ascii_lowercase(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn seen<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn send(port: u16, head: &str, body: &[u8]) -> Response {
    let mut raw = head.replace('\n', "\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw_request(port, &raw).unwrap()
}

#[test]
fn every_method_with_its_body_reaches_the_upstream() {
    let up = TestUpstream::tcp("one");
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app("api", "/", &quoted(&up.address), "")
    ));
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let body = format!("body of {method}");
        let r = send(
            od.port,
            &format!(
                "{method} /echo/x?q=1 HTTP/1.1\nHost: app.example\nContent-Length: {}\nConnection: close\n\n",
                body.len()
            ),
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some("one"));
        let echo = json(&r);
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], "/echo/x?q=1");
        assert_eq!(echo["body_len"], body.len());
        assert_eq!(
            echo["body_sha256"],
            format!("{:x}", Sha256::digest(body.as_bytes()))
        );
    }
    // HEAD: headers only, and the pooled connection stays usable afterwards.
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /echo HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(
        raw.ends_with("\r\n\r\n"),
        "a HEAD response has no body: {raw}"
    );
    let r = send(
        od.port,
        "GET /echo HTTP/1.1\nHost: app.example\nConnection: close\n\n",
        b"",
    );
    assert_eq!(json(&r)["method"], "GET");
}

#[test]
fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let up = TestUpstream::tcp("one");
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app("api", "/", &quoted(&up.address), "")
    ));
    let r = send(
        od.port,
        "GET /echo HTTP/1.1\nHost: App.Example:8080\nConnection: keep-alive, X-Secret\n\
         X-Secret: 1\nKeep-Alive: timeout=5\nProxy-Connection: keep-alive\nTE: gzip\n\
         Upgrade: h2c\nX-Forwarded-For: 6.6.6.6\nX-Forwarded-Proto: https\n\
         X-Forwarded-Host: evil.example\nForwarded: for=6.6.6.6\nX-End-To-End: kept\n\n",
        b"",
    );
    let echo = json(&r);
    let h = seen_headers(&echo);
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(
            seen(&h, gone).is_empty(),
            "{gone} reached the upstream: {h:?}"
        );
    }
    assert_eq!(seen(&h, "host"), ["App.Example:8080"]);
    assert_eq!(seen(&h, "x-end-to-end"), ["kept"]);
    assert_eq!(seen(&h, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&h, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&h, "x-forwarded-host"), ["App.Example:8080"]);
    assert_eq!(
        seen(&h, "forwarded"),
        ["for=127.0.0.1;proto=http;host=\"App.Example:8080\""]
    );
    // And on the way back: what the upstream's Connection names is removed from the response.
    let r = send(
        od.port,
        "GET /headers-echo-response?h=Connection:x-foo&h=X-Foo:1&h=Keep-Alive:timeout%3D9&h=X-Bar:2 HTTP/1.1\n\
         Host: a\nConnection: close\n\n",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-foo"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-bar"), Some("2"));
}

#[test]
fn a_trusted_proxy_keeps_its_forwarding_headers() {
    let up = TestUpstream::tcp("one");
    let od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{}",
        proxy_app("api", "/", &quoted(&up.address), "")
    ));
    let r = send(
        od.port,
        "GET /echo HTTP/1.1\nHost: app.example\nX-Forwarded-For: 203.0.113.9\n\
         X-Forwarded-Proto: https\nX-Forwarded-Host: public.example\nConnection: close\n\n",
        b"",
    );
    let h = seen_headers(&json(&r));
    assert_eq!(seen(&h, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(seen(&h, "x-forwarded-proto"), ["https"]);
    assert_eq!(seen(&h, "x-forwarded-host"), ["public.example"]);
    assert_eq!(
        seen(&h, "forwarded"),
        ["for=127.0.0.1;proto=http;host=app.example"],
        "this hop is appended to Forwarded (none came)"
    );
}

/// The README's X-Forwarded-For policy (Security): with `trusted_proxies` set, a peer outside
/// them is treated as any client — what it claims in the four forwarding fields is replaced.
#[test]
fn a_peer_outside_trusted_proxies_cannot_forge_forwarding_headers() {
    let up = TestUpstream::tcp("one");
    let od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\ntrusted_proxies = [\"192.0.2.0/24\", \"::1\"]\n\n{}",
        proxy_app("api", "/", &quoted(&up.address), "")
    ));
    let r = send(
        od.port,
        "GET /echo HTTP/1.1\nHost: app.example\nX-Forwarded-For: 192.0.2.7\n\
         X-Forwarded-Proto: https\nX-Forwarded-Host: public.example\n\
         Forwarded: for=192.0.2.7;proto=https\nConnection: close\n\n",
        b"",
    );
    let h = seen_headers(&json(&r));
    assert_eq!(seen(&h, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&h, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&h, "x-forwarded-host"), ["app.example"]);
    assert_eq!(
        seen(&h, "forwarded"),
        ["for=127.0.0.1;proto=http;host=app.example"]
    );
}

#[test]
fn strip_prefix_and_unix_socket_upstreams() {
    let dir = tempdir();
    let up = TestUpstream::unix("sock", &dir.path().join("up.sock"));
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}{}",
        proxy_app(
            "stripped",
            "/api",
            &quoted(&up.address),
            ", strip_prefix = true"
        ),
        proxy_app("kept", "/echo", &quoted(&up.address), "")
    ));
    let r = send(
        od.port,
        "GET /api/echo/a%2Fb?x=1 HTTP/1.1\nHost: a\nConnection: close\n\n",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("sock"));
    assert_eq!(json(&r)["path"], "/echo/a%2Fb?x=1");
    let r = send(
        od.port,
        "GET /echo/../echo/y HTTP/1.1\nHost: a\nConnection: close\n\n",
        b"",
    );
    // The normalized path is what is forwarded: the upstream sees what routing saw.
    assert_eq!(json(&r)["path"], "/echo/y");
}

#[test]
fn chunked_bodies_expect_100_continue_and_trailers() {
    let up = TestUpstream::tcp("one");
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app("api", "/", &quoted(&up.address), "")
    ));
    // A chunked request body with a trailer field.
    let r = send(
        od.port,
        "POST /echo HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTrailer: x-sum\nTE: trailers\n\
         Connection: close\n\n",
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
    );
    let echo = json(&r);
    assert_eq!(echo["body_len"], 11);
    assert_eq!(
        echo["body_sha256"],
        format!("{:x}", Sha256::digest(b"hello world"))
    );
    assert_eq!(echo["trailers"][0][1], "42", "{echo}");

    // Expect: 100-continue: the client waits for 100 before sending the body.
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let interim = read_response(&mut s).unwrap();
    assert_eq!(interim.status, 100);
    s.write_all(b"data").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(json(&r)["body_len"], 4);

    // Response trailers reach a client that accepts them.
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.contains("\r\nhello \r\n"), "{raw}");
    assert!(
        raw.ends_with("\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "{raw}"
    );
}

/// sha256 of `n` bytes of the upstream's download pattern (byte i is i % 256).
fn pattern_sha256(n: u64) -> String {
    let block: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(256);
    let mut hash = Sha256::new();
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        hash.update(&block[..take]);
        left -= take as u64;
    }
    format!("{:x}", hash.finalize())
}

/// 512 MiB up and twice 512 MiB down through an ondemand whose address space is capped at
/// 256 MiB more than it uses at rest: a proxy that buffered bodies would fail to allocate.
#[test]
fn large_bodies_stream_in_bounded_memory() {
    const SIZE: u64 = 512 * 1024 * 1024;
    let up = TestUpstream::tcp("one");
    let mut od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app("api", "/", &quoted(&up.address), "")
    ));
    let vsz = vm_kib(od.child.pid(), "VmSize");
    let cap = (vsz + 256 * 1024) * 1024;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &od.child.pid().to_string(),
            &format!("--as={cap}:{cap}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success());

    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let block: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(256);
    let mut sent = 0;
    while sent < SIZE {
        let take = (SIZE - sent).min(block.len() as u64) as usize;
        s.write_all(&block[..take]).unwrap();
        sent += take as u64;
    }
    let r = read_response(&mut s).unwrap();
    let echo = json(&r);
    assert_eq!(echo["body_len"], SIZE);
    assert_eq!(echo["body_sha256"], pattern_sha256(SIZE));

    // Download, chunked and with a length, hashed as it arrives.
    for chunked in [1, 0] {
        let r = curl_hash(
            od.port,
            &format!("/download?bytes={SIZE}&chunked={chunked}"),
        );
        assert_eq!(r, pattern_sha256(SIZE));
    }
    assert!(od.is_running());
}

/// Downloads `path` with curl and returns the sha256 of the body.
fn curl_hash(port: u16, path: &str) -> String {
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", &format!("http://127.0.0.1:{port}{path}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = curl.stdout.take().unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    assert!(curl.wait().unwrap().success());
    format!("{:x}", hash.finalize())
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn websockets_pass_through_and_hold_off_idle_exit() {
    let up = TestUpstream::tcp("one");
    // The socket is the test's, as it is the supervisor's in production: the client connects first
    // and ondemand starts only then, so a slow Python start-up cannot outlast idle_timeout = 1s
    // before the first connection (it did once in CI: the launcher had exited, connection refused).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = Command::new(PYTHON)
        .arg(app_path("ws_client.py"))
        .arg(format!("ws://127.0.0.1:{port}/ws"))
        .args([
            "--messages",
            "20",
            "--binary-size",
            "3000000",
            "--hold",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ws = ChildGuard::new(ws);
    wait_until(
        "the WebSocket client to connect",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = ws.child().try_wait() {
                let mut err = String::new();
                if let Some(mut e) = ws.child().stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("the WebSocket client exited before connecting ({status}): {err}");
            }
            client_connected_to(port)
        },
    );
    let mut od = Ondemand::start_on(
        &listener,
        &format!(
            "[server]\nidle_timeout = \"1s\"\n\n{}",
            proxy_app("api", "/", &quoted(&up.address), "")
        ),
    );
    let started = Instant::now();
    let ws = ws.into_inner().wait_with_output().unwrap();
    assert!(
        ws.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ws.stdout),
        String::from_utf8_lossy(&ws.stderr)
    );
    assert!(String::from_utf8_lossy(&ws.stdout).contains("ok 20"));
    // The tunnel lasted over 3 s with idle_timeout = 1s: only its activity kept the launcher up.
    assert!(started.elapsed() > Duration::from_secs(3));
    assert!(
        od.is_running(),
        "the launcher exited under an open WebSocket"
    );
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn refused_hanging_and_failing_upstreams_get_clear_answers() {
    let up = TestUpstream::tcp("one");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}{}",
        proxy_app("live", "/", &quoted(&up.address), ", timeout = \"500ms\""),
        proxy_app("gone", "/gone", &quoted(&dead), "")
    ));
    let r = send(
        od.port,
        "GET /gone/x HTTP/1.1\nHost: a\nConnection: close\n\n",
        b"",
    );
    assert_eq!(r.status, 502);
    assert!(r.text().contains("app \"gone\""), "{}", r.text());
    assert!(r.text().contains("cannot connect"), "{}", r.text());
    od.wait_log(&format!("upstream={dead}"), Duration::from_secs(5));

    let t = Instant::now();
    let r = send(
        od.port,
        "GET /hang HTTP/1.1\nHost: a\nConnection: close\n\n",
        b"",
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("did not answer within 500ms"),
        "{}",
        r.text()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    od.wait_log(&format!("upstream={}", up.address), Duration::from_secs(5));

    // An upstream that breaks off mid-body: the client sees a truncated body, not a hang.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/close-mid-body", od.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert!(!out.status.success(), "curl must report the truncated body");

    // An upstream that dies without answering (this one exits: it goes last).
    let r = send(
        od.port,
        "GET /crash HTTP/1.1\nHost: a\nConnection: close\n\n",
        b"",
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("closed the connection"), "{}", r.text());
}

#[test]
fn a_dead_upstream_is_skipped_and_weights_split_traffic() {
    let a = TestUpstream::tcp("a");
    let b = TestUpstream::tcp("b");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}{}",
        proxy_app(
            "weighted",
            "/",
            &format!(
                "[{{ url = \"{}\", weight = 3 }}, {{ url = \"{}\", weight = 1 }}]",
                a.address, b.address
            ),
            ""
        ),
        proxy_app(
            "with-dead",
            "/d",
            &format!("[\"{dead}\", \"{}\"]", a.address),
            ", strip_prefix = true"
        )
    ));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..400 {
        let r = send(
            od.port,
            "GET /pid HTTP/1.1\nHost: a\nConnection: close\n\n",
            b"",
        );
        assert_eq!(r.status, 200);
        *counts
            .entry(r.header("x-upstream").unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts["a"], 300, "{counts:?}");
    assert_eq!(counts["b"], 100, "{counts:?}");
    // Every request succeeds although one of the two upstreams refuses connections.
    for _ in 0..50 {
        let r = send(
            od.port,
            "POST /d/upload HTTP/1.1\nHost: a\nContent-Length: 3\nConnection: close\n\n",
            b"abc",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(json(&r)["body_len"], 3);
    }
}

#[test]
fn the_least_busy_upstream_gets_the_next_request() {
    let a = TestUpstream::tcp("a");
    let b = TestUpstream::tcp("b");
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app(
            "two",
            "/",
            &format!("[\"{}\", \"{}\"]", a.address, b.address),
            ""
        )
    ));
    // Four slow requests in flight: two on each; then two more land on each as the others finish.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let port = od.port;
            std::thread::spawn(move || {
                send(
                    port,
                    "GET /slow?ms=1500 HTTP/1.1\nHost: a\nConnection: close\n\n",
                    b"",
                )
            })
        })
        .collect();
    let served: Vec<String> = slow
        .into_iter()
        .map(|t| t.join().unwrap().header("x-upstream").unwrap().to_string())
        .collect();
    assert_eq!(served.iter().filter(|u| *u == "a").count(), 2, "{served:?}");
    assert_eq!(served.iter().filter(|u| *u == "b").count(), 2, "{served:?}");
}

#[test]
fn request_bodies_over_the_limit_get_413() {
    let up = TestUpstream::tcp("one");
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app("small", "/", &quoted(&up.address), ", max_body = \"1KiB\"")
    ));
    let r = send(
        od.port,
        "POST /upload HTTP/1.1\nHost: a\nContent-Length: 2000\nConnection: close\n\n",
        &[b'x'; 2000],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("1024 bytes"), "{}", r.text());
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'y'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = send(
        od.port,
        "POST /upload HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nConnection: close\n\n",
        &chunked,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let r = send(
        od.port,
        "POST /upload HTTP/1.1\nHost: a\nContent-Length: 1000\nConnection: close\n\n",
        &[b'z'; 1000],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A third-party upstream: Python's own `http.server`, serving files.
#[test]
fn a_third_party_upstream_python_http_server() {
    let dir = tempdir();
    std::fs::write(dir.path().join("hello.txt"), "third party\n").unwrap();
    let port = free_port();
    let server = Command::new(PYTHON)
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = crate::support::ChildGuard::new(server);
    wait_for_port(port, Duration::from_secs(10));
    let od = Ondemand::start(&format!(
        "{NEVER_IDLE}{}",
        proxy_app(
            "files",
            "/files",
            &quoted(&format!("http://127.0.0.1:{port}")),
            ", strip_prefix = true"
        )
    ));
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .arg(format!("http://127.0.0.1:{}/files/hello.txt", od.port))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "third party\n");
}

#[test]
fn config_errors_name_the_upstream_problem() {
    let cases = [
        (
            "proxy = { upstream = \"unix:relative.sock\" }",
            "must be absolute",
        ),
        (
            "proxy = { upstream = \"https://x:1\" }",
            "https upstreams are not supported",
        ),
        (
            "proxy = { upstream = \"http://x:1/base\" }",
            "without a path",
        ),
        ("proxy = { upstream = [] }", "names no server"),
        (
            "proxy = { upstream = \"http://x:1\", timeout = \"soon\" }",
            "invalid duration",
        ),
        (
            "proxy = { upstream = \"http://x:1\" }\nrespond = {}",
            "more than one handler",
        ),
    ];
    crate::support::assert_check_errors(
        &cases.map(|(handler, expected)| (format!("[[app]]\nname = \"x\"\n{handler}\n"), expected)),
    );
}
