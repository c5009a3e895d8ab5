//! Starting and stopping one app's process.
//!
//! [`AppProcess::spawn`] runs the command of a [`LaunchSpec`] in a session and process group of its
//! own, as its user, with its priorities and limits, a scrubbed environment, only stdio (and the
//! handed-over socket, systemd-style, on fd 3), and its stdout and stderr logged line by line.
//! [`AppProcess::wait`] reports how it ended; [`AppProcess::stop`] ends it and everything it
//! started in its group. [`become_subreaper`] and [`kill_strays`] deal with what leaves the group.
//!
//! Inside: `child` is what the process does between fork and exec (and its environment), `output`
//! its stdout and stderr, `group` its process group and the strays that escape it.

mod child;
mod group;
mod output;
#[cfg(test)]
mod tests;

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{getgrouplist, Group, User};
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use child::ChildSetup;
pub use group::{become_subreaper, kill_strays};
use output::OutputTail;

/// How long, after the app's main process has exited, what it left in its group gets to die
/// (after SIGKILL) before [`AppProcess::wait`] gives up on it.
const GROUP_SWEEP: Duration = Duration::from_secs(1);

/// How often the group is looked at again while members are dying.
const GROUP_POLL: Duration = Duration::from_millis(5);

/// How long, after the app's group is gone, its last lines get to reach the log and
/// [`AppProcess::last_output`]. Short: a process that escaped the group may keep the pipes open.
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);

/// Where a command without a slash is looked for when the app's environment has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one app's process.
#[derive(Clone, Debug, Default)]
pub struct LaunchSpec {
    /// The app's name, for logs and errors.
    pub app: String,
    /// The program and its arguments, run without a shell. The program is a path, or a name
    /// looked up in the app's `PATH`.
    pub command: Vec<String>,
    /// Where the app starts; ondemand's own directory if None.
    pub working_dir: Option<PathBuf>,
    /// Variables set on top of what the app inherits from ondemand, after ondemand's own and its
    /// supervisor's are removed (so these may set `NOTIFY_SOCKET`, `PORT`...).
    pub env: Vec<(String, String)>,
    /// Whom the app runs as; ondemand's user if None. Switching needs root (or CAP_SETUID and
    /// CAP_SETGID).
    pub user: Option<Credentials>,
    /// The app's nice value (-20 to 19); negative ones need root.
    pub nice: Option<i32>,
    pub io_priority: Option<IoPriority>,
    pub limits: Limits,
    /// A listening socket the app gets as systemd would hand it over.
    pub socket: Option<HandedSocket>,
}

/// A user to run an app as, looked up with [`Credentials::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// All the groups the app gets, the primary one included.
    pub groups: Vec<u32>,
    /// The user's name, for `USER` and `LOGNAME`.
    pub name: String,
    /// The user's home directory, for `HOME`.
    pub home: PathBuf,
}

/// The app's I/O scheduling class and level (0 highest to 7 lowest), as `ionice` sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoPriority {
    /// Served before everything else; needs root.
    Realtime(u8),
    BestEffort(u8),
    /// Served only when no one else wants the disk.
    Idle,
}

/// Resource limits; each sets both the soft and the hard limit, as systemd's `Limit*=` do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Address space in bytes (`RLIMIT_AS`).
    pub memory: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
}

/// A listening socket to hand to the app: it arrives on fd 3 with `LISTEN_FDS=1`,
/// `LISTEN_FDNAMES=<name>` and `LISTEN_PID=<the app's pid>`. Shared, so the same socket can be
/// handed to every start of the app.
#[derive(Clone, Debug)]
pub struct HandedSocket {
    pub fd: Arc<OwnedFd>,
    pub name: String,
}

impl Credentials {
    /// Looks up `user`, and `group` as the primary group (the user's own if None), with all the
    /// groups the user belongs to. Errors say what is missing and how to fix it.
    pub fn lookup(user: &str, group: Option<&str>) -> Result<Credentials, String> {
        let found = User::from_name(user)
            .map_err(|e| format!("cannot look up the user {user:?}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "there is no user {user:?}: create it (`useradd --system --no-create-home \
                     {user}`) or name an existing one"
                )
            })?;
        let gid = match group {
            Some(group) => lookup_group(group)?,
            None => found.gid,
        };
        let c_name = CString::new(user)
            .map_err(|_| format!("the user name {user:?} contains a NUL byte"))?;
        let groups = getgrouplist(&c_name, gid)
            .map_err(|e| format!("cannot list the groups of the user {user:?}: {e}"))?;
        Ok(Credentials {
            uid: found.uid.as_raw(),
            gid: gid.as_raw(),
            groups: groups.iter().map(|g| g.as_raw()).collect(),
            name: found.name,
            home: found.dir,
        })
    }
}

