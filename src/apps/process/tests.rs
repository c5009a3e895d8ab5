//! Tests that start real processes (`/bin/sh`, `python3`, coreutils) and look at them from the
//! outside (`/proc`) and from the inside (what they print).
//!
//! Tests of one binary share one process, so a scenario that changes process-wide state (the
//! subreaper flag, killing every child, the inherited environment) runs in a process of its own:
//! an `#[ignore]`d test that a normal test runs through this binary ([`run_in_own_process`]).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use tokio::time::timeout;

use super::*;

/// Every wait in these tests is bounded by this, so a broken test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(20);

/// Set for a test run by [`run_in_own_process`].
const OWN_PROCESS: &str = "ONDEMAND_TEST_OWN_PROCESS";

fn sh(app: &str, script: &str) -> LaunchSpec {
    LaunchSpec {
        app: app.into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..LaunchSpec::default()
    }
}

/// Starts the app and waits for it to end by itself.
async fn run(spec: &LaunchSpec) -> (ExitStatus, Vec<String>) {
    let mut app = AppProcess::spawn(spec).expect("the app starts");
    let status = timeout(DEADLINE, app.wait()).await.expect("the app ends");
    (status, app.last_output())
}

/// Waits until the app has printed `wanted` as a line.
async fn printed(app: &AppProcess, wanted: &str) {
    if timeout(DEADLINE, app.output.line(wanted)).await.is_err() {
        panic!("the app never printed {wanted:?}: {:?}", app.last_output());
    }
}

fn pids(lines: &[String]) -> Vec<i32> {
    lines.iter().filter_map(|line| line.parse().ok()).collect()
}

/// `/proc/<pid>/stat` fields after the command name: state, parent, group, ...
fn stat_of(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(String::from).collect())
}

/// True if `pid` exists and has not exited (zombies have).
fn is_alive(pid: i32) -> bool {
    stat_of(pid).is_some_and(|fields| fields[0] != "Z" && fields[0] != "X")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn the_test_named(name: &str) -> String {
    // Test names leave out the crate: "apps::process::tests::name".
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{name}")
}

/// Runs the ignored test `name` alone in a new process of this test binary, with `env` added to
/// its environment, and fails if it fails.
async fn run_in_own_process(name: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let test = the_test_named(name);
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "--exact",
            &test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWN_PROCESS, "1")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = timeout(DEADLINE, command.output())
        .await
        .expect("the test in its own process ends")
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in its own process failed:\n{stdout}\n{stderr}"
    );
}

/// True in a test started by [`run_in_own_process`]; otherwise says why the test does nothing.
fn in_own_process() -> bool {
    let own = std::env::var_os(OWN_PROCESS).is_some();
    if !own {
        eprintln!("skipped: this scenario runs only in a process of its own");
    }
    own
}

// --- Output --------------------------------------------------------------------------------

/// A log sink for a tracing subscriber.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn output_lines_are_logged_with_the_app_and_the_stream() {
    run_in_own_process("logging_scenario", &[]).await;
}

#[tokio::test]
#[ignore = "sets the global log subscriber: run by output_lines_are_logged_with_the_app_and_the_stream"]
async fn logging_scenario() {
    if !in_own_process() {
        return;
    }
    let log = CapturedLog::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // Global, not `set_default`: a thread's default races with other tests' threads over
    // tracing's per-callsite interest cache, and loses now and then.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (status, _) = run(&sh("wiki", "echo to-stdout; echo to-stderr >&2")).await;
    assert!(status.success());
    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    let line_with = |text: &str| log.lines().find(|l| l.contains(text)).unwrap_or_default();
    for stream in ["stdout", "stderr"] {
        let line = line_with(&format!("to-{stream}"));
        assert!(
            line.contains(" INFO ")
                && line.contains("app=wiki")
                && line.contains(&format!("stream=\"{stream}\"")),
            "{log}"
        );
    }
}

#[tokio::test]
async fn last_output_keeps_the_last_20_lines() {
    let (_, lines) = run(&sh("chatty", "seq 1 30")).await;
    let expected: Vec<String> = (11..=30).map(|n| n.to_string()).collect();
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn long_lines_are_cut_and_bad_utf8_is_replaced() {
    let script = r"head -c 3000 /dev/zero | tr '\0' x; echo; printf 'bad \377 byte\n'";
    let (_, lines) = run(&sh("binary", script)).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "x".repeat(output::MAX_LINE_BYTES));
    assert_eq!(lines[1], "bad \u{FFFD} byte");
}

