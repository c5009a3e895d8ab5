//! Behind a load balancer: the PROXY protocol (v1 and v2, sent as raw bytes the way HAProxy
//! sends them) giving the client's address to forwarding headers, `trusted_proxies` and the
//! access log; connections without a header refused with a log line; and, in `haproxy`, two
//! hosts (network namespaces, each with a real xinetd starting ondemand) behind a real HAProxy.

mod haproxy;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::server::Ondemand;
use crate::support::upstream::TestUpstream;
use crate::support::{read_response, Response};

/// A v2 header (PROXY command, TCP over IPv4) from `client` to 10.0.0.1:80.
fn v2_proxy(client: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(client);
    h.extend([10, 0, 0, 1]);
    h.extend(51000u16.to_be_bytes());
    h.extend(80u16.to_be_bytes());
    h
}

/// A v2 LOCAL header (a load balancer's own health check): no client address.
fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    h
}

/// Sends `header` then `request` on one connection and reads the response.
fn send(port: u16, header: &[u8], request: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut bytes = header.to_vec();
    bytes.extend(request.replace('\n', "\r\n").bytes());
    s.write_all(&bytes)?;
    read_response(&mut s)
}

/// What the test upstream saw as X-Forwarded-For (its /echo lists the headers it received).
fn forwarded_for(response: &Response) -> Vec<String> {
    assert_eq!(response.status, 200, "{}", response.text());
    let echo: Value = serde_json::from_slice(&response.body).expect("JSON from /echo");
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-forwarded-for")
        })
        .map(|pair| pair[1].as_str().unwrap().to_string())
        .collect()
}

fn launcher(up: &TestUpstream, server: &str) -> Ondemand {
    Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\naccess_log = \"json\"\n{server}\n\
         [[app]]\nname = \"api\"\nproxy = {{ upstream = \"{}\" }}\n",
        up.address
    ))
}

const ECHO: &str = "GET /echo HTTP/1.1\nHost: app.example\nConnection: close\n\n";

#[test]
fn the_client_address_in_a_proxy_header_is_what_headers_and_logs_see() {
    let up = TestUpstream::tcp("behind-lb");
    let od = launcher(&up, "proxy_protocol = true");
    let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 80\r\n";
    assert_eq!(
        forwarded_for(&send(od.port, v1, ECHO).unwrap()),
        ["192.0.2.7"]
    );
    let v2 = v2_proxy([198, 51, 100, 9]);
    assert_eq!(
        forwarded_for(&send(od.port, &v2, ECHO).unwrap()),
        ["198.51.100.9"]
    );
    let v1_ipv6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\n";
    assert_eq!(
        forwarded_for(&send(od.port, v1_ipv6, ECHO).unwrap()),
        ["2001:db8::7"]
    );
    // LOCAL (a health check of the load balancer's own): the real peer stays.
    assert_eq!(
        forwarded_for(&send(od.port, &v2_local(), ECHO).unwrap()),
        ["127.0.0.1"]
    );
    // Keep-alive: one header, then several requests on the connection.
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&v2_proxy([203, 0, 113, 4])).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: app.example\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(forwarded_for(&r), ["203.0.113.4"]);
    }
    drop(s);
    for client in ["192.0.2.7", "198.51.100.9", "2001:db8::7", "203.0.113.4"] {
        od.wait_log(&format!("\"peer\":\"{client}\""), Duration::from_secs(10));
    }
}

#[test]
fn trusted_proxies_are_judged_by_the_client_in_the_proxy_header() {
    let up = TestUpstream::tcp("trust");
    let od = launcher(
        &up,
        "proxy_protocol = [\"http\"]\ntrusted_proxies = [\"192.0.2.0/24\"]",
    );
    let request =
        "GET /echo HTTP/1.1\nHost: a\nX-Forwarded-For: 203.0.113.9\nConnection: close\n\n";
    let trusted = send(od.port, &v2_proxy([192, 0, 2, 50]), request).unwrap();
    assert_eq!(forwarded_for(&trusted), ["203.0.113.9, 192.0.2.50"]);
    let untrusted = send(od.port, &v2_proxy([198, 51, 100, 1]), request).unwrap();
    assert_eq!(forwarded_for(&untrusted), ["198.51.100.1"]);
}

