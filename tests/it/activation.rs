//! systemd's socket hand-over, through the real `systemd-socket-activate`: named sockets, TCP and
//! unix stream, LISTEN_* consumed, and a connected socket (Accept=yes) refused with advice.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    bin, free_port, get, read_response, tempdir, wait_for_port, wait_until, write_file, ChildGuard,
};

// idle_timeout leaves room for a loaded machine: systemd-socket-activate starts ondemand once, so
// an instance that idled out between the port probe and the request would leave nothing listening.
const CONFIG: &str = "[server]\nidle_timeout = \"2s\"\nlog = \"stderr\"\n[[app]]\nname = \"a\"\nrespond = { body = \"activated\\n\" }\n";

fn socket_activate(args: &[&str], config: &std::path::Path, stderr: std::fs::File) -> ChildGuard {
    let child = Command::new("systemd-socket-activate")
        .args(args)
        .arg(bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run systemd-socket-activate (it comes with systemd)");
    ChildGuard::new(child)
}

#[test]
fn serves_tcp_and_unix_sockets_passed_by_systemd_socket_activate() {
    let dir = tempdir();
    let config = write_file(dir.path(), "ondemand.toml", CONFIG);
    let port = free_port();
    let unix = dir.path().join("http.sock");
    let log = dir.path().join("stderr.log");
    let mut child = socket_activate(
        &[
            "-l",
            &format!("127.0.0.1:{port}"),
            "-l",
            unix.to_str().unwrap(),
            "--fdname=http:http2",
        ],
        &config,
        std::fs::File::create(&log).unwrap(),
    );
    wait_for_port(port, Duration::from_secs(10));
    // The first connection starts ondemand in place of systemd-socket-activate.
    assert_eq!(get(port, "x", "/").unwrap().text(), "activated\n");
    let mut s = UnixStream::connect(&unix).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().text(), "activated\n");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("idle exit");
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("ready: serving 1 app on 2 sockets"), "{log}");
}

#[test]
fn an_accept_yes_connection_socket_is_refused_with_advice() {
    let dir = tempdir();
    let config = write_file(dir.path(), "ondemand.toml", CONFIG);
    let port = free_port();
    let log = dir.path().join("stderr.log");
    let mut child = socket_activate(
        &["--accept", "-l", &format!("127.0.0.1:{port}")],
        &config,
        std::fs::File::create(&log).unwrap(),
    );
    wait_for_port(port, Duration::from_secs(10));
    let _conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_until("the refusal in the log", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Accept=no")
    });
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("is not listening"), "{log}");
    drop(child.0.take().map(|mut c| c.kill()));
}