fn lookup_group(group: &str) -> Result<nix::unistd::Gid, String> {
    let found = Group::from_name(group)
        .map_err(|e| format!("cannot look up the group {group:?}: {e}"))?
        .ok_or_else(|| {
            format!(
                "there is no group {group:?}: create it (`groupadd --system {group}`) or name an \
                 existing one"
            )
        })?;
    Ok(found.gid)
}

/// One running (or ended) app process.
///
/// Dropping it leaves the process running (tokio reaps it when it exits); call
/// [`AppProcess::stop`] to end it.
#[derive(Debug)]
pub struct AppProcess {
    app: String,
    child: Child,
    /// The app's pid, which is also its process group and session id (it runs `setsid`).
    pid: u32,
    /// How the main process ended, once it has been reaped.
    exit: Option<ExitStatus>,
    /// Until when the group may still be reaped after the main process exited: set when the
    /// exit is seen, cleared when the group is empty (see the `group` module on why not later).
    group_sweep_until: Option<Instant>,
    output: Arc<OutputTail>,
    /// The stdout and stderr reader tasks, waited for (briefly) so the last lines are in.
    readers: Vec<JoinHandle<()>>,
    output_drain_until: Option<Instant>,
}

impl AppProcess {
    /// Starts the app's process. Must be called within a tokio runtime (the output readers are
    /// tasks). The error names the app and the command.
    pub fn spawn(spec: &LaunchSpec) -> io::Result<AppProcess> {
        let mut child = start(spec).map_err(|e| cannot_start(spec, e))?;
        let pid = child
            .id()
            .ok_or_else(|| cannot_start(spec, io::Error::other("it was reaped at once")))?;
        let output = Arc::new(OutputTail::default());
        let stdout = child
            .stdout
            .take()
            .map(|pipe| output::follow(spec.app.clone(), "stdout", pipe, output.clone()));
        let stderr = child
            .stderr
            .take()
            .map(|pipe| output::follow(spec.app.clone(), "stderr", pipe, output.clone()));
        tracing::debug!(app = %spec.app, pid, "started {:?}", spec.command);
        Ok(AppProcess {
            app: spec.app.clone(),
            child,
            pid,
            exit: None,
            group_sweep_until: None,
            output,
            readers: stdout.into_iter().chain(stderr).collect(),
            output_drain_until: None,
        })
    }

    /// As [`AppProcess::spawn`], but forked on ondemand's spawner thread, so the thread that
    /// serves requests never waits for a fork and an exec (the parent of a fork waits until the
    /// child has exec'd: milliseconds on a busy machine, during which nothing else would be
    /// served). The spawner lives as long as the process, which the apps' parent-death signal
    /// needs: it follows the thread that forked.
    pub async fn spawn_off_thread(spec: LaunchSpec) -> io::Result<AppProcess> {
        let runtime = tokio::runtime::Handle::current();
        let (done, result) = tokio::sync::oneshot::channel();
        let job: SpawnJob = Box::new(move || {
            let _entered = runtime.enter();
            let _ = done.send(AppProcess::spawn(&spec));
        });
        if spawner().send(job).is_err() {
            return Err(io::Error::other("the spawner thread is gone"));
        }
        result
            .await
            .map_err(|_| io::Error::other("the spawner thread dropped the start"))?
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the app's main process to exit by itself and returns how it ended. What it
    /// leaves behind in its process group is then killed (SIGKILL) and reaped: the group is the
    /// app. Cancel-safe: can be a branch of `tokio::select!`, and called again after it returned.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = self.main_process_exit().await;
        self.sweep_group().await;
        self.drain_output().await;
        status
    }

    /// Stops the app: SIGTERM to its whole process group, and SIGKILL to the group if the main
    /// process has not exited within `stop_timeout`; then as [`AppProcess::wait`]. Returns within
    /// `stop_timeout` plus about a second even if the app ignores SIGTERM.
    pub async fn stop(&mut self, stop_timeout: Duration) -> ExitStatus {
        if self.exit.is_none() {
            group::signal(&self.app, self.group_id(), Signal::SIGTERM);
            let exited = tokio::time::timeout(stop_timeout, self.main_process_exit()).await;
            if exited.is_err() {
                tracing::warn!(
                    app = %self.app,
                    "still running {stop_timeout:?} after SIGTERM: killing it"
                );
                group::signal(&self.app, self.group_id(), Signal::SIGKILL);
            }
        }
        self.wait().await
    }

    /// The last lines (up to 20) the app wrote to stdout and stderr, oldest first.
    pub fn last_output(&self) -> Vec<String> {
        self.output.lines()
    }

    fn group_id(&self) -> i32 {
        // pids fit in pid_t, an i32, by definition.
        self.pid as i32
    }

