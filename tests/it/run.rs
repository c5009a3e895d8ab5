//! The `run` handler with real app processes: gunicorn under socket activation, python's
//! http.server in port mode, and the project's own test app (`tests/apps/upstream.py`) in every
//! role — notify mode, crashing, never ready, hanging, reporting its fds and environment,
//! forking grandchildren. What users count on: one start for concurrent first requests, the
//! supervisor's variables and fds never reaching an app, crashes and crash loops answered with
//! reasons, bulkheads, idle stop, and no process left behind.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::server::Ondemand;
use crate::support::upstream::{app_path, PYTHON};
use crate::support::{get, raw_request, tempdir, wait_until, Response};

fn json(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", resp.status, resp.text()))
}

/// A `[[app]]` with `[app.run]` running tests/apps/upstream.py with `args`, plus `extra` lines;
/// an app under a path gets `strip_prefix`, so the test app sees its own paths.
fn upstream_app(name: &str, path: &str, args: &[&str], extra: &str) -> String {
    let mut command = vec![
        PYTHON.to_string(),
        app_path("upstream.py").display().to_string(),
        "--name".into(),
        name.into(),
    ];
    command.extend(args.iter().map(|a| a.to_string()));
    let strip = if path == "/" {
        ""
    } else {
        "strip_prefix = true\n"
    };
    format!(
        "[[app]]\nname = \"{name}\"\npath = \"{path}\"\n[app.run]\ncommand = {command:?}\n{strip}{extra}\n"
    )
}

/// `[server]` with a private runtime_dir (the apps' sockets) and never-idle unless `idle` is set.
fn server(dir: &tempfile::TempDir, idle: &str) -> String {
    format!(
        "[server]\nidle_timeout = \"{idle}\"\nruntime_dir = \"{}\"\n\n",
        dir.path().display()
    )
}

fn pid_of(resp: &Response) -> u32 {
    json(resp)["pid"].as_u64().unwrap() as u32
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes; /proc/PID/stat field 3 is the state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_gone(pid: u32, what: &str) {
    wait_until(
        &format!("{what} (pid {pid}) to be gone"),
        Duration::from_secs(15),
        || !alive(pid),
    );
}

#[test]
fn concurrent_first_requests_start_one_process_and_all_get_answers() {
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}{}",
        server(&dir, "never"),
        upstream_app("wiki", "/", &["--fd", "--ready-delay", "0.5"], "")
    ));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let port = od.port;
            std::thread::spawn(move || get(port, "wiki.example", "/pid").unwrap())
        })
        .collect();
    let pids: Vec<u32> = threads
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            pid_of(&r)
        })
        .collect();
    assert!(
        pids.iter().all(|&p| p == pids[0]),
        "more than one process: {pids:?}"
    );
    assert_eq!(
        od.log_text().matches("ready in").count(),
        1,
        "{}",
        od.log_text()
    );
}

/// The app's environment and fds: its own socket on fd 3 with LISTEN_PID = its pid, and nothing
/// of the launcher's (listeners, log file) or its supervisor's (LISTEN_*, NOTIFY_SOCKET,
/// WATCHDOG_*). The launcher is started the way systemd starts it, with those variables set.
#[test]
fn the_app_gets_its_socket_and_nothing_of_the_launcher_or_its_supervisor() {
    let dir = tempdir();
    let _notify = UnixDatagram::bind(dir.path().join("notify")).unwrap();
    let notify_path = dir.path().join("notify").display().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let command = format!(
        "ls -l /proc/$$/fd; exec {PYTHON} {} --fd --name envapp",
        app_path("upstream.py").display()
    );
    let od = Ondemand::start_on_with_env(
        &listener,
        &format!(
            "{}[[app]]\nname = \"envapp\"\n[app.run]\ncommand = [\"/bin/sh\", \"-c\", {command:?}]\n",
            server(&dir, "never")
        ),
        &[
            ("NOTIFY_SOCKET", notify_path.as_str()),
            ("WATCHDOG_USEC", "60000000"),
            ("ONDEMAND_LOG", "debug"),
        ],
    );
    let env = json(&get(od.port, "a", "/env").unwrap());
    let pid = json(&get(od.port, "a", "/pid").unwrap())["pid"].clone();
    assert_eq!(env["LISTEN_PID"].as_str(), Some(pid.to_string().as_str()));
    assert_eq!(env["LISTEN_FDS"], "1");
    assert_eq!(env["LISTEN_FDNAMES"], "envapp");
    for leaked in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "ONDEMAND_LOG",
    ] {
        assert!(env.get(leaked).is_none(), "{leaked} reached the app: {env}");
    }
    // What the app's shell had before it became the server (ls lists the shell's fds, not its
    // own; no pipeline, whose pipe the shell would hold for a moment): fds 0-3 only.
    let log = od.log_text();
    let fds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" -> ") && l.contains("stream=\"stdout\""))
        .map(|l| l.split(" -> ").nth(1).unwrap_or(""))
        .collect();
    assert!(fds.len() >= 4, "{log}");
    assert!(fds[0].starts_with("/dev/null"), "{fds:?}");
    assert!(
        fds[1].starts_with("pipe:") && fds[2].starts_with("pipe:"),
        "{fds:?}"
    );
    assert!(fds[3].starts_with("socket:"), "{fds:?}");
    for extra in &fds[4..] {
        assert!(
            extra.starts_with("/proc/"),
            "the app inherited {extra}: {fds:?}"
        );
    }
    // Output lines are logged tagged with the app.
    assert!(log.contains("app=envapp stream=\"stdout\""), "{log}");
}

