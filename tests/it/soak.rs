//! The re-arm soak (issue 9): at least 5,000 requests under a real xinetd and under a real systemd,
//! from several clients at once, in bursts separated by gaps drawn from 0.5, 0.9, 1, 1 (exactly
//! `idle_timeout`), 1.1 and 2 times `idle_timeout`, to a `respond` app and to a `run` app whose own
//! `idle_timeout` is half the launcher's (so the same gaps straddle the app's idle stop too). Every
//! request must be answered, and once the last launcher has exited no launcher or app process may
//! be left.
//!
//! The clients, each a thread that fires a burst of `BURST` requests per round:
//! - keep-alive clients: one raw HTTP/1.1 connection reused across requests, rounds and idle
//!   boundaries;
//! - fresh clients: a new connection per request (`Connection: close`).
//!
//! The keep-alive race, and what counts as a failure. A server that closes an idle keep-alive
//! connection (at its idle exit, or at `keepalive_timeout`) can never know that a request is
//! already on its way on it; RFC 9112 §9.3.1 lets a client retry an idempotent request when the
//! connection closes before any of the response arrived. ondemand never closes a connection
//! with a request in service (the request completes, with `Connection: close`), and a request it
//! did not read was not processed. So the keep-alive clients do what curl and browsers do:
//! - before reusing a connection they check (non-blocking peek) whether the server has closed
//!   it, and if so use a new one ("closed before reuse", not a failure: no request was sent);
//! - if a reused connection is closed after the request went out but before ANY byte of the
//!   response, the request is retried once on a new connection ("retried"); the retry must
//!   succeed.
//!
//! Everything else is a failure: an error on a new connection, a cut or wrong response, an error
//! after some of the response arrived, a failed retry. Under xinetd the access log is counted
//! too: as many requests served as answers received, so no request was read by ondemand and
//! then dropped (a retried one included: a retry is only harmless if the first try never
//! reached ondemand).

use std::net::TcpStream;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::support::nspawn::{Container, PAYLOAD};
use crate::support::upstream::{app_path, PYTHON};
use crate::support::xinetd::{Exited, Xinetd};
use crate::support::{closed_by_peer, exchange, free_port, Response};

/// The launcher's idle_timeout: short, so that ~100 gaps around it fit in half a minute.
const IDLE: Duration = Duration::from_millis(250);
/// The run app's own idle_timeout: half the launcher's, so the 0.5 gaps hit it exactly.
const APP_IDLE: Duration = Duration::from_millis(125);
/// The gaps between rounds, in multiples of IDLE (1.0 twice: "around" and "exactly at" it).
const GAPS: [f64; 6] = [0.5, 0.9, 1.0, 1.0, 1.1, 2.0];
/// Requests per client per round, sent back to back.
const BURST: usize = 8;
/// The issue's floor; rounds are added until the plan reaches it.
const MIN_REQUESTS: usize = 5000;
/// Bound for anything that takes milliseconds when all is well.
const SLOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
enum App {
    /// The `respond` app: Host hello.test, body "hello\n".
    Respond,
    /// The `run` app (tests/apps/upstream.py): Host wiki.test, GET /pid answers its pid in JSON.
    Run,
}

#[derive(Clone, Copy, Debug)]
struct Client {
    app: App,
    keep_alive: bool,
}

const CLIENTS: [Client; 6] = [
    Client {
        app: App::Respond,
        keep_alive: true,
    },
    Client {
        app: App::Respond,
        keep_alive: true,
    },
    Client {
        app: App::Respond,
        keep_alive: false,
    },
    Client {
        app: App::Run,
        keep_alive: true,
    },
    Client {
        app: App::Run,
        keep_alive: true,
    },
    Client {
        app: App::Run,
        keep_alive: false,
    },
];