#[test]
fn a_connection_without_a_valid_header_is_refused_with_a_log_line() {
    let up = TestUpstream::tcp("refused");
    let od = launcher(&up, "proxy_protocol = true");
    // Plain HTTP: told why, then closed.
    let r = send(od.port, b"", ECHO).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("load balancer only (PROXY protocol)"),
        "{}",
        r.text()
    );
    od.wait_log("connection from 127.0.0.1:", Duration::from_secs(10));
    od.wait_log(
        "refused: it began with no valid PROXY protocol header",
        Duration::from_secs(10),
    );
    // A broken header: closed without an answer (and nothing reaches the app).
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"PROXY TCP4 999.1.1.1 10.0.0.1 1 80\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // The launcher keeps serving connections that do send one.
    let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 80\r\n";
    assert_eq!(
        forwarded_for(&send(od.port, v1, ECHO).unwrap()),
        ["192.0.2.7"]
    );
}

#[test]
fn proxy_protocol_applies_only_to_the_sockets_it_names() {
    let up = TestUpstream::tcp("named");
    // `--listen` sockets are called "http": a list without it leaves them plain, with a warning.
    let od = launcher(&up, "proxy_protocol = [\"lb\"]");
    assert_eq!(
        forwarded_for(&send(od.port, b"", ECHO).unwrap()),
        ["127.0.0.1"]
    );
    od.wait_log(
        "proxy_protocol names the socket \"lb\", but this launcher's sockets are called [\"http\"]",
        Duration::from_secs(10),
    );
}

#[test]
fn check_refuses_a_malformed_proxy_protocol_setting() {
    crate::support::assert_check_errors(&[
        (
            "[server]\nproxy_protocol = \"yes\"\n".to_string(),
            "true, false, or a list of socket names",
        ),
        (
            "[server]\nproxy_protocol = [\"bad name\"]\n".to_string(),
            "\"bad name\" is not a socket name",
        ),
    ]);
}

#[test]
fn on_an_https_socket_the_header_comes_before_the_tls_handshake() {
    use crate::support::tls::{certificate_toml, curl_https, TestCa};
    use crate::support::{free_port, get, tempdir, wait_for_port};
    let certs = tempdir();
    let ca = TestCa::new(certs.path());
    let issued = ca.issue(certs.path(), "site", &["site.test"], 1);
    let https_port = free_port();
    let od = Ondemand::start_with_args(
        &format!(
            "[server]\nidle_timeout = \"never\"\naccess_log = \"json\"\n\
             proxy_protocol = [\"https\"]\n\n\
             [[app]]\nname = \"site\"\nrespond = {{ body = \"site\\n\" }}\n\n{}",
            certificate_toml(&issued, "\"site.test\"", true)
        ),
        &["--listen", &format!("https://127.0.0.1:{https_port}")],
    );
    wait_for_port(https_port, Duration::from_secs(10));
    // curl sends a PROXY v1 header, then the TLS handshake.
    let (code, body, _, err) = curl_https(
        https_port,
        "site.test",
        "/",
        &ca.ca_pem,
        &["--haproxy-protocol"],
    );
    assert_eq!(
        (code, body.as_str()),
        (0, "site\n"),
        "{err}\n{}",
        od.log_text()
    );
    // Without the header, the handshake never starts: the connection is refused.
    let (code, _, _, _) = curl_https(https_port, "site.test", "/", &ca.ca_pem, &[]);
    assert_ne!(code, 0);
    od.wait_log(
        "refused: it began with no valid PROXY protocol header",
        Duration::from_secs(10),
    );
    // The plain socket ("http") is not named: no header there.
    assert_eq!(get(od.port, "site.test", "/").unwrap().text(), "site\n");
}
