//! A real xinetd, run in the foreground on a free loopback port, with `ondemand` as its `wait = yes`
//! server — the way users run it from /etc/xinetd.d, minus the root-owned files.
//!
//! Recipe (see /work/shared/SUPERVISORS.md): `xinetd -dontfork -f CONF -pidfile PID -filelog LOG`
//! with `log_type = FILE svc.log` and `log_on_success = PID EXIT DURATION`, so every server launch
//! and exit is a line in `svc.log`:
//!
//! ```text
//! 26/11/22@04:29:54: START: ondemand-test pid=3917
//! 26/11/22@04:29:55: EXIT: ondemand-test status=0 pid=3917 duration=1(sec)
//! ```
//!
//! Those lines are how the tests see the idle-exit / re-arm cycle: one START per server instance,
//! one EXIT when it leaves. xinetd's own messages (config errors, bind failures, "Deactivating
//! service ... excessive incoming connections") go to `xinetd.log`, and both files are printed when
//! xinetd fails to come up.
//!
//! Teardown: xinetd does not kill external servers when it stops, so `Drop` sends SIGTERM to xinetd
//! (its own child, reaped), then SIGKILLs every server pid that `svc.log` shows started and not
//! exited — after checking, in /proc, that the pid still runs a command line naming this harness's
//! temporary directory, so a recycled pid is never touched.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{bin, free_port, socket_table_has, tempdir, write_file};

/// The service name the harness gives xinetd (it appears in every svc.log line).
pub const SERVICE: &str = "ondemand-test";

/// How long xinetd gets to come up (parse its config, bind, listen).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One server launch or exit, as xinetd logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start { pid: i32 },
    Exit { pid: i32, how: Exited },
}

/// How a server ended: xinetd logs `status=N` for an exit and `signal=N` for a death by signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exited {
    Code(i32),
    Signal(i32),
}

/// A running xinetd (a child of the test process) and its temporary directory.
pub struct Xinetd {
    /// Holds xinetd.conf, svc.log, xinetd.log, the ondemand config and its log; removed on drop,
    /// after the processes are gone.
    dir: tempfile::TempDir,
    port: u16,
    /// `Some` until Drop takes it to stop and reap xinetd.
    child: Option<Child>,
}

/// Keeps the state file and the control socket of a test's launchers in its directory (unless
/// the test sets them), so parallel tests never share them and nothing is left in /var or /run.
fn private_dirs(config: &str, dir: &Path) -> String {
    let mut settings = String::new();
    if !config.contains("state_dir") {
        settings.push_str(&format!("state_dir = \"{}/state\"\n", dir.display()));
    }
    if !config.contains("control_socket") {
        settings.push_str(&format!(
            "control_socket = \"{}/control.sock\"\n",
            dir.display()
        ));
    }
    if config.contains("[server]\n") {
        config.replacen("[server]\n", &format!("[server]\n{settings}"), 1)
    } else {
        format!("[server]\n{settings}\n{config}")
    }
}

impl Xinetd {
    /// Starts xinetd with `ondemand serve --config DIR/ondemand.toml` as the server of a
    /// `wait = yes` stream service on 127.0.0.1:`port()`.
    ///
    /// `config_toml` is written to DIR/ondemand.toml after replacing every `{dir}` with the
    /// temporary directory's path, so a test can say `log = "{dir}/ondemand.log"`.
    pub fn start(config_toml: &str) -> Xinetd {
        Xinetd::start_service(|dir, port| {
            let config = private_dirs(
                &config_toml.replace("{dir}", &dir.display().to_string()),
                dir,
            );
            let config_path = write_file(dir, "ondemand.toml", &config);
            service_block(
                &bin(),
                &format!("serve --config {}", config_path.display()),
                port,
            )
        })
    }

    /// Starts xinetd with a service block of the caller's making: `service(dir, port)` returns the
    /// whole `service NAME { ... }` text for the temporary directory `dir` and the free loopback
    /// `port`. The harness adds the `defaults` block (logging) around it.
    ///
    /// The server's command line must contain `dir` (e.g. a config path inside it): teardown only
    /// kills leftover servers whose command line names `dir`. Listen on 127.0.0.1 or ::1 only.
    pub fn start_service(service: impl FnOnce(&Path, u16) -> String) -> Xinetd {
        Xinetd::start_service_in(None, service)
    }