/// The launcher's configuration: both apps. `server_extra` goes into `[server]`; `upstream` is
/// the path of upstream.py as the launcher sees it; `marker` names the app process, so it can be
/// found in /proc afterwards.
fn config(server_extra: &str, upstream: &str, marker: &str) -> String {
    format!(
        r#"[server]
idle_timeout = "{idle}ms"
drain_timeout = "5s"
{server_extra}

[[app]]
name = "hello"
host = "hello.test"
respond = {{ status = 200, body = "hello\n", content_type = "text/plain" }}

[[app]]
name = "wiki"
host = "wiki.test"
[app.run]
command = ["{PYTHON}", "{upstream}", "--fd", "--name", "{marker}"]
idle_timeout = "{app_idle}ms"
stop_timeout = "5s"
"#,
        idle = IDLE.as_millis(),
        app_idle = APP_IDLE.as_millis(),
    )
}

/// A tiny deterministic PRNG (xorshift), so a failing order can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the clients saw.
#[derive(Default, Debug)]
struct Tally {
    /// Requests answered correctly (a retried one counts once).
    answered: usize,
    /// Of those, on a reused keep-alive connection.
    reused: usize,
    /// Keep-alive connections found closed by the server before reuse (no request was sent on
    /// them).
    closed_before_reuse: usize,
    /// Requests retried once after a reused connection closed before any response byte.
    retried: Vec<String>,
    /// pids the run app answered from (one per app start).
    app_pids: std::collections::BTreeSet<u64>,
    /// Lost, cut or wrong responses. Must stay empty.
    failures: Vec<String>,
}

/// What one soak run did.
struct Soak {
    tally: Tally,
    rounds: usize,
    wall: Duration,
}

/// Runs the whole schedule against 127.0.0.1:`port`; returns what the clients saw.
fn soak(port: u16) -> Soak {
    let per_round = CLIENTS.len() * BURST;
    let rounds = MIN_REQUESTS.div_ceil(per_round);
    let mut rng = Rng(0x5eed_50a6_0dd5_eed5);
    let mut plan = Vec::with_capacity(rounds);
    while plan.len() < rounds {
        let mut gaps = GAPS;
        for i in (1..gaps.len()).rev() {
            gaps.swap(i, rng.below(i as u64 + 1) as usize);
        }
        plan.extend(gaps);
    }
    plan.truncate(rounds);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let round = Arc::new(Mutex::new((0usize, 0.0f64, false)));
    let barrier = Arc::new(Barrier::new(CLIENTS.len() + 1));
    let started = Instant::now();
    let threads: Vec<_> = CLIENTS
        .iter()
        .enumerate()
        .map(|(n, &client)| {
            let (tally, round, barrier) = (tally.clone(), round.clone(), barrier.clone());
            let mut jitter = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
            std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                loop {
                    barrier.wait(); // released by the coordinator
                    let (index, gap, stop) = *round.lock().unwrap();
                    if stop {
                        break;
                    }
                    // The clients of a round start within a few ms of each other, so their
                    // first requests straddle the idle deadline together.
                    std::thread::sleep(Duration::from_micros(jitter.below(4000)));
                    for i in 0..BURST {
                        let what = format!("round {index} (gap {gap}T) client {n} {client:?} #{i}");
                        one_request(port, client, &mut conn, &what, &tally);
                    }
                    barrier.wait(); // round done
                }
            })
        })
        .collect();
    for (index, &gap) in plan.iter().enumerate() {
        // The gap runs from the previous round's last response.
        std::thread::sleep(IDLE.mul_f64(gap));
        *round.lock().unwrap() = (index, gap, false);
        barrier.wait();
        barrier.wait();
    }
    round.lock().unwrap().2 = true;
    barrier.wait();
    for t in threads {
        t.join().expect("client thread");
    }
    let wall = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    Soak {
        tally,
        rounds,
        wall,
    }
}

fn request_bytes(app: App, keep_alive: bool) -> String {
    let (host, path) = match app {
        App::Respond => ("hello.test", "/"),
        App::Run => ("wiki.test", "/pid"),
    };
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n")
}

/// Checks a response's status and body; returns the run app's pid for a run app response.
fn check(app: App, resp: &Response) -> Result<Option<u64>, String> {
    if resp.status != 200 {
        return Err(format!("status {}: {}", resp.status, resp.text()));
    }
    match app {
        App::Respond if resp.text() == "hello\n" => Ok(None),
        App::Respond => Err(format!("body {:?}", resp.text())),
        App::Run => serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["pid"].as_u64())
            .map(Some)
            .ok_or_else(|| format!("body {:?}", resp.text())),
    }
}