// --- Session, environment, fds, priorities, user ----------------------------------------------

#[tokio::test]
async fn the_app_leads_its_own_session_and_process_group() {
    let mut app = AppProcess::spawn(&sh("leader", "cut -d' ' -f5,6 /proc/$$/stat")).unwrap();
    timeout(DEADLINE, app.wait()).await.unwrap();
    let pid = app.pid();
    assert_eq!(
        app.last_output(),
        [format!("{pid} {pid}")],
        "group and session"
    );
}

#[test]
fn environment_drops_ondemands_variables_then_adds_the_users_and_the_apps() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut spec = sh("env", "true");
    spec.user = Some(Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
        name: "nobody".into(),
        home: "/nonexistent".into(),
    });
    spec.env = vec![
        ("LOGNAME".into(), "chosen-by-the-app".into()),
        ("PORT".into(), "8080".into()),
        ("LISTEN_PID".into(), "1".into()),
    ];
    spec.socket = Some(HandedSocket {
        fd: Arc::new(listener.into()),
        name: "web".into(),
    });
    let inherited = [
        ("PATH", "/bin"),
        ("HOME", "/root"),
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("LISTEN_FDS", "2"),
        ("WATCHDOG_USEC", "1000"),
        ("ONDEMAND_CONFIG", "/etc/ondemand.toml"),
    ]
    .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let env = child::environment(&spec, inherited);
    let get = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    };
    assert_eq!(get("PATH").as_deref(), Some("/bin"));
    assert_eq!(get("HOME").as_deref(), Some("/nonexistent"));
    assert_eq!(get("USER").as_deref(), Some("nobody"));
    assert_eq!(get("LOGNAME").as_deref(), Some("chosen-by-the-app"));
    assert_eq!(get("PORT").as_deref(), Some("8080"));
    assert_eq!(get("LISTEN_FDS").as_deref(), Some("1"));
    assert_eq!(get("LISTEN_FDNAMES").as_deref(), Some("web"));
    // Added in the child, where the pid is known.
    assert_eq!(get("LISTEN_PID"), None);
    for gone in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "ONDEMAND_CONFIG"] {
        assert_eq!(get(gone), None, "{gone}");
    }
}

#[tokio::test]
async fn environment_is_scrubbed_before_the_apps_own_is_applied() {
    let inherited = [
        ("LISTEN_PID", "1"),
        ("LISTEN_FDS", "1"),
        ("LISTEN_FDNAMES", "http"),
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("WATCHDOG_USEC", "1000000"),
        ("WATCHDOG_PID", "1"),
        ("ONDEMAND_CONFIG", "/etc/ondemand.toml"),
        ("ONDEMAND_LOG", "debug"),
        ("KEPT_FROM_ONDEMAND", "yes"),
    ];
    run_in_own_process("environment_scenario", &inherited).await;
}

#[tokio::test]
#[ignore = "needs its own environment: run by environment_is_scrubbed_before_the_apps_own_is_applied"]
async fn environment_scenario() {
    if !in_own_process() {
        return;
    }
    let names = "LISTEN_PID LISTEN_FDS LISTEN_FDNAMES NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID \
                 ONDEMAND_CONFIG ONDEMAND_LOG PORT KEPT_FROM_ONDEMAND";
    let script = format!("for n in {names}; do echo \"$n=$(printenv $n || echo unset)\"; done");
    let mut spec = sh("env", &script);
    spec.env = vec![
        ("PORT".into(), "8080".into()),
        ("NOTIFY_SOCKET".into(), "/run/app/notify".into()),
    ];
    let (_, lines) = run(&spec).await;
    let expected = [
        "LISTEN_PID=unset",
        "LISTEN_FDS=unset",
        "LISTEN_FDNAMES=unset",
        "NOTIFY_SOCKET=/run/app/notify",
        "WATCHDOG_USEC=unset",
        "WATCHDOG_PID=unset",
        "ONDEMAND_CONFIG=unset",
        "ONDEMAND_LOG=unset",
        "PORT=8080",
        "KEPT_FROM_ONDEMAND=yes",
    ];
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn socket_is_handed_over_on_fd_3_with_the_apps_own_pid() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
    let mut spec = sh(
        "web",
        "echo $LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES; readlink /proc/$$/fd/3; ls /proc/$$/fd",
    );
    spec.socket = Some(HandedSocket {
        fd: Arc::new(listener.into()),
        name: "web".into(),
    });
    let mut app = AppProcess::spawn(&spec).unwrap();
    timeout(DEADLINE, app.wait()).await.unwrap();
    let pid = app.pid();
    let expected = [
        format!("{pid} {pid} 1 web"),
        ours.to_string_lossy().into_owned(),
        "0".into(),
        "1".into(),
        "2".into(),
        "3".into(),
    ];
    assert_eq!(app.last_output(), expected);
}