#[test]
fn gunicorn_socket_activated_with_workers() {
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}[[app]]\nname = \"gunicorn\"\n[app.run]\n\
         command = [\"/usr/bin/gunicorn\", \"--chdir\", \"{}\", \"--workers\", \"2\", \"wsgi_hello:app\"]\n\
         idle_timeout = \"1s\"\n",
        server(&dir, "never"),
        app_path("").display()
    ));
    let r = get(od.port, "a", "/pid").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let first = json(&r);
    let (worker, master) = (
        first["pid"].as_u64().unwrap() as u32,
        first["master"].as_u64().unwrap() as u32,
    );
    // Idle stop: SIGTERM to the group ends gunicorn's master and its workers.
    od.wait_log("stopping: idle for 1s", Duration::from_secs(10));
    wait_gone(master, "gunicorn's master");
    wait_gone(worker, "a gunicorn worker");
    // The next request starts it again.
    let r = get(od.port, "a", "/pid").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(json(&r)["master"].as_u64().unwrap() as u32, master);
}

#[test]
fn port_mode_http_ready_and_notify_ready() {
    let dir = tempdir();
    let site = tempdir();
    std::fs::write(site.path().join("f.txt"), "from http.server\n").unwrap();
    let od = Ondemand::start(&format!(
        "{}[[app]]\nname = \"files\"\npath = \"/files\"\n[app.run]\nlisten = \"port\"\n\
         command = [\"{PYTHON}\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{{port}}\"]\n\
         working_dir = \"{}\"\nstrip_prefix = true\n\n{}{}",
        server(&dir, "never"),
        site.path().display(),
        upstream_app(
            "health",
            "/health",
            &["--port-env", "--ready-delay", "0.3"],
            "listen = \"port\"\nready = \"http:/pid\""
        ),
        upstream_app(
            "notified",
            "/notified",
            &["--port-env", "--notify", "--ready-delay", "0.3"],
            "listen = \"port\"\nready = \"notify\""
        ),
    ));
    let r = get(od.port, "a", "/files/f.txt").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "from http.server\n"));
    for app in ["health", "notified"] {
        let r = get(od.port, "a", &format!("/{app}/pid")).unwrap();
        assert_eq!(r.status, 200, "{app}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some(app));
    }
}

#[test]
fn a_crash_fails_in_flight_requests_and_the_next_request_restarts_it() {
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}{}",
        server(&dir, "never"),
        upstream_app("crashy", "/", &["--fd"], "")
    ));
    let first = pid_of(&get(od.port, "a", "/pid").unwrap());
    let slow = {
        let port = od.port;
        std::thread::spawn(move || get(port, "a", "/slow?ms=3000").unwrap())
    };
    wait_until(
        "the slow request to be in flight",
        Duration::from_secs(5),
        || od.log_text().contains("GET /slow"),
    );
    let r = get(od.port, "a", "/crash").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let in_flight = slow.join().unwrap();
    assert_eq!(in_flight.status, 502, "{}", in_flight.text());
    assert!(
        in_flight.text().contains("app \"crashy\""),
        "{}",
        in_flight.text()
    );
    od.wait_log("crashed: exited with status 1", Duration::from_secs(5));
    let again = get(od.port, "a", "/pid").unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_ne!(pid_of(&again), first);
    wait_gone(first, "the crashed app");
}