/// One request by `client` (on `conn` if it keeps connections alive), counted in `tally`.
fn one_request(
    port: u16,
    client: Client,
    conn: &mut Option<TcpStream>,
    what: &str,
    tally: &Mutex<Tally>,
) {
    let t = Instant::now();
    if !client.keep_alive {
        let mut fresh = None;
        let result = exchange(
            port,
            &mut fresh,
            request_bytes(client.app, false).as_bytes(),
            SLOW,
        );
        record(client.app, result.map(|r| (r, false)), what, t, tally);
        return;
    }
    if conn.as_ref().is_some_and(closed_by_peer) {
        tally.lock().unwrap().closed_before_reuse += 1;
        *conn = None;
    }
    let reused = conn.is_some();
    let request = request_bytes(client.app, true);
    let result = match exchange(port, conn, request.as_bytes(), SLOW) {
        Err((e, 0)) if reused => {
            tally
                .lock()
                .unwrap()
                .retried
                .push(format!("{what}: {e} after {:?}", t.elapsed()));
            *conn = None;
            exchange(port, conn, request.as_bytes(), SLOW).map(|r| (r, false))
        }
        other => other.map(|r| (r, reused)),
    };
    match &result {
        Ok((resp, _))
            if !resp
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")) => {}
        _ => *conn = None,
    }
    record(client.app, result, what, t, tally);
}

fn record(
    app: App,
    result: Result<(Response, bool), (std::io::Error, usize)>,
    what: &str,
    t: Instant,
    tally: &Mutex<Tally>,
) {
    let mut tally = tally.lock().unwrap();
    match result {
        Ok((resp, reused)) => match check(app, &resp) {
            Ok(pid) => {
                tally.answered += 1;
                tally.reused += usize::from(reused);
                tally.app_pids.extend(pid);
            }
            Err(e) => tally.failures.push(format!("{what}: wrong response: {e}")),
        },
        Err((e, bytes)) => tally.failures.push(format!(
            "{what}: {e} after {bytes} response bytes, {:?}",
            t.elapsed()
        )),
    }
}

/// The soak's report line and its assertions on what the clients saw.
fn report_and_check(supervisor: &str, soak: &Soak, activations: usize, dump: impl Fn() -> String) {
    let t = &soak.tally;
    eprintln!(
        "soak under {supervisor}: {} requests answered in {} rounds ({} on reused keep-alive \
         connections), {activations} launcher activations, {} run-app starts, {} keep-alive \
         connections found closed before reuse, {} retried (closed before any response byte), \
         {} failures, {:.1?}",
        t.answered,
        soak.rounds,
        t.reused,
        t.app_pids.len(),
        t.closed_before_reuse,
        t.retried.len(),
        t.failures.len(),
        soak.wall,
    );
    for r in &t.retried {
        eprintln!("  retried: {r}");
    }
    assert!(
        t.failures.is_empty(),
        "{} request(s) failed:\n  {}\n{}",
        t.failures.len(),
        t.failures.join("\n  "),
        dump()
    );
    assert_eq!(t.answered, soak.rounds * CLIENTS.len() * BURST);
    assert!(t.answered >= MIN_REQUESTS);
    // The gaps of 2T always cross the idle deadline: a sixth of the rounds at least.
    assert!(
        activations >= soak.rounds / 6,
        "only {activations} activations in {} rounds\n{}",
        soak.rounds,
        dump()
    );
    assert!(
        t.app_pids.len() >= soak.rounds / 6,
        "only {} run-app starts",
        t.app_pids.len()
    );
}

