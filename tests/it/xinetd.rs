//! Under a real xinetd (`wait = yes`): ondemand serves on the inherited listening socket, exits when
//! idle, and xinetd re-arms the socket — and no request is lost at that boundary, whether it arrives
//! just before, exactly at, or just after the idle deadline, on a new or a kept-alive connection.
//!
//! Every wait here is on a real signal (svc.log START/EXIT lines, a pid leaving /proc, a response);
//! the only sleeps are the deliberate gaps placed around `idle_timeout`.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::xinetd::{current_uid, pid_alive, Exited, Xinetd};
use crate::support::{bin, closed_by_peer, exchange, get, read_response, write_file, Response};

/// The idle timeout the cycling tests use: short enough for many cycles in a few seconds, long
/// enough that a start-up (a few ms) is small beside it.
const IDLE: Duration = Duration::from_millis(400);

/// Generous bound for things that take milliseconds when all is well (a start, an idle exit).
const SLOW: Duration = Duration::from_secs(10);
/// The keep-alive request of the re-arm tests.
const HELLO_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: hello.test\r\n\r\n";

fn config(idle_timeout: Duration) -> String {
    format!(
        r#"[server]
idle_timeout = "{}ms"
drain_timeout = "2s"
log = "{{dir}}/ondemand.log"
log_level = "debug"

[[app]]
name = "hello"
path = "/"
respond = {{ status = 200, body = "hello\n", content_type = "text/plain" }}
"#,
        idle_timeout.as_millis()
    )
}

fn assert_hello(resp: &Response, what: &str) {
    assert_eq!(resp.status, 200, "{what}: status of {resp:?}");
    assert_eq!(resp.text(), "hello\n", "{what}: body of {resp:?}");
}

/// Every server xinetd started has exited with status 0 and no process naming the test directory
/// remains.
fn assert_all_exited_cleanly(x: &Xinetd) {
    x.wait_all_servers_exited(SLOW);
    let bad: Vec<_> = x
        .exits()
        .into_iter()
        .filter(|(_, how)| *how != Exited::Code(0))
        .collect();
    assert!(
        bad.is_empty(),
        "servers that did not exit 0: {bad:?}\n{}",
        x.report()
    );
    let left = x.live_processes();
    assert!(
        left.is_empty(),
        "processes still running: {left:?}\n{}",
        x.report()
    );
}

/// A broken config must not turn into a restart loop (xinetd closes the socket for 10 s after 50
/// starts a second and drops the queued clients): one instance starts, answers 503 with
/// Retry-After and logs the located error. (It exits when idle after the default idle_timeout,
/// 30 s, since the file's own settings are unreadable; the test stops it with SIGTERM instead.)
#[test]
fn bad_config_answers_503_from_one_instance_instead_of_a_restart_loop() {
    let x = Xinetd::start(
        "[server]\nidle_timeout = \"400ms\"\nlog = \"{dir}/ondemand.log\"\nbogus = 1\n",
    );
    for i in 0..5 {
        let r =
            get(x.port(), "h", "/").unwrap_or_else(|e| panic!("request {i}: {e}\n{}", x.report()));
        assert_eq!(r.status, 503, "request {i}: {r:?}");
        assert_eq!(r.header("retry-after"), Some("10"));
        assert!(
            r.text().contains("configuration is invalid"),
            "{}",
            r.text()
        );
    }
    let pid = x.wait_started(1, SLOW)[0];
    assert_eq!(
        x.started_pids().len(),
        1,
        "one instance served all five requests\n{}",
        x.report()
    );
    let log = x.file("ondemand.log");
    assert!(
        log.contains("ondemand.toml:6:1: unknown field `bogus`"), // 2 lines added by the harness
        "{log}"
    );
    assert!(log.contains("Answering every request with 503"), "{log}");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(x.wait_exited(pid, SLOW), Exited::Code(0), "{}", x.report());
    assert!(!x.xinetd_log().contains("Deactivating"), "{}", x.report());
}