    /// Waits for the main process to be reaped (once; later calls return the same status), then
    /// kills what is left of its group. Cancel-safe, since tokio's `Child::wait` is.
    async fn main_process_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => {
                // Only kill_strays reaps ondemand's children behind tokio's back, with SIGKILL.
                tracing::warn!(app = %self.app, "cannot wait for the app's process: {e}");
                ExitStatus::from_raw(Signal::SIGKILL as i32)
            }
        };
        // Nothing awaited since the reap: the group id is still the app's (its leftovers hold
        // it), or no one's.
        self.exit = Some(status);
        self.group_sweep_until = Some(Instant::now() + GROUP_SWEEP);
        group::signal(&self.app, self.group_id(), Signal::SIGKILL);
        status
    }

    /// Reaps the group's members as they die (those reparented to ondemand, when it is a
    /// subreaper) until none is alive, for at most [`GROUP_SWEEP`]. Cancel-safe; a no-op once
    /// done.
    async fn sweep_group(&mut self) {
        let Some(until) = self.group_sweep_until else {
            return;
        };
        loop {
            let in_time = Instant::now() < until;
            let alive = group::has_live_members(self.group_id());
            // Reaped after looking, so that when the look found only zombies, those of them that
            // are ondemand's are reaped too. Past `until` the group id may be someone else's:
            // only look, never reap.
            if in_time {
                group::reap_members(self.group_id());
            }
            if !alive {
                break;
            }
            if !in_time {
                tracing::warn!(
                    app = %self.app,
                    "processes of the app still alive {GROUP_SWEEP:?} after SIGKILL"
                );
                break;
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
        self.group_sweep_until = None;
    }

    /// Gives the output readers [`OUTPUT_DRAIN`] to log what is left in the pipes. Cancel-safe.
    async fn drain_output(&mut self) {
        let until = *self
            .output_drain_until
            .get_or_insert_with(|| Instant::now() + OUTPUT_DRAIN);
        for reader in &mut self.readers {
            // A finished JoinHandle must not be polled again.
            if !reader.is_finished() {
                let _ = tokio::time::timeout_at(until, reader).await;
            }
        }
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, started on first use.
fn spawner() -> std::sync::mpsc::Sender<SpawnJob> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnJob>>> =
        std::sync::OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (sender, jobs) = std::sync::mpsc::channel::<SpawnJob>();
        let started = std::thread::Builder::new()
            .name("ondemand-spawner".into())
            .spawn(move || {
                for job in jobs {
                    job();
                }
            });
        if let Err(e) = started {
            tracing::error!("cannot start the thread that starts apps: {e}");
        }
        std::sync::Mutex::new(sender)
    });
    sender.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Builds the command and starts it.
fn start(spec: &LaunchSpec) -> io::Result<Child> {
    let Some(name) = spec.command.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command is empty",
        ));
    };
    if let Some(dir) = &spec.working_dir {
        check_working_dir(dir, spec.user.is_some())?;
    }
    let env = child::environment(spec, std::env::vars_os());
    let program = find_program(name, path_in(&env))?;
    let mut setup = ChildSetup::new(spec, &env)?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg0(name)
        .args(&spec.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    // SAFETY: `run` makes only async-signal-safe calls on memory prepared in `ChildSetup::new`;
    // see the `child` module.
    unsafe { command.pre_exec(move || setup.run()) };
    command.spawn()
}

/// A missing working directory would otherwise fail in the child as a bare ENOENT, which reads as
/// if the program were missing. The child enters it as the app's user (after the switch): when
/// ondemand itself may not look (`as_other_user`), the child's chdir has the last word.
fn check_working_dir(dir: &Path, as_other_user: bool) -> io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Err(e) if as_other_user && e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("its working directory {} is not a directory", dir.display()),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("its working directory {}: {e}", dir.display()),
        )),
    }
}

fn path_in(env: &[(OsString, OsString)]) -> Option<&OsStr> {
    env.iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.as_os_str())
}

/// The program to execute: `name` itself if it has a slash, else the first executable file
/// called `name` in the app's `PATH` (relative entries skipped). Looked up here, as systemd does,
/// so that a missing program is reported before anything is forked.
fn find_program(name: &str, path: Option<&OsStr>) -> io::Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `app "wiki": cannot start /no/such/bin: No such file or directory (os error 2)`.
fn cannot_start(spec: &LaunchSpec, error: io::Error) -> io::Error {
    let app = &spec.app;
    let message = match spec.command.first() {
        Some(program) => format!("app {app:?}: cannot start {program}: {error}"),
        None => format!("app {app:?}: cannot start: {error}"),
    };
    io::Error::new(error.kind(), message)
}

/// How a process ended, for logs: "exited with status 3", "killed by signal SIGSEGV",
/// "killed by signal SIGKILL (core dumped)".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(number) = status.signal() else {
        return format!("ended: {status}");
    };
    let name = Signal::try_from(number).map_or_else(|_| format!("{number}"), |s| s.to_string());
    let core = if status.core_dumped() {
        " (core dumped)"
    } else {
        ""
    };
    format!("killed by signal {name}{core}")
}