#[test]
fn soak_under_xinetd_loses_no_request_and_leaves_no_process() {
    let marker = format!("soak-xinetd-{}", std::process::id());
    // upstream.py is copied into the harness's directory, so the app's command line names it
    // and the harness's process scan finds the app processes too.
    let x = Xinetd::start(&config(
        "runtime_dir = \"{dir}/run\"\nlog = \"{dir}/ondemand.log\"\naccess_log = \"common\"",
        "{dir}/upstream.py",
        &marker,
    ));
    std::fs::copy(app_path("upstream.py"), x.dir().join("upstream.py")).expect("copy upstream.py");

    let soak = soak(x.port());
    x.wait_all_servers_exited(SLOW);
    let activations = x.started_pids().len();
    report_and_check("xinetd", &soak, activations, || x.report());

    // The server's side of the count: the access log has one line per request ondemand read
    // and answered. As many as the clients received means that no request was read and then
    // dropped — in particular, none of the retried ones had reached ondemand.
    let log = x.file("ondemand.log");
    let served = log
        .lines()
        .filter(|l| l.contains(" host=hello.test ") || l.contains(" host=wiki.test "))
        .count();
    assert_eq!(
        served, soak.tally.answered,
        "requests ondemand served (access log) vs answers the clients got"
    );
    let incomplete = log.lines().filter(|l| l.ends_with(" incomplete")).count();
    assert_eq!(incomplete, 0, "responses not sent completely");

    let unclean: Vec<_> = x
        .exits()
        .into_iter()
        .filter(|(_, how)| *how != Exited::Code(0))
        .collect();
    assert!(
        unclean.is_empty(),
        "launchers that did not exit 0: {unclean:?}\n{}",
        x.report()
    );
    // Every app process was stopped by its launcher: nothing whose command line names the
    // directory (launcher or app) is alive, and no app process at all carries the marker.
    let left = x.live_processes();
    assert!(left.is_empty(), "left running: {left:?}\n{}", x.report());
    let marked = processes_with(&marker);
    assert!(marked.is_empty(), "app processes left: {marked:?}");
    for pid in &soak.tally.app_pids {
        assert!(
            !crate::support::xinetd::pid_alive(*pid as i32),
            "app pid {pid} still alive"
        );
    }
}

#[test]
fn soak_under_systemd_loses_no_request_and_leaves_no_process() {
    let marker = format!("soak-systemd-{}", std::process::id());
    let upstream = format!("{PAYLOAD}/upstream.py");
    let ct = Container::boot(&config("", &upstream, &marker));
    std::fs::copy(app_path("upstream.py"), ct.payload().join("upstream.py"))
        .expect("copy upstream.py");
    let port = free_port();
    ct.install_units(port);
    ct.check(&["systemctl", "enable", "--now", "ondemand.socket"]);

    let soak = soak(port);
    let journal = || {
        String::from_utf8_lossy(
            &ct.exec(&[
                "journalctl",
                "--no-pager",
                "-o",
                "short-precise",
                "-u",
                "ondemand.service",
                "-u",
                "ondemand.socket",
            ])
            .stdout,
        )
        .into_owned()
    };
    // The last launcher exits by itself after IDLE.
    let deadline = Instant::now() + SLOW;
    while ct.is_active("ondemand.service") != "inactive" {
        assert!(
            Instant::now() < deadline,
            "ondemand.service still {} {SLOW:?} after the last request\n{}",
            ct.is_active("ondemand.service"),
            journal()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let systemd_lines = ct.journal("ondemand.service", Some("systemd"));
    let activations = systemd_lines
        .lines()
        .filter(|l| l.starts_with("Started ondemand.service"))
        .count();
    report_and_check("systemd", &soak, activations, journal);

    assert_eq!(ct.is_active("ondemand.socket"), "active", "{}", journal());
    assert_eq!(
        ct.property("ondemand.service", "Result"),
        "success",
        "{}",
        journal()
    );
    // No launcher and no app process anywhere in the container.
    let ps = ct.check(&["ps", "-eo", "pid,args"]);
    let left: Vec<&str> = ps
        .lines()
        .filter(|l| l.contains("ondemand serve") || l.contains(&marker))
        .collect();
    assert!(left.is_empty(), "left running in the container: {left:?}");
    let marked = processes_with(&marker);
    assert!(marked.is_empty(), "app processes left: {marked:?}");
}

/// Live (not zombie) processes on this host whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32)
        .filter(|&pid| crate::support::xinetd::pid_alive(pid))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(needle).then_some((pid, cmd))
        })
        .collect()
}
