//! Idle exit: when the launcher exits, what counts as activity, and that nothing is lost around it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::read_response;
use crate::support::server::Ondemand;

fn config(server: &str) -> String {
    format!("[server]\n{server}\n[[app]]\nname = \"a\"\nrespond = {{ body = \"hi\\n\" }}\n")
}

#[test]
fn exits_0_after_idle_timeout_even_if_no_connection_ever_came() {
    let start = Instant::now();
    let mut od = Ondemand::start(&config("idle_timeout = \"400ms\""));
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
    assert!(start.elapsed() >= Duration::from_millis(400));
    let log = od.log_text();
    assert!(log.contains("stopping: idle for 400ms"), "{log}");
}

#[test]
fn each_request_restarts_the_idle_countdown() {
    let mut od = Ondemand::start(&config("idle_timeout = \"600ms\""));
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            crate::support::get(od.port, "a", "/").unwrap().text(),
            "hi\n"
        );
    }
    assert!(
        od.is_running(),
        "exited while requests kept coming every 300ms"
    );
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
}

/// A response still being sent is activity: a client reading a large body slowly keeps the
/// launcher up, and gets every byte.
#[test]
fn a_response_in_flight_holds_off_idle_exit() {
    let body = "x".repeat(32 << 20);
    let mut od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"300ms\"\n[[app]]\nname = \"big\"\nrespond = {{ body = \"{body}\" }}\n"
    ));
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(od.is_running(), "exited with a response in flight");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.len() > 32 << 20, "got {} bytes", rest.len());
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
}

/// A client that connected but has not sent its request yet counts as activity, up to
/// first_request_timeout: it is served even if it speaks after idle_timeout.
#[test]
fn a_connection_about_to_speak_is_not_dropped() {
    let mut od = Ondemand::start(&config(
        "idle_timeout = \"200ms\"\nfirst_request_timeout = \"3s\"",
    ));
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().text(), "hi\n");
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
}

/// ...but a client that never speaks does not keep the launcher alive for ever.
#[test]
fn a_silent_connection_is_closed_at_first_request_timeout_and_exit_follows() {
    let start = Instant::now();
    let mut od = Ondemand::start(&config(
        "idle_timeout = \"200ms\"\nfirst_request_timeout = \"800ms\"",
    ));
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        s.read(&mut [0; 16]).unwrap(),
        0,
        "closed without a response"
    );
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "exited after {took:?}, before first_request_timeout"
    );
}

/// Idle keep-alive connections are not activity: the launcher exits with one open, and closes it.
#[test]
fn idle_keep_alive_connections_do_not_hold_off_exit() {
    let mut od = Ondemand::start(&config(
        "idle_timeout = \"300ms\"\nkeepalive_timeout = \"1h\"",
    ));
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_response(&mut s).unwrap();
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
    assert_eq!(
        s.read(&mut [0; 16]).unwrap(),
        0,
        "the keep-alive connection is closed at exit"
    );
}

/// SIGTERM: accepting stops, the response in flight is completed, exit 0.
#[test]
fn sigterm_lets_in_flight_work_finish() {
    let body = "y".repeat(16 << 20);
    let mut od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\ndrain_timeout = \"20s\"\n[[app]]\nname = \"big\"\nrespond = {{ body = \"{body}\" }}\n"
    ));
    let mut s = TcpStream::connect(("127.0.0.1", od.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).unwrap();
    od.child.signal(Signal::SIGTERM);
    od.wait_log("stopping: received SIGTERM", Duration::from_secs(10));
    let mut rest = std::io::Cursor::new(first).chain(&mut s);
    let r = read_response(&mut rest).unwrap();
    assert_eq!(r.body.len(), 16 << 20);
    assert_eq!(
        rest.read(&mut [0; 16]).unwrap(),
        0,
        "the drained connection is closed after its response"
    );
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
}