#[test]
fn start_failures_name_the_reason_and_a_crash_loop_backs_off() {
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}{}{}{}{}",
        server(&dir, "never"),
        upstream_app(
            "broken",
            "/broken",
            &["--port-env", "--exit-at-start", "3"],
            "listen = \"port\""
        ),
        upstream_app(
            "broken-socket",
            "/broken-socket",
            &["--fd", "--exit-at-start", "3"],
            ""
        ),
        "[[app]]\nname = \"missing\"\npath = \"/missing\"\n[app.run]\ncommand = [\"/no/such/program\"]\n\n",
        upstream_app(
            "sleepy",
            "/sleepy",
            &["--port-env", "--never-ready"],
            "listen = \"port\"\nstart_timeout = \"1s\""
        ),
    ));
    let r = get(od.port, "a", "/broken").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text()
            .contains("app \"broken\": it exited with status 3 before it was ready"),
        "{}",
        r.text()
    );
    // The log has the exit status and the app's last words.
    od.wait_log("fatal: cannot open database", Duration::from_secs(5));
    assert!(od
        .log_text()
        .contains("exited with status 3 before it was ready"));
    assert_eq!(get(od.port, "a", "/broken").unwrap().status, 502);
    // The third failure in a row starts the backoff: 503 with Retry-After, at once.
    let r = get(od.port, "a", "/broken").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let t = Instant::now();
    let r = get(od.port, "a", "/broken").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("keeps failing to start"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "a backoff answer must not wait"
    );
    assert_eq!(od.log_text().matches("failed starts in a row").count(), 1);

    // In socket mode the app is ready at once (its socket already listens), so a start that
    // fails shows as a crash of the request it was given: 502, and the same backoff.
    for crashes in 1..=3 {
        let r = get(od.port, "a", "/broken-socket").unwrap();
        assert_eq!(r.status, 502, "{}", r.text());
        wait_until("the crash to be seen", Duration::from_secs(5), || {
            od.log_text()
                .lines()
                .filter(|l| {
                    l.contains("crashed: exited with status 3") && l.contains("broken-socket")
                })
                .count()
                == crashes
        });
    }
    od.wait_log("quick exits in a row", Duration::from_secs(5));
    let r = get(od.port, "a", "/broken-socket").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());

    let r = get(od.port, "a", "/missing").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text()
            .contains("cannot start /no/such/program: No such file"),
        "{}",
        r.text()
    );

    let t = Instant::now();
    let r = get(od.port, "a", "/sleepy").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("did not become ready within 1s"),
        "{}",
        r.text()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A hanging app fills its own places and queue; the other app answers as usual all along.
#[test]
fn bulkheads_keep_a_hanging_app_from_slowing_the_others() {
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}{}{}",
        server(&dir, "never"),
        upstream_app(
            "stuck",
            "/stuck",
            &["--fd"],
            "max_concurrency = 2\nmax_queue = 1\nqueue_timeout = \"500ms\"\ntimeout = \"3s\""
        ),
        upstream_app("healthy", "/", &["--fd"], ""),
    ));
    assert_eq!(get(od.port, "a", "/pid").unwrap().status, 200);
    let hung: Vec<_> = (0..4)
        .map(|_| {
            let port = od.port;
            std::thread::spawn(move || {
                let t = Instant::now();
                (get(port, "a", "/stuck/hang").unwrap(), t.elapsed())
            })
        })
        .collect();
    // While the stuck app is full, the healthy one answers at once, every time.
    for _ in 0..20 {
        let t = Instant::now();
        let r = get(od.port, "a", "/pid").unwrap();
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    let mut statuses: Vec<u16> = hung
        .into_iter()
        .map(|t| t.join().unwrap().0.status)
        .collect();
    statuses.sort();
    // Two inside time out (504); one waits its queue_timeout and one finds the queue full (503).
    assert_eq!(statuses, [503, 503, 504, 504]);
}