#[tokio::test]
async fn the_app_gets_only_stdio_even_from_fds_without_cloexec() {
    let file = tempfile::tempfile().unwrap();
    // dup() makes a copy without FD_CLOEXEC, as a careless library would.
    let leaked = unsafe { nix::libc::dup(file.as_raw_fd()) };
    assert!(leaked >= 0, "{}", io::Error::last_os_error());
    let leaked = unsafe { OwnedFd::from_raw_fd(leaked) };
    let flags = unsafe { nix::libc::fcntl(leaked.as_raw_fd(), nix::libc::F_GETFD) };
    assert_eq!(flags & nix::libc::FD_CLOEXEC, 0, "the test's fd must leak");
    let (_, lines) = run(&sh("fds", "ls /proc/$$/fd")).await;
    assert_eq!(lines, ["0", "1", "2"], "fd {} leaked", leaked.as_raw_fd());
}

#[tokio::test]
async fn nice_io_priority_and_limits_apply_to_the_app() {
    let mut spec = sh(
        "limited",
        "cut -d' ' -f19 /proc/$$/stat; ionice -p $$; ulimit -n; ulimit -Hn; ulimit -v",
    );
    spec.nice = Some(7);
    spec.io_priority = Some(IoPriority::BestEffort(6));
    spec.limits = Limits {
        memory: Some(1 << 30),
        open_files: Some(300),
    };
    let (status, lines) = run(&spec).await;
    assert!(status.success(), "{lines:?}");
    assert_eq!(lines, ["7", "best-effort: prio 6", "300", "300", "1048576"]);
}

#[tokio::test]
async fn user_switch_comes_after_the_privileged_settings() {
    if !is_root() {
        eprintln!("skipped: switching user needs root");
        return;
    }
    let nobody = Credentials::lookup("nobody", None).unwrap();
    let mut spec = sh(
        "as-nobody",
        "id -u; id -g; id -G; echo $USER $LOGNAME $HOME; cut -d' ' -f19 /proc/$$/stat; \
         ionice -p $$; grep CapEff /proc/$$/status",
    );
    spec.user = Some(nobody.clone());
    // Both need privilege, which nobody lacks: they work only if set before the switch.
    spec.nice = Some(-5);
    spec.io_priority = Some(IoPriority::Realtime(3));
    let (status, lines) = run(&spec).await;
    assert!(status.success(), "{lines:?}");
    let groups: Vec<String> = nobody.groups.iter().map(u32::to_string).collect();
    let expected = [
        nobody.uid.to_string(),
        nobody.gid.to_string(),
        groups.join(" "),
        format!("nobody nobody {}", nobody.home.display()),
        "-5".into(),
        "realtime: prio 3".into(),
        "CapEff:\t0000000000000000".into(),
    ];
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn command_is_looked_up_in_the_apps_path_and_starts_in_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A link, not a written script: exec'ing a file just written races with other tests' forks
    // (ETXTBSY).
    std::os::unix::fs::symlink("/bin/sh", dir.path().join("hello-app")).unwrap();
    let spec = LaunchSpec {
        app: "hello".into(),
        command: vec!["hello-app".into(), "-c".into(), "pwd; echo $PORT".into()],
        working_dir: Some(dir.path().into()),
        env: vec![
            ("PATH".into(), dir.path().to_string_lossy().into_owned()),
            ("PORT".into(), "8080".into()),
        ],
        ..LaunchSpec::default()
    };
    let (status, lines) = run(&spec).await;
    assert!(status.success(), "{lines:?}");
    assert_eq!(
        lines,
        [dir.path().to_string_lossy().into_owned(), "8080".into()]
    );
}

