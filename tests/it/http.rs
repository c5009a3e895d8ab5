//! Serving HTTP: routing by host and path, keep-alive, h2c, and a clear 4xx (never a silent close)
//! for malformed requests, slow heads and missing hosts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::server::Ondemand;
use crate::support::{get, raw_request, read_response};

const APPS: &str = r#"
[server]
idle_timeout = "never"

[[app]]
name = "exact"
host = "a.example"
respond = { body = "exact\n" }

[[app]]
name = "exact-api"
host = "a.example"
path = "/api"
respond = { body = "exact-api\n", headers = { x-app = "exact-api" } }

[[app]]
name = "wild"
host = "*.example"
respond = { body = "wild\n" }

[[app]]
name = "fallback"
respond = { status = 203, body = "fallback\n", content_type = "text/x-fallback" }

[[app]]
name = "fallback-deep"
path = "/deep/er"
respond = { body = "deep\n" }
"#;

#[test]
fn routes_by_host_then_longest_path_prefix() {
    let od = Ondemand::start(APPS);
    let cases = [
        ("a.example", "/", "exact\n"),
        ("A.Example:8080", "/x", "exact\n"),
        ("a.example", "/api", "exact-api\n"),
        ("a.example", "/api/v1?q=1", "exact-api\n"),
        ("a.example", "/apix", "exact\n"),
        ("a.example", "/%61pi/x", "exact-api\n"),
        ("a.example", "/x/../api", "exact-api\n"),
        ("b.example", "/api", "wild\n"),
        ("deep.b.example", "/", "wild\n"),
        ("example", "/", "fallback\n"),
        ("other.test", "/deep/er/x", "deep\n"),
        ("other.test", "/deep/err", "fallback\n"),
    ];
    for (host, path, body) in cases {
        let r = get(od.port, host, path).unwrap();
        assert_eq!(r.text(), body, "Host: {host}, path {path}");
    }
    let r = get(od.port, "a.example", "/api").unwrap();
    assert_eq!(r.header("x-app"), Some("exact-api"));
    let r = get(od.port, "zzz", "/").unwrap();
    assert_eq!(r.status, 203);
    assert_eq!(r.header("content-type"), Some("text/x-fallback"));
}

#[test]
fn no_matching_app_is_404_naming_host_and_path() {
    let od = Ondemand::start("[[app]]\nname = \"a\"\nhost = \"a.example\"\nrespond = {}\n");
    let r = get(od.port, "b.example", "/some/where").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        "ondemand: no app for host b.example and path /some/where\n"
    );
}

#[test]
fn paths_that_cannot_be_normalized_are_400() {
    let od = Ondemand::start(APPS);
    for path in ["/../etc/passwd", "/a/%2e%2e/%2e%2e/x", "/a%00b", "/a%zz"] {
        let r = get(od.port, "a.example", path).unwrap();
        assert_eq!(r.status, 400, "{path}");
        assert!(
            r.text().starts_with("ondemand: bad request path: "),
            "{path}: {}",
            r.text()
        );
    }
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let od = Ondemand::start(APPS);
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..50 {
        s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: a.example\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.text(), "exact\n");
        assert_ne!(r.header("connection"), Some("close"));
    }
    // Pipelined requests are answered in order.
    s.write_all(
        b"GET /api HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_response(&mut s).unwrap().text(), "exact-api\n");
    assert_eq!(read_response(&mut s).unwrap().text(), "exact\n");
}

#[test]
fn h2c_prior_knowledge_and_http1_share_the_socket() {
    let od = Ondemand::start(APPS);
    let url = format!("http://127.0.0.1:{}/api", od.port);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-H",
            "Host: a.example",
            "-w",
            "\\n%{http_version}",
            &url,
        ])
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "exact-api\n\n2", "an HTTP/2 response");
    let out = Command::new("curl")
        .args(["-sS", "-H", "Host: a.example", "--http1.1", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exact-api\n");
}

#[test]
fn malformed_requests_get_a_4xx_response_not_a_silent_close() {
    let od = Ondemand::start(
        "[server]\nidle_timeout = \"never\"\nmax_header_size = \"16KiB\"\nmax_headers = 50\n[[app]]\nname = \"a\"\nrespond = {}\n",
    );
    let many_headers: String = (0..60).map(|i| format!("X-{i}: y\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        (
            "space in header name",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "no Host in HTTP/1.1",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            &[400],
        ),
        (
            "bad Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "unknown HTTP version",
            b"GET / HTTP/3.7\r\nHost: a\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        (
            "NUL in header",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "header too large",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
                "a".repeat(20_000)
            )
            .into_bytes(),
            &[431],
        ),
        (
            "too many headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").into_bytes(),
            &[431],
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n".to_vec(),
            &[400],
        ),
    ];
    for (what, raw, statuses) in cases {
        let r = raw_request(od.port, &raw).unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert!(statuses.contains(&r.status), "{what}: got {}", r.status);
    }
}

#[test]
fn slow_request_head_gets_408_after_header_read_timeout() {
    let od = Ondemand::start("[server]\nidle_timeout = \"never\"\nheader_read_timeout = \"300ms\"\n[[app]]\nname = \"a\"\nrespond = {}\n");
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    // A slowloris client: a byte now and then, never the end of the head.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 408);
    assert!(
        r.text().contains("not received completely in time"),
        "{}",
        r.text()
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        s.read(&mut [0; 16]).unwrap(),
        0,
        "the connection is closed after the 408"
    );
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let od = Ondemand::start("[server]\nidle_timeout = \"never\"\nkeepalive_timeout = \"300ms\"\n[[app]]\nname = \"a\"\nrespond = {}\n");
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_response(&mut s).unwrap();
    let start = Instant::now();
    assert_eq!(s.read(&mut [0; 16]).unwrap(), 0);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn max_connections_queues_further_clients_instead_of_dropping_them() {
    let od = Ondemand::start("[server]\nidle_timeout = \"never\"\nmax_connections = 2\n[[app]]\nname = \"a\"\nrespond = {}\n");
    let hold = |port| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        read_response(&mut s).unwrap();
        s
    };
    let first = hold(od.port);
    let _second = hold(od.port);
    // The third connection is queued by the kernel, not accepted: its request waits.
    let mut third = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        third.read(&mut [0; 1]).is_err(),
        "answered although two connections are open"
    );
    od.wait_log(
        "max_connections (2) reached: new connections wait in the listen queue",
        Duration::from_secs(5),
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_response(&mut third).unwrap().status, 200);
}

/// `threads = 2` runs a thread pool instead of the default single thread; same behaviour.
#[test]
fn a_thread_pool_serves_the_same() {
    let od = Ondemand::start("[server]\nidle_timeout = \"never\"\nthreads = 2\n[[app]]\nname = \"a\"\nrespond = { body = \"pool\\n\" }\n");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let port = od.port;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                for _ in 0..20 {
                    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                    assert_eq!(read_response(&mut s).unwrap().text(), "pool\n");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// Many requests multiplexed on HTTP/2 connections, by a real h2 client (h2load from nghttp2).
/// (curl 7.88 cannot reuse an h2c prior-knowledge connection with any server, so it is not used
/// for this.)
#[test]
fn h2c_multiplexes_many_streams_per_connection() {
    let od = Ondemand::start(APPS);
    let out = Command::new("h2load")
        .args(["-n", "400", "-c", "2", "-m", "20", "-H", "Host: a.example"])
        .arg(format!("http://127.0.0.1:{}/api", od.port))
        .output()
        .expect("run h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("400 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 400 2xx"), "{text}");
}