#[test]
fn idle_stop_and_launcher_exit_leave_no_process_behind() {
    let dir = tempdir();
    let mut od = Ondemand::start(&format!(
        "{}{}{}",
        server(&dir, "3s"),
        upstream_app(
            "forker",
            "/",
            &["--fd", "--fork-grandchildren", "3"],
            "idle_timeout = \"1s\""
        ),
        upstream_app(
            "lasting",
            "/lasting",
            &["--fd", "--fork-grandchildren", "2"],
            ""
        ),
    ));
    let pid = pid_of(&get(od.port, "a", "/pid").unwrap());
    let children: Vec<u32> =
        serde_json::from_slice::<Vec<u32>>(&get(od.port, "a", "/children").unwrap().body).unwrap();
    assert_eq!(children.len(), 3);
    od.wait_log("stopping: idle for 1s", Duration::from_secs(10));
    for p in children.iter().chain([&pid]) {
        wait_gone(*p, "the idle app's processes");
    }
    // The second app is still running when the launcher exits: the launcher stops it first.
    let lasting = pid_of(&get(od.port, "a", "/lasting/pid").unwrap());
    let lasting_children: Vec<u32> =
        serde_json::from_slice(&get(od.port, "a", "/lasting/children").unwrap().body).unwrap();
    assert_eq!(od.wait_exit(Duration::from_secs(20)), 0);
    for p in lasting_children.iter().chain([&lasting]) {
        assert!(!alive(*p), "pid {p} outlived the launcher");
    }
}

#[test]
fn sigterm_stops_the_apps_before_the_launcher_exits() {
    let dir = tempdir();
    let mut od = Ondemand::start(&format!(
        "{}{}",
        server(&dir, "never"),
        upstream_app("a", "/", &["--fd"], "stop_timeout = \"2s\"")
    ));
    let pid = pid_of(&get(od.port, "a", "/pid").unwrap());
    od.child.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
    assert!(!alive(pid), "the app outlived the launcher");
    assert!(od.log_text().contains("stopped: exited with status 0"));
}

#[test]
fn several_instances_share_the_load() {
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}{}",
        server(&dir, "never"),
        upstream_app("pair", "/", &["--fd"], "instances = 2")
    ));
    let mut pids = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = get(od.port, "a", "/pid").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        pids.insert(pid_of(&r));
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
}

#[test]
fn reload_keeps_unchanged_apps_and_restarts_changed_ones() {
    let dir = tempdir();
    let same = upstream_app("same", "/", &["--fd"], "");
    let od = Ondemand::start(&format!(
        "{}{same}{}",
        server(&dir, "never"),
        upstream_app("changed", "/changed", &["--fd"], "")
    ));
    let same_pid = pid_of(&get(od.port, "a", "/pid").unwrap());
    let changed_pid = pid_of(&get(od.port, "a", "/changed/pid").unwrap());
    let old_config = std::fs::read_to_string(&od.config).unwrap();
    let new_config = old_config.replace(
        "\"changed\", \"--fd\"]",
        "\"changed\", \"--fd\", \"--ready-delay\", \"0.1\"]",
    );
    assert_ne!(old_config, new_config);
    std::fs::write(&od.config, new_config).unwrap();
    od.child.signal(nix::sys::signal::Signal::SIGHUP);
    od.wait_log("configuration reloaded", Duration::from_secs(5));
    wait_gone(changed_pid, "the changed app's old process");
    assert_eq!(pid_of(&get(od.port, "a", "/pid").unwrap()), same_pid);
    let r = get(od.port, "a", "/changed/pid").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(pid_of(&r), changed_pid);
}

#[test]
fn apps_run_as_their_own_user() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: user switching needs root");
        return;
    }
    let dir = tempdir();
    // The runtime dir must be reachable for the app's notify socket: 0711 on the way down.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let od = Ondemand::start(&format!(
        "{}{}{}",
        server(&dir, "never"),
        upstream_app("nobody", "/", &["--fd"], "user = \"nobody\"\nnice = 5"),
        upstream_app(
            "nobody-notify",
            "/n",
            &["--port-env", "--notify"],
            "user = \"nobody\"\nlisten = \"port\"\nready = \"notify\""
        ),
    ));
    let fds = json(&get(od.port, "a", "/fds").unwrap());
    assert_eq!(fds["uid"], 65534);
    assert_eq!(fds["nice"], 5);
    let r = get(od.port, "a", "/n/fds").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["uid"], 65534);
}