/// The socket belongs to the supervisor: ondemand never shuts it down, so a connection made after
/// one instance exited waits in the queue and is served by the next instance.
#[test]
fn the_next_instance_serves_what_queued_after_the_last_one_exited() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let conf = config("idle_timeout = \"200ms\"");
    let mut first = Ondemand::start_on(&listener, &conf);
    assert_eq!(crate::support::get(port, "a", "/").unwrap().text(), "hi\n");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), 0);
    // Nobody accepts now; the kernel queues this connection and its request.
    let mut queued = TcpStream::connect(("127.0.0.1", port)).unwrap();
    queued
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    queued
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut second = Ondemand::start_on(&listener, &conf);
    assert_eq!(read_response(&mut queued).unwrap().text(), "hi\n");
    assert_eq!(second.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let od = Ondemand::start(&config("idle_timeout = \"never\""));
    assert_eq!(
        crate::support::get(od.port, "a", "/").unwrap().text(),
        "hi\n"
    );
    let log_line = format!("log = \"{}\"\n", od.log.display());
    std::fs::write(
        &od.config,
        format!("[server]\n{log_line}idle_timeout = \"never\"\n[[app]]\nname = \"b\"\nrespond = {{ body = \"reloaded\\n\" }}\n"),
    )
    .unwrap();
    od.child.signal(Signal::SIGHUP);
    od.wait_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(
        crate::support::get(od.port, "a", "/").unwrap().text(),
        "reloaded\n"
    );

    std::fs::write(
        &od.config,
        format!("[server]\n{log_line}idle_timeout = \"whenever\"\n"),
    )
    .unwrap();
    od.child.signal(Signal::SIGHUP);
    od.wait_log(
        "reload failed, keeping the running configuration",
        Duration::from_secs(10),
    );
    assert!(
        od.log_text()
            .contains(":3:16: invalid duration \"whenever\""),
        "{}",
        od.log_text()
    );
    assert_eq!(
        crate::support::get(od.port, "a", "/").unwrap().text(),
        "reloaded\n"
    );
}

/// Under a supervisor, a config that fails to load is answered with 503 (no restart loop), and a
/// reload with a fixed file takes effect without a restart.
#[test]
fn a_bad_config_answers_503_until_a_reload_fixes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let od = Ondemand::start_on(
        &listener,
        "[server]\nidle_timeout = \"never\"\n[[app]]\nname = \"a\"\n",
    );
    let r = crate::support::get(port, "a", "/").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("10"));
    // The harness adds settings above the test's text: find the app's line in the file written.
    let written = std::fs::read_to_string(&od.config).unwrap();
    let app_line = written.lines().position(|l| l == "[[app]]").unwrap() + 1;
    assert!(
        od.log_text().contains(&format!(
            "ondemand.toml:{app_line}:1: app \"a\" has no handler"
        )),
        "{}",
        od.log_text()
    );
    let log_line = format!("log = \"{}\"\n", od.log.display());
    std::fs::write(
        &od.config,
        format!(
            "[server]\n{log_line}{}",
            &config("idle_timeout = \"never\"")[9..]
        ),
    )
    .unwrap();
    od.child.signal(Signal::SIGHUP);
    od.wait_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(crate::support::get(port, "a", "/").unwrap().text(), "hi\n");
}

/// The sd_notify protocol as systemd receives it (the test holds the NOTIFY_SOCKET datagram
/// socket): READY=1 with a STATUS= line once serving, WATCHDOG=1 when WATCHDOG_USEC asks for it,
/// and STOPPING=1 with the reason before the idle exit.
#[test]
fn sd_notify_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = crate::support::tempdir();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut od = Ondemand::start_on_with_env(
        &listener,
        &config("idle_timeout = \"1s\""),
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m: &String| m.contains("STOPPING=1")) {
        let n = notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification within 10 s ({e}); so far {messages:?}\n{}",
                od.log_text()
            )
        });
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
    let first = &messages[0];
    assert!(
        first.contains("READY=1\n") && first.contains("STATUS=serving 1 app on 1 socket"),
        "{messages:?}"
    );
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 1 s at a 200 ms interval: {messages:?}"
    );
    let last = messages.last().unwrap();
    assert!(
        last.contains("STOPPING=1\n") && last.contains("STATUS=Stopping: idle for 1s"),
        "{messages:?}"
    );
}

/// A load balancer's health probe is answered by the launcher and never counts as activity:
/// probed every 100 ms, the launcher still exits after its idle_timeout.
#[test]
fn health_probes_never_keep_the_launcher_up() {
    let mut od = Ondemand::start(
        "[server]\nidle_timeout = \"1s\"\nhealth_path = \"/healthz\"\n\
         [[app]]\nname = \"a\"\nrespond = { body = \"app\\n\" }\n",
    );
    let started = Instant::now();
    let r = crate::support::get(od.port, "any.host", "/healthz").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(
        crate::support::get(od.port, "a", "/x").unwrap().text(),
        "app\n"
    );
    let after_request = Instant::now();
    while od.is_running() && started.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = crate::support::get(od.port, "a", "/healthz") {
            assert_eq!(r.status, 200);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(od.wait_exit(Duration::from_secs(5)), 0);
    let lived = after_request.elapsed();
    assert!(
        lived < Duration::from_secs(3),
        "probes kept the launcher up {lived:?} after the last real request"
    );
}