#[test]
fn request_is_answered_then_idle_exit_and_next_request_starts_a_new_server() {
    let x = Xinetd::start(&config(IDLE));

    let resp = get(x.port(), "hello.test", "/").expect("first request");
    let answered = Instant::now();
    assert_hello(&resp, "first request");
    let first = x.wait_started(1, SLOW)[0];

    // The server leaves by itself, not before idle_timeout has passed since the last response.
    x.wait_log("first server to leave /proc", SLOW, |_| !pid_alive(first));
    let idle_for = answered.elapsed();
    assert!(
        idle_for >= IDLE.mul_f32(0.9),
        "server {first} exited {idle_for:?} after the response, before idle_timeout {IDLE:?}\n{}",
        x.report()
    );
    assert_eq!(
        x.wait_exited(first, SLOW),
        Exited::Code(0),
        "{}",
        x.report()
    );
    let log = x.file("ondemand.log");
    assert!(
        log.contains("ready"),
        "ondemand.log has no \"ready\" line\n{}",
        x.report()
    );
    assert!(
        log.contains("idle"),
        "ondemand.log has no \"idle\" line\n{}",
        x.report()
    );

    // xinetd has re-armed the socket: the next request starts a new server and is answered.
    let resp = get(x.port(), "hello.test", "/").expect("second request");
    assert_hello(&resp, "second request");
    let pids = x.wait_started(2, SLOW);
    assert_ne!(pids[1], first, "second request served by a new pid");

    assert_all_exited_cleanly(&x);
    assert_eq!(
        x.started_pids().len(),
        2,
        "exactly two launches\n{}",
        x.report()
    );
}