#[test]
fn credentials_of_nobody_are_found() {
    let nobody = Credentials::lookup("nobody", None).unwrap();
    assert_eq!(nobody.uid, 65534);
    assert_eq!(nobody.name, "nobody");
    assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
    let in_root_group = Credentials::lookup("nobody", Some("root")).unwrap();
    assert_eq!(in_root_group.gid, 0);
    assert!(in_root_group.groups.contains(&0), "{in_root_group:?}");
}

#[test]
fn unknown_users_and_groups_are_explained() {
    let error = Credentials::lookup("no-such-user-for-ondemand", None).unwrap_err();
    assert!(error.contains("\"no-such-user-for-ondemand\"") && error.contains("useradd"));
    let error = Credentials::lookup("nobody", Some("no-such-group-for-ondemand")).unwrap_err();
    assert!(error.contains("\"no-such-group-for-ondemand\"") && error.contains("groupadd"));
}

// --- Starting fails --------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_command_is_an_error_naming_the_app_and_the_command() {
    let spec = |program: &str| LaunchSpec {
        app: "wiki".into(),
        command: vec![program.into()],
        ..LaunchSpec::default()
    };
    // Found missing by exec in the child: this also guards that the child setup keeps std's
    // error-report channel open (fds are marked close-on-exec, not closed).
    let error = AppProcess::spawn(&spec("/no/such/bin")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "app \"wiki\": cannot start /no/such/bin: No such file or directory (os error 2)"
    );
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    // Found missing in PATH, before forking.
    let error = AppProcess::spawn(&spec("no-such-command-for-ondemand")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "app \"wiki\": cannot start no-such-command-for-ondemand: No such file or directory (os \
         error 2)"
    );
    let error = AppProcess::spawn(&spec("/")).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
}

#[tokio::test]
async fn a_missing_working_directory_is_named() {
    let mut spec = sh("wiki", "true");
    spec.working_dir = Some("/no/such/dir".into());
    let error = AppProcess::spawn(&spec).unwrap_err().to_string();
    assert!(
        error.starts_with("app \"wiki\": cannot start /bin/sh: its working directory /no/such/dir"),
        "{error}"
    );
}

// --- Ending ---------------------------------------------------------------------------------

#[test]
fn exits_are_described_by_code_or_signal() {
    assert_eq!(
        describe_exit(ExitStatus::from_raw(3 << 8)),
        "exited with status 3"
    );
    assert_eq!(
        describe_exit(ExitStatus::from_raw(nix::libc::SIGSEGV)),
        "killed by signal SIGSEGV"
    );
    assert_eq!(
        describe_exit(ExitStatus::from_raw(nix::libc::SIGKILL | 0x80)),
        "killed by signal SIGKILL (core dumped)"
    );
}

#[tokio::test]
async fn an_exit_code_is_reported() {
    let (status, _) = run(&sh("crash", "exit 3")).await;
    assert_eq!(describe_exit(status), "exited with status 3");
}

#[tokio::test]
async fn a_crash_is_reported_with_its_signal() {
    let (status, _) = run(&sh("crash", "kill -SEGV $$")).await;
    // "(core dumped)" may follow, where core dumps are enabled.
    let described = describe_exit(status);
    assert!(
        described.starts_with("killed by signal SIGSEGV"),
        "{described}"
    );
}

#[tokio::test]
async fn wait_is_cancel_safe_in_select() {
    let mut app = AppProcess::spawn(&sh("slow", "sleep 0.3; exit 7")).unwrap();
    let mut cancelled = 0;
    let status = timeout(DEADLINE, async {
        loop {
            tokio::select! {
                status = app.wait() => break status,
                _ = tokio::time::sleep(Duration::from_millis(20)) => cancelled += 1,
            }
        }
    })
    .await
    .unwrap();
    assert!(cancelled > 0, "wait was never cancelled");
    assert_eq!(status.code(), Some(7));
    // And again, once it has returned.
    assert_eq!(timeout(DEADLINE, app.wait()).await.unwrap().code(), Some(7));
}