#[test]
fn run_config_errors_are_located() {
    let cases = [
        ("command = []", "command is empty"),
        (
            "command = [\"x\"]\nlisten = \"pipe\"",
            "use \"socket\" or \"port\"",
        ),
        (
            "command = [\"x\"]\nlisten = \"port\"\nready = \"listen\"",
            "needs listen = \"socket\"",
        ),
        (
            "command = [\"x\", \"{port}\"]",
            "{port} in command is replaced only",
        ),
        (
            "command = [\"x\"]\nready = \"http:healthz\"",
            "http:/healthz",
        ),
        ("command = [\"x\"]\nnice = 40", "between -20 and 19"),
        ("command = [\"x\"]\nio_priority = \"fast\"", "io_priority"),
        (
            "command = [\"x\"]\ninstances = 0",
            "instances must be between 1 and 64",
        ),
        ("command = [\"x\"]\nworking_dir = \"srv\"", "absolute"),
        (
            "command = [\"x\"]\nrestart = \"always\"",
            "unknown field `restart`",
        ),
    ];
    crate::support::assert_check_errors(&cases.map(|(run, expected)| {
        (
            format!("[[app]]\nname = \"x\"\n[app.run]\n{run}\n"),
            expected,
        )
    }));
}

#[test]
fn raw_requests_to_an_app_that_never_started_hold_until_ready() {
    // The triggering request is held, not failed, while the app takes its time to get ready.
    let dir = tempdir();
    let od = Ondemand::start(&format!(
        "{}{}",
        server(&dir, "never"),
        upstream_app(
            "slowstart",
            "/",
            &["--port-env", "--ready-delay", "1.5"],
            "listen = \"port\""
        )
    ));
    let t = Instant::now();
    let r = raw_request(
        od.port,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["body_len"], 5);
    assert!(t.elapsed() >= Duration::from_millis(1400));
}

/// Port mode: when another process takes the app's port before the app listens on it, no
/// request is sent to that process: the app is started again on another port, and the request
/// that started it is answered by the app.
#[test]
fn a_port_taken_by_another_process_is_not_mistaken_for_the_app() {
    let dir = tempdir();
    let command = format!(
        "echo \"will listen on port $PORT\"; exec {PYTHON} {} --port-env --ready-delay 2 --name late",
        app_path("upstream.py").display()
    );
    let od = Ondemand::start(&format!(
        "{}[[app]]\nname = \"late\"\n[app.run]\nlisten = \"port\"\ncommand = [\"/bin/sh\", \"-c\", {command:?}]\n",
        server(&dir, "never")
    ));
    let port = od.port;
    let first = std::thread::spawn(move || get(port, "a", "/pid"));
    od.wait_log("stream=\"stdout\"", Duration::from_secs(10));
    let log = od.log_text();
    let app_port: u16 = log
        .split("will listen on port ")
        .skip(1)
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no port in the log:\n{log}"));
    // The impostor: listens on the app's port and answers every connection with a 200.
    let impostor = TcpListener::bind(("127.0.0.1", app_port)).unwrap();
    std::thread::spawn(move || {
        for mut conn in impostor.incoming().flatten() {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nimpostor",
            );
        }
    });
    let r = first.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(json(&r)["pid"].is_number(), "{}", r.text());
    let log = od.log_text();
    let warning = format!(
        "starting it again on another port: cannot start: it exited with status 1 before it was \
         ready: another process took its port (http://127.0.0.1:{app_port}) before it listened there"
    );
    assert!(log.contains(&warning), "{log}");
}

/// Even a launcher killed outright (SIGKILL, the OOM killer) leaves no app running: each app
/// gets SIGTERM when its parent dies.
#[test]
fn a_killed_launcher_takes_its_apps_down() {
    let dir = tempdir();
    let mut od = Ondemand::start(&format!(
        "{}{}",
        server(&dir, "never"),
        upstream_app("orphan", "/", &["--fd"], "")
    ));
    let pid = pid_of(&get(od.port, "a", "/pid").unwrap());
    od.child.signal(nix::sys::signal::Signal::SIGKILL);
    od.wait_exit(Duration::from_secs(5));
    wait_gone(pid, "the app of a killed launcher");
}