/// The file shipped as xinetd/ondemand, with only what a test must change rewritten: the port (a
/// free one), the user (ours; the `group` line dropped), the binary and config paths, and a
/// loopback `bind` of the family its `flags` choose.
#[test]
fn shipped_drop_in_works_with_this_xinetd() {
    let shipped = include_str!("../../xinetd/ondemand");
    let value = |key: &str| -> String {
        let line = shipped
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("xinetd/ondemand has no `{key}` line"));
        line.split_once('=')
            .expect("key = value")
            .1
            .trim()
            .to_string()
    };
    // What users install: the contract of the issue.
    assert!(shipped.contains("service ondemand\n"), "service name");
    for (key, want) in [
        ("disable", "no"),
        ("type", "UNLISTED"),
        ("port", "80"),
        ("socket_type", "stream"),
        ("protocol", "tcp"),
        ("wait", "yes"),
        ("user", "ondemand"),
        ("server", "/usr/bin/ondemand"),
        ("server_args", "serve --config /etc/ondemand/ondemand.toml"),
    ] {
        assert_eq!(value(key), want, "xinetd/ondemand: {key}");
    }
    assert!(
        !shipped.lines().any(|l| matches!(
            l.split_whitespace().next(),
            Some("only_from" | "no_access" | "log_type")
        )),
        "only_from/no_access break wait=yes on this xinetd; log_type belongs to xinetd.conf"
    );
    let ipv6 = value("flags").split_whitespace().any(|f| f == "IPv6");
    let loopback = if ipv6 { "::1" } else { "127.0.0.1" };

    let x = Xinetd::start_service(|dir, port| {
        let config = config(IDLE).replace("{dir}", &dir.display().to_string());
        let config_path = write_file(dir, "ondemand.toml", &config);
        let mut out = String::new();
        for line in shipped.lines() {
            let key = line.split_whitespace().next().unwrap_or("");
            let line = match key {
                "port" => format!("\tport = {port}\n\tbind = {loopback}"),
                "user" => format!("\tuser = {}", current_uid()),
                "group" => continue,
                "server" => format!("\tserver = {}", bin().display()),
                "server_args" => {
                    format!("\tserver_args = serve --config {}", config_path.display())
                }
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    let ask = || -> Response {
        let mut s = TcpStream::connect((loopback, x.port()))
            .unwrap_or_else(|e| panic!("connect {loopback} {}: {e}\n{}", x.port(), x.report()));
        s.set_read_timeout(Some(SLOW)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: hello.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_response(&mut s).unwrap_or_else(|e| panic!("response: {e}\n{}", x.report()))
    };
    assert_hello(&ask(), "request through the shipped drop-in");
    let first = x.wait_started(1, SLOW)[0];
    assert_eq!(
        x.wait_exited(first, SLOW),
        Exited::Code(0),
        "{}",
        x.report()
    );
    assert_hello(&ask(), "request after the idle exit");
    x.wait_started(2, SLOW);
    assert_all_exited_cleanly(&x);
}

// ---------------------------------------------------------------------------------------------
// Many idle-exit / re-arm cycles under concurrent clients.

/// What one round of the cycling test does: how long after the previous round's last response the
/// clients fire, relative to `idle_timeout`.
#[derive(Clone, Copy, Debug)]
enum Gap {
    /// `idle_timeout + ms` after the previous round (negative: just before the idle deadline).
    AroundIdle(i64),
    /// A plain pause well inside the idle window (the server stays up).
    Within(u64),
}

impl Gap {
    fn duration(self) -> Duration {
        match self {
            Gap::AroundIdle(ms) => {
                Duration::from_millis((IDLE.as_millis() as i64 + ms).max(0) as u64)
            }
            Gap::Within(ms) => Duration::from_millis(ms),
        }
    }
}

/// The gaps of one sweep: dense around the idle deadline (where an exiting server and a new
/// connection race), a few well past it (a sure cycle), a few well inside it (no cycle).
const SWEEP: &[Gap] = &[
    Gap::AroundIdle(-60),
    Gap::AroundIdle(-25),
    Gap::AroundIdle(-10),
    Gap::AroundIdle(-5),
    Gap::AroundIdle(-2),
    Gap::AroundIdle(-1),
    Gap::AroundIdle(0),
    Gap::AroundIdle(1),
    Gap::AroundIdle(2),
    Gap::AroundIdle(5),
    Gap::AroundIdle(10),
    Gap::AroundIdle(25),
    Gap::AroundIdle(60),
    Gap::AroundIdle(200),
    Gap::Within(0),
    Gap::Within(100),
];

/// Sweeps per run; ONDEMAND_TEST_SWEEPS raises it for a soak run (each sweep is about 6.5 s).
fn sweeps() -> usize {
    std::env::var("ONDEMAND_TEST_SWEEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}
/// At least this many server instances (idle exits + re-arms) must have run.
const MIN_CYCLES: usize = 30;

/// A tiny deterministic PRNG (xorshift), so a failing order can be replayed from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients saw, shared between their threads.
#[derive(Default)]
struct Tally {
    /// Requests that got their full response (a keep-alive retry counts once).
    answered: usize,
    /// Of those, on a fresh connection (raw or curl) / on a reused keep-alive connection.
    fresh: usize,
    reused: usize,
    /// Keep-alive connections found closed by the server before reuse (checked before sending,
    /// as curl and browsers do); the request then went on a new connection.
    closed_before_reuse: usize,
    /// Reused connections closed after the request was sent but before any response byte; the
    /// request was retried once on a new connection, as curl and browsers do.
    retried: Vec<String>,
    /// Everything else: a lost, cut or wrong response. Must stay empty.
    failures: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Client {
    /// A new connection per request, `Connection: close`, raw HTTP.
    Fresh,
    /// One connection kept across requests and rounds (HTTP/1.1 keep-alive), raw HTTP.
    KeepAlive,
    /// One curl run fetching the URL twice (the second reuses curl's connection).
    Curl,
}

/// The plan for the next round, set by the coordinator before it releases the clients.
#[derive(Clone, Copy)]
struct Round {
    index: usize,
    gap: Gap,
    stop: bool,
}

#[test]
fn many_idle_cycles_with_concurrent_clients_lose_no_request() {
    // A client thread must never panic (the others would wait at the barrier for ever).
    Command::new("curl")
        .arg("--version")
        .output()
        .expect("these tests need curl: apt-get install curl");
    let started = Instant::now();
    let x = Xinetd::start(&config(IDLE));
    let port = x.port();

    let seed = seed();
    let mut rng = Rng(seed);
    let mut plan: Vec<Gap> = Vec::new();
    for _ in 0..sweeps() {
        let mut sweep = SWEEP.to_vec();
        for i in (1..sweep.len()).rev() {
            sweep.swap(i, rng.below(i as u64 + 1) as usize);
        }
        plan.extend(sweep);
    }

    let clients = [
        Client::Fresh,
        Client::Fresh,
        Client::KeepAlive,
        Client::KeepAlive,
        Client::Curl,
    ];
    let tally = Arc::new(Mutex::new(Tally::default()));
    let round = Arc::new(Mutex::new(Round {
        index: 0,
        gap: Gap::Within(0),
        stop: false,
    }));
    let barrier = Arc::new(Barrier::new(clients.len() + 1));

    let threads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(n, &kind)| {
            let (tally, round, barrier) = (tally.clone(), round.clone(), barrier.clone());
            // Client 0 fires at once; the others within a few ms of it, so the requests of a
            // round straddle the idle deadline too.
            let mut jitter = Rng(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                loop {
                    barrier.wait(); // released by the coordinator
                    let r = *round.lock().unwrap();
                    if r.stop {
                        break;
                    }
                    if n > 0 {
                        std::thread::sleep(Duration::from_micros(jitter.below(6000)));
                    }
                    let what = format!("round {} ({:?}) client {n} {kind:?}", r.index, r.gap);
                    match kind {
                        Client::Fresh => fresh_request(port, &what, &tally),
                        Client::KeepAlive => keep_alive_request(port, &mut conn, &what, &tally),
                        Client::Curl => curl_requests(port, &what, &tally),
                    }
                    barrier.wait(); // round done
                }
            })
        })
        .collect();

    // The coordinator: wait the round's gap after the previous round's last response, release
    // the clients, wait for all of them to finish. Then top up with sure cycles if the sweep
    // gave fewer than MIN_CYCLES launches (it should not need to).
    let mut top_up = 0;
    let mut index = 0;
    loop {
        let gap = if index < plan.len() {
            Some(plan[index])
        } else if x.started_pids().len() < MIN_CYCLES && top_up < 2 * MIN_CYCLES {
            top_up += 1;
            Some(Gap::AroundIdle(300))
        } else {
            None
        };
        let Some(gap) = gap else { break };
        std::thread::sleep(gap.duration());
        *round.lock().unwrap() = Round {
            index,
            gap,
            stop: false,
        };
        barrier.wait(); // release
        barrier.wait(); // done
        index += 1;
    }
    round.lock().unwrap().stop = true;
    barrier.wait();
    for t in threads {
        t.join().expect("client thread");
    }

    let tally = tally.lock().unwrap();
    let launches = x.started_pids().len();
    assert_all_exited_cleanly(&x);
    let cps_trips = x.xinetd_log().matches("Deactivating service").count();
    eprintln!(
        "xinetd cycling (seed {seed:#x}): {index} rounds ({top_up} top-up), {launches} server \
         launches, {} requests answered ({} on new connections, {} on reused keep-alive \
         connections), {} keep-alive connections found closed before reuse, {} retried after the \
         server closed a reused connection before any response byte, {} failures, {:.1?}",
        tally.answered,
        tally.fresh,
        tally.reused,
        tally.closed_before_reuse,
        tally.retried.len(),
        tally.failures.len(),
        started.elapsed()
    );
    for r in &tally.retried {
        eprintln!("  retried: {r}");
    }
    assert!(
        tally.failures.is_empty(),
        "{} request(s) lost or cut:\n  {}\n{}",
        tally.failures.len(),
        tally.failures.join("\n  "),
        x.report()
    );
    assert_eq!(
        cps_trips,
        0,
        "xinetd's cps limit closed the socket\n{}",
        x.report()
    );
    assert!(
        launches >= MIN_CYCLES,
        "only {launches} server launches (idle exits + re-arms), want >= {MIN_CYCLES}\n{}",
        x.report()
    );
    let expected = index * (clients.len() + 1); // curl fetches twice
    assert_eq!(
        tally.answered, expected,
        "every request answered exactly once"
    );
}

/// The order of the gaps and the clients' jitter: fixed, so runs are comparable, unless
/// ONDEMAND_TEST_SEED (hex) replays another one.
fn seed() -> u64 {
    std::env::var("ONDEMAND_TEST_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .filter(|&s| s != 0)
        .unwrap_or(0x0dd5_eed1_d1e5_eed5)
}

/// One GET on a new connection; any error is a failure.
fn fresh_request(port: u16, what: &str, tally: &Mutex<Tally>) {
    let t = Instant::now();
    match get(port, "hello.test", "/") {
        Ok(resp) if resp.status == 200 && resp.text() == "hello\n" => {
            let mut tally = tally.lock().unwrap();
            tally.answered += 1;
            tally.fresh += 1;
        }
        Ok(resp) => tally
            .lock()
            .unwrap()
            .failures
            .push(format!("{what}: wrong response {resp:?}")),
        Err(e) => tally.lock().unwrap().failures.push(format!(
            "{what}: new connection: {e} after {:?}",
            t.elapsed()
        )),
    }
}

/// One GET on the kept-alive connection `conn`, like a browser or curl: a connection the server
/// has already closed is replaced before sending; if the server closes a reused connection after
/// the request went out but before ANY response byte, the request is retried once on a new
/// connection. A new connection gets no second chance, and neither does a cut response.
fn keep_alive_request(port: u16, conn: &mut Option<TcpStream>, what: &str, tally: &Mutex<Tally>) {
    if conn.as_ref().is_some_and(closed_by_peer) {
        tally.lock().unwrap().closed_before_reuse += 1;
        *conn = None;
    }
    let reused = conn.is_some();
    let t = Instant::now();
    let first = exchange(port, conn, HELLO_GET, SLOW);
    let result = match first {
        Err((e, 0)) if reused => {
            tally
                .lock()
                .unwrap()
                .retried
                .push(format!("{what}: {e} after {:?}", t.elapsed()));
            *conn = None;
            exchange(port, conn, HELLO_GET, SLOW).map(|r| (r, false))
        }
        other => other.map(|r| (r, reused)),
    };
    match result {
        Ok((resp, on_reused)) if resp.status == 200 && resp.text() == "hello\n" => {
            if resp
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                *conn = None;
            }
            let mut tally = tally.lock().unwrap();
            tally.answered += 1;
            if on_reused {
                tally.reused += 1;
            } else {
                tally.fresh += 1;
            }
        }
        Ok((resp, _)) => {
            *conn = None;
            tally
                .lock()
                .unwrap()
                .failures
                .push(format!("{what}: wrong response {resp:?}"));
        }
        Err((e, bytes)) => {
            *conn = None;
            tally.lock().unwrap().failures.push(format!(
                "{what}: keep-alive ({}): {e} after {bytes} response bytes, {:?}",
                if reused {
                    "reused, then retried"
                } else {
                    "new connection"
                },
                t.elapsed()
            ));
        }
    }
}

/// curl fetching the URL twice in one run (the second transfer reuses the connection, and curl
/// itself retries a reused connection that died before any byte). Both must answer.
fn curl_requests(port: u16, what: &str, tally: &Mutex<Tally>) {
    let url = format!("http://127.0.0.1:{port}/");
    let t = Instant::now();
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "-H",
            "Host: hello.test",
        ])
        .args(["--write-out", "%{http_code} %{num_connects}\\n", &url, &url])
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let failure = format!("{what}: cannot run curl: {e}");
            tally.lock().unwrap().failures.push(failure);
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // Each transfer prints the body "hello" then "200 <new connections>".
    let ok = out.status.success()
        && lines.len() == 4
        && lines[0] == "hello"
        && lines[1].starts_with("200 ")
        && lines[2] == "hello"
        && lines[3].starts_with("200 ");
    let mut tally = tally.lock().unwrap();
    if ok {
        tally.answered += 2;
        tally.fresh += 1;
        // num_connects of the second transfer: 0 = reused the first connection.
        if lines[3] == "200 0" {
            tally.reused += 1;
        } else {
            tally.fresh += 1;
        }
    } else {
        tally.failures.push(format!(
            "{what}: curl {} after {:?}: stdout {stdout:?} stderr {:?}",
            out.status,
            t.elapsed(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// The harness itself, against a stand-in server (python3), so a harness bug is not mistaken for
// an ondemand bug. Run with: cargo test --release --test it xinetd -- --ignored

/// Accepts on the listening socket xinetd passes on fd 0, answers each request with "hello", and
/// exits 0 after the number of seconds in IDLE_FILE without a connection.
const STAND_IN: &str = r#"#!/usr/bin/env python3
import os, select, socket, sys
ls = socket.socket(fileno=os.dup(0))
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
idle = float(open(sys.argv[1]).read())
while select.select([ls], [], [], idle)[0]:
    c, _ = ls.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
    c.close()
"#;

#[test]
fn harness_self_check_with_stand_in_server() {
    use crate::support::xinetd::service_block;
    use std::os::unix::fs::PermissionsExt;

    let x = Xinetd::start_service(|dir, port| {
        let script = write_file(dir, "stand-in.py", STAND_IN);
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let idle = write_file(dir, "idle", "0.3");
        service_block(&script, &idle.display().to_string(), port)
    });
    assert!(
        x.started_pids().is_empty(),
        "no launch before the first connection"
    );

    // Launch, answer, idle exit 0.
    assert_hello(&get(x.port(), "h", "/").unwrap(), "stand-in");
    let p1 = x.wait_started(1, SLOW)[0];
    assert_eq!(x.wait_exited(p1, SLOW), Exited::Code(0));

    // A server killed by a signal is logged as such.
    write_file(x.dir(), "idle", "3600");
    assert_hello(&get(x.port(), "h", "/").unwrap(), "stand-in 2");
    let p2 = x.wait_started(2, SLOW)[1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p2),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(x.wait_exited(p2, SLOW), Exited::Signal(9), "{}", x.report());

    // A server still running at teardown is killed by Drop.
    assert_hello(&get(x.port(), "h", "/").unwrap(), "stand-in 3");
    let p3 = x.wait_started(3, SLOW)[2];
    assert_eq!(x.running_pids(), vec![p3]);
    assert_eq!(x.live_processes().len(), 1, "{:?}", x.live_processes());
    let dir = x.dir().to_path_buf();
    drop(x);
    assert!(!pid_alive(p3), "Drop left server {p3} running");
    assert!(!dir.exists(), "Drop removed the directory");
}

/// xinetd puts the listening socket on fds 0, 1 and 2. ondemand must move it to a close-on-exec,
/// non-blocking fd and leave /dev/null on 0-2 (so nothing it prints reaches the socket, and no
/// child process inherits the socket).
#[test]
fn the_listening_socket_leaves_fds_0_to_2_and_is_cloexec_and_nonblocking() {
    let x = Xinetd::start(&config(Duration::from_secs(30)));
    assert_hello(&get(x.port(), "h", "/").unwrap(), "first request");
    let pid = x.wait_started(1, SLOW)[0];
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"), "fd {fd}");
    }
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("socket:") {
            let fd = entry.file_name().to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            sockets.push((fd, flags));
        }
    }
    assert!(!sockets.is_empty(), "no socket fd in ondemand");
    for (fd, flags) in sockets {
        assert_ne!(
            flags & nix::libc::O_CLOEXEC as u32,
            0,
            "fd {fd} lacks O_CLOEXEC ({flags:o})"
        );
        assert_ne!(
            flags & nix::libc::O_NONBLOCK as u32,
            0,
            "fd {fd} lacks O_NONBLOCK ({flags:o})"
        );
    }
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(x.wait_exited(pid, SLOW), Exited::Code(0));
}