#[tokio::test]
async fn what_the_app_leaves_in_its_group_dies_with_it() {
    let (status, lines) = run(&sh("leaves", "sleep 60 & echo $!; exit 0")).await;
    assert!(status.success());
    let sleeper = pids(&lines)[0];
    assert!(!is_alive(sleeper), "the app's child {sleeper} outlived it");
}

#[tokio::test]
async fn stop_ends_the_whole_group() {
    let script = "sleep 60 & echo $!; sleep 60 & echo $!; echo started; wait";
    let mut app = AppProcess::spawn(&sh("forks", script)).unwrap();
    printed(&app, "started").await;
    let sleepers = pids(&app.last_output());
    let started = Instant::now();
    let status = timeout(DEADLINE, app.stop(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM was not enough"
    );
    assert_eq!(describe_exit(status), "killed by signal SIGTERM");
    assert_eq!(sleepers.len(), 2);
    for sleeper in sleepers {
        assert!(!is_alive(sleeper), "{sleeper} survived the stop");
    }
    assert!(!group::has_live_members(app.group_id()));
}

#[tokio::test]
async fn stop_kills_an_app_that_ignores_sigterm() {
    let script = "trap '' TERM; sleep 60 & echo $!; echo started; wait";
    let mut app = AppProcess::spawn(&sh("stubborn", script)).unwrap();
    printed(&app, "started").await;
    let sleeper = pids(&app.last_output())[0];
    let stop_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let status = timeout(DEADLINE, app.stop(stop_timeout)).await.unwrap();
    let took = started.elapsed();
    assert!(took >= stop_timeout, "did not wait for SIGTERM: {took:?}");
    // The group sweep and output drain take at most about 1.2 s more; the rest is slack.
    assert!(took < stop_timeout + Duration::from_secs(3), "{took:?}");
    assert_eq!(describe_exit(status), "killed by signal SIGKILL");
    assert!(!is_alive(sleeper), "{sleeper} survived the stop");
    assert!(!group::has_live_members(app.group_id()));
}

#[tokio::test]
async fn strays_that_escape_the_group_are_killed_by_kill_strays() {
    run_in_own_process("strays_scenario", &[]).await;
}

#[tokio::test]
#[ignore = "makes the process a subreaper and kills all its children: run by \
            strays_that_escape_the_group_are_killed_by_kill_strays"]
async fn strays_scenario() {
    if !in_own_process() {
        return;
    }
    become_subreaper();

    // As a subreaper, ondemand reaps what it kills in the group: nothing of it is left, not even
    // a zombie (which kill(-pgid, 0) would still find).
    let script = "sleep 60 & sleep 60 & echo started; wait";
    let mut app = AppProcess::spawn(&sh("forks", script)).unwrap();
    printed(&app, "started").await;
    timeout(DEADLINE, app.stop(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        killpg(Pid::from_raw(app.group_id()), None),
        Err(Errno::ESRCH)
    );

    // A daemon: it leaves the group with setsid(), and its parent exits once it has.
    let daemonize = "import os\n\
                     ready, escaped = os.pipe()\n\
                     pid = os.fork()\n\
                     if pid == 0:\n    os.setsid()\n    os.write(escaped, b'.')\n    \
                     os.execvp('sleep', ['sleep', '60'])\n\
                     os.read(ready, 1)\n\
                     print(pid)\n";
    let spec = LaunchSpec {
        app: "daemon".into(),
        command: vec!["python3".into(), "-c".into(), daemonize.into()],
        ..LaunchSpec::default()
    };
    let (status, lines) = run(&spec).await;
    assert!(status.success(), "{lines:?}");
    let daemon = pids(&lines)[0];
    let parent = stat_of(daemon).map(|fields| fields[1].clone());
    assert!(is_alive(daemon), "the daemon {daemon} died with its group");
    assert_eq!(
        parent,
        Some(std::process::id().to_string()),
        "orphans come to the subreaper"
    );

    assert_eq!(kill_strays(), 1);
    assert_eq!(
        stat_of(daemon),
        None,
        "the daemon {daemon} is killed and reaped"
    );
}