    /// Like [`start_service`](Self::start_service), in the network namespace `netns` (made by
    /// the test, see `support::netns`) when given: xinetd runs under `ip netns exec`, which
    /// execs it, so the child is xinetd itself. The service may then bind any address of the
    /// namespace.
    pub fn start_service_in(
        netns: Option<&str>,
        service: impl FnOnce(&Path, u16) -> String,
    ) -> Xinetd {
        let xinetd = find_xinetd();
        let dir = tempdir();
        let port = free_port();
        let service = service(dir.path(), port);
        let conf = format!(
            "defaults\n{{\n\
             \tlog_type       = FILE {svc_log}\n\
             \tlog_on_success = PID EXIT DURATION\n\
             \tlog_on_failure = HOST ATTEMPT\n\
             }}\n\n{service}\n",
            svc_log = dir.path().join("svc.log").display(),
        );
        let conf_path = write_file(dir.path(), "xinetd.conf", &conf);
        let stdout =
            std::fs::File::create(dir.path().join("xinetd.out")).expect("create xinetd.out");
        let stderr = stdout.try_clone().expect("dup xinetd.out");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&xinetd);
                c
            }
            None => Command::new(&xinetd),
        };
        let child = command
            .arg("-dontfork")
            .arg("-f")
            .arg(&conf_path)
            .arg("-pidfile")
            .arg(dir.path().join("xinetd.pid"))
            .arg("-filelog")
            .arg(dir.path().join("xinetd.log"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", xinetd.display()));
        let mut xinetd = Xinetd {
            dir,
            port,
            child: Some(child),
        };
        xinetd.wait_listening();
        xinetd
    }

    /// Stops xinetd (SIGTERM) and reaps it, as a host going down would; the servers it started
    /// keep running until they exit or the harness is dropped. (Waits that watch xinetd, such as
    /// [`wait_log`](Self::wait_log), cannot be used after this.)
    pub fn stop_xinetd(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// The loopback port the service listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (xinetd.conf, svc.log, xinetd.log, ondemand.toml, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// xinetd's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("xinetd child").id() as i32
    }

    /// The service log (START/EXIT lines); empty before the first line is written.
    pub fn log(&self) -> String {
        read_or_empty(&self.dir().join("svc.log"))
    }

    /// xinetd's own messages (startup, config errors, cps deactivation).
    pub fn xinetd_log(&self) -> String {
        read_or_empty(&self.dir().join("xinetd.log"))
    }

    /// A file in the temporary directory, or "" if it does not exist (e.g. "ondemand.log").
    pub fn file(&self, name: &str) -> String {
        read_or_empty(&self.dir().join(name))
    }

    /// Every START and EXIT line of svc.log, in order.
    pub fn events(&self) -> Vec<Event> {
        parse_events(&self.log())
    }

    /// Pids of every server xinetd started, in order.
    pub fn started_pids(&self) -> Vec<i32> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Start { pid } => Some(pid),
                Event::Exit { .. } => None,
            })
            .collect()
    }

    /// (pid, how it ended) of every server xinetd saw exit, in order.
    pub fn exits(&self) -> Vec<(i32, Exited)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Exit { pid, how } => Some((pid, how)),
                Event::Start { .. } => None,
            })
            .collect()
    }

    /// Pids of every server xinetd saw exit, in order.
    pub fn exited_pids(&self) -> Vec<i32> {
        self.exits().into_iter().map(|(pid, _)| pid).collect()
    }

    /// Pids started and not (yet) logged as exited.
    pub fn running_pids(&self) -> Vec<i32> {
        let exited = self.exited_pids();
        self.started_pids()
            .into_iter()
            .filter(|p| !exited.contains(p))
            .collect()
    }

    /// Waits until svc.log shows at least `n` server starts; returns the started pids.
    pub fn wait_started(&self, n: usize, timeout: Duration) -> Vec<i32> {
        self.wait_log(&format!("{n} server start(s)"), timeout, |x| {
            x.started_pids().len() >= n
        });
        self.started_pids()
    }

    /// Waits until svc.log shows `pid` exited; returns how it ended.
    pub fn wait_exited(&self, pid: i32, timeout: Duration) -> Exited {
        self.wait_log(&format!("server pid {pid} to exit"), timeout, |x| {
            x.exited_pids().contains(&pid)
        });
        self.exits()
            .into_iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, s)| s)
            .unwrap()
    }

    /// Waits until every server svc.log shows started has also exited.
    pub fn wait_all_servers_exited(&self, timeout: Duration) {
        self.wait_log("every started server to exit", timeout, |x| {
            x.running_pids().is_empty()
        });
    }

    /// Live (not zombie) processes other than xinetd whose command line names this harness's
    /// directory — i.e. servers this xinetd started (and anything they started with the config
    /// path on their command line), whatever svc.log says. Empty once every server has stopped.
    pub fn live_processes(&self) -> Vec<(i32, String)> {
        let xinetd = self.child.as_ref().map(|c| c.id() as i32);
        processes_naming(self.dir())
            .into_iter()
            .filter(|(pid, _)| Some(*pid) != xinetd)
            .collect()
    }

    /// Polls `cond` every 10 ms; on timeout panics with `what` and both logs. Also panics at once if
    /// xinetd itself has died.
    pub fn wait_log(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return;
            }
            if !pid_alive(self.pid()) {
                panic!(
                    "xinetd (pid {}) died while waiting for {what}\n{}",
                    self.pid(),
                    self.report()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Both logs and the ondemand log (if any), for failure messages.
    pub fn report(&self) -> String {
        let ondemand_log = self.file("ondemand.log");
        let tail: Vec<&str> = ondemand_log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- svc.log ---\n{}--- xinetd.log ---\n{}--- xinetd stdout/stderr ---\n{}\
             --- ondemand.log (last 60 lines) ---\n{}\n---",
            self.log(),
            self.xinetd_log(),
            self.file("xinetd.out"),
            tail.join("\n"),
        )
    }

    /// Waits until xinetd has bound and is listening on the port. The check reads the kernel's
    /// socket table (/proc/net/tcp{,6}) instead of connecting: a probe connection would itself
    /// make xinetd launch a server, and the tests count launches.
    fn wait_listening(&mut self) {
        let port = self.port;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if is_listening(port, self.pid()) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .expect("try_wait xinetd")
            {
                panic!(
                    "xinetd exited ({status}) before listening on port {port}\n{}",
                    self.report()
                );
            }
            if self
                .xinetd_log()
                .contains("Started working: 0 available services")
            {
                panic!(
                    "xinetd started with no usable service (config or bind error)\n{}",
                    self.report()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "xinetd did not listen on port {port} within {START_TIMEOUT:?}\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Xinetd {
    fn drop(&mut self) {
        // 1. Stop xinetd (our own child) and reap it: SIGTERM, then SIGKILL if it lingers.
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        // 2. xinetd does not stop external servers. Kill each one svc.log shows started and not
        //    exited — only if /proc confirms the pid still runs a command naming our directory.
        //    They are not our children (xinetd's orphans go to the system's reaper), so wait for
        //    them to disappear or turn zombie.
        let dir = self.dir().to_path_buf();
        for pid in self.running_pids() {
            if cmdline_of(pid).is_some_and(|c| c.contains(&*dir.to_string_lossy())) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while pid_alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// The standard test service: `server` with `server_args` as a `wait = yes` stream service on
/// 127.0.0.1:`port`, run as the current user, with xinetd's default cps spelled out.
pub fn service_block(server: &Path, server_args: &str, port: u16) -> String {
    service_block_on(server, server_args, "127.0.0.1", port)
}

/// [`service_block`] bound to `address` (an IPv4 address; a test host's, in its namespace).
pub fn service_block_on(server: &Path, server_args: &str, address: &str, port: u16) -> String {
    format!(
        "service {SERVICE}\n{{\n\
         \ttype        = UNLISTED\n\
         \tsocket_type = stream\n\
         \tprotocol    = tcp\n\
         \twait        = yes\n\
         \tuser        = {uid}\n\
         \tserver      = {server}\n\
         \tserver_args = {server_args}\n\
         \tbind        = {address}\n\
         \tport        = {port}\n\
         \tflags       = IPv4\n\
         \tcps         = 50 10\n\
         }}\n",
        uid = current_uid(),
        server = server.display(),
    )
}

/// The uid this test runs as (xinetd requires `user`; unless xinetd runs as root it must be ours).
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid()
}

/// Parses svc.log START/EXIT lines for any service.
pub fn parse_events(log: &str) -> Vec<Event> {
    let field = |line: &str, name: &str| -> Option<i32> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    log.lines()
        .filter_map(|line| {
            if line.contains(": START: ") {
                Some(Event::Start {
                    pid: field(line, "pid=")?,
                })
            } else if line.contains(": EXIT: ") {
                let how = match field(line, "status=") {
                    Some(code) => Exited::Code(code),
                    None => Exited::Signal(field(line, "signal=")?),
                };
                Some(Event::Exit {
                    pid: field(line, "pid=")?,
                    how,
                })
            } else {
                None
            }
        })
        .collect()
}

/// The xinetd binary; panics with the install hint if there is none.
fn find_xinetd() -> PathBuf {
    let candidates = [
        "/usr/sbin/xinetd",
        "/usr/bin/xinetd",
        "/usr/local/sbin/xinetd",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "xinetd is not installed (looked in {candidates:?}); these tests need the real \
                 supervisor — install xinetd: apt-get install xinetd"
            )
        })
}

/// Whether a TCP socket in LISTEN state is bound to `port` (IPv4 or IPv6 table), in the network
/// namespace of process `pid`.
fn is_listening(port: u16, pid: i32) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|table| {
        let table = format!("/proc/{pid}/net/{table}");
        socket_table_has(Path::new(&table), |local, _, state| {
            local.ends_with(&want) && state == "0A"
        })
    })
}

/// The command line of `pid` (NULs as spaces), or None if it is gone or a zombie.
fn cmdline_of(pid: i32) -> Option<String> {
    if !pid_alive(pid) {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Live processes whose command line contains `dir`.
fn processes_naming(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, cmdline_of(pid)?)))
        .filter(|(_, cmd)| cmd.contains(&needle))
        .collect()
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
