//! What the app's process does between `fork` and `exec`, and the environment it is given.
//!
//! The child side ([`ChildSetup::run`]) runs in a fork of a multi-threaded process: another thread
//! may have held the allocator's lock, or any other lock, at the instant of the fork, and in the
//! child nobody will ever release it. So `run` makes only async-signal-safe libc calls on memory
//! prepared in the parent by [`ChildSetup::new`]: no allocation, no locks, no formatting, nothing
//! that can panic (a panic formats its message). Its errors are bare errno values
//! (`io::Error::last_os_error()` does not allocate), which std sends to the parent, whose `spawn`
//! then fails with them.
//!
//! # Where this runs in std's spawn
//! Read in Rust 1.95's `library/std/src/sys/process/unix/unix.rs`: with a `pre_exec` closure std
//! always forks (`posix_spawn` is skipped, lines 460-467). In the child, `do_exec` puts the stdio
//! on fds 0-2 (285-293), switches user if `Command::uid`/`gid`/`groups` asked for it (295-327),
//! changes directory (337-339), resets SIGPIPE (349-381), THEN runs the `pre_exec` closures
//! (383-385), and only after them makes its own `envp` the `environ` (392-406) — which it does only
//! when the environment was changed through `Command::env*` (`capture_env`, line 62;
//! `sys/process/env.rs` 41-47) — before `execvp` (408). Two consequences shape this module:
//! - The user is switched here, after the nice value, I/O class and limits, rather than with
//!   `Command::uid`: std would switch before our closure runs, and then a negative nice, the
//!   realtime I/O class or a raised hard limit would fail for lack of privilege (systemd, too,
//!   applies them before dropping privileges). Stable std also cannot set supplementary groups:
//!   it calls `setgroups(0)`. For the same reason the working directory is entered here, after
//!   the switch, rather than with `Command::current_dir`: ondemand's own user (unprivileged
//!   under systemd) may not be allowed into an app's directory that the app's user may enter.
//! - std's `envp` cannot be patched in place: it is not yet `environ` when the closure runs, and
//!   nothing else reaches it. So the `Command`'s environment is never touched (std then never
//!   replaces `environ`), and the closure points `environ` at a block built here in the parent,
//!   after writing the child's own pid into its `LISTEN_PID=` entry.

use std::ffi::{c_char, c_int, c_uint, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

use super::{IoPriority, LaunchSpec};
use crate::apps::privilege::Switch;

/// The fd the handed-over socket gets in the app, as under systemd (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Variables that are ondemand's own or its supervisor's, never the app's: systemd's socket
/// activation and notification protocol (they describe ondemand's sockets and ondemand's pid), and
/// ondemand's configuration.
const NOT_INHERITED: [&str; 8] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "ONDEMAND_CONFIG",
    "ONDEMAND_LOG",
];

/// Where the fallback for kernels without `close_range` (before 5.9) stops looking for fds.
const FALLBACK_FD_LIMIT: c_int = 65_536;

/// Decimal digits of the largest pid (`pid_t` is an i32); `LISTEN_PID`'s placeholder is this long.
const PID_DIGITS: usize = 10;

/// The app's environment: what ondemand inherited minus [`NOT_INHERITED`], the user's identity
/// when switching user, then `spec.env`, then the socket hand-over variables (which must describe
/// the socket actually handed over, whatever `spec.env` says). `LISTEN_PID` is added by
/// [`ChildEnv`], which alone can know the child's pid.
pub(super) fn environment(
    spec: &LaunchSpec,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = inherited
        .into_iter()
        .filter(|(key, _)| !NOT_INHERITED.iter().any(|name| key == name))
        .collect();
    if let Some(user) = &spec.user {
        set(&mut env, "USER", &user.name);
        set(&mut env, "LOGNAME", &user.name);
        set(&mut env, "HOME", &user.home);
    }
    for (key, value) in &spec.env {
        set(&mut env, key, value);
    }
    if let Some(socket) = &spec.socket {
        set(&mut env, "LISTEN_FDS", "1");
        set(&mut env, "LISTEN_FDNAMES", &socket.name);
        env.retain(|(key, _)| key != "LISTEN_PID");
    }
    env
}

/// Sets `key` in `env`, replacing an earlier value.
fn set(env: &mut Vec<(OsString, OsString)>, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
    let (key, value) = (key.as_ref(), value.as_ref().to_owned());
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => env.push((key.to_owned(), value)),
    }
}

/// Everything the child does before `exec`, prepared in the parent.
pub(super) struct ChildSetup {
    nice: Option<c_int>,
    /// Already in the form `ioprio_set` takes.
    io_priority: Option<c_int>,
    memory_limit: Option<libc::rlim_t>,
    open_files_limit: Option<libc::rlim_t>,
    /// The listening socket to put on fd 3.
    socket: Option<RawFd>,
    /// A copy of the socket above fd 2, when the caller's was on 0-2 (std puts the stdio there
    /// before our closure runs). Held only so it stays open until the spawn is over.
    _socket_copy: Option<OwnedFd>,
    user: Option<UserSwitch>,
    /// Entered after the user switch, as the app's user: ondemand itself may not be allowed in.
    working_dir: Option<CString>,
    env: ChildEnv,
    /// ondemand's pid, to notice that it died before the parent-death signal was armed.
    parent: libc::pid_t,
}

/// The ids to switch to; each part only when it differs from ondemand's own (setgroups needs
/// CAP_SETGID even to set the groups a process already has).
struct UserSwitch {
    uid: Option<libc::uid_t>,
    groups: Option<(libc::gid_t, Vec<libc::gid_t>)>,
}

impl ChildSetup {
    /// Prepares, in the parent, everything [`ChildSetup::run`] needs. `env` is the app's full
    /// environment (from [`environment`]).
    pub(super) fn new(spec: &LaunchSpec, env: &[(OsString, OsString)]) -> io::Result<ChildSetup> {
        let (socket, socket_copy) = match &spec.socket {
            Some(handed) => socket_above_stdio(handed.fd.as_raw_fd())?,
            None => (None, None),
        };
        Ok(ChildSetup {
            nice: spec.nice,
            io_priority: spec.io_priority.map(IoPriority::encode).transpose()?,
            memory_limit: spec.limits.memory,
            open_files_limit: spec.limits.open_files,
            socket,
            _socket_copy: socket_copy,
            user: spec.user.as_ref().map(|user| {
                let switch = Switch::to(user.uid, user.gid, &user.groups);
                UserSwitch {
                    uid: switch.uid.then_some(user.uid),
                    groups: switch.groups.then(|| (user.gid, user.groups.clone())),
                }
            }),
            working_dir: spec
                .working_dir
                .as_ref()
                .map(|dir| CString::new(dir.as_os_str().as_bytes()))
                .transpose()
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "its working directory contains a NUL byte",
                    )
                })?,
            env: ChildEnv::new(env, spec.socket.is_some())?,
            // SAFETY: getpid cannot fail.
            parent: unsafe { libc::getpid() },
        })
    }

    /// Runs in the child between fork and exec: async-signal-safe calls only (see the module
    /// docs). The order matters: the session first (so even a failed start leaves nothing in
    /// ondemand's group), everything that may need privilege before the user switch, and the
    /// environment last.
    pub(super) fn run(&mut self) -> io::Result<()> {
        // SAFETY (all blocks below): plain system calls on values owned by `self`.
        check(unsafe { libc::setsid() })?;
        if let Some(nice) = self.nice {
            check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) })?;
        }
        if let Some(priority) = self.io_priority {
            check(unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, priority) })?;
        }
        if let Some(bytes) = self.memory_limit {
            check(unsafe { libc::setrlimit(libc::RLIMIT_AS, &both(bytes)) })?;
        }
        if let Some(files) = self.open_files_limit {
            check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &both(files)) })?;
        }
        let first_other_fd = match self.socket {
            Some(fd) => hand_over_socket(fd)? + 1,
            None => LISTEN_FDS_START,
        };
        close_on_exec_from(first_other_fd)?;
        if let Some(user) = &self.user {
            switch_user(user)?;
        }
        if let Some(dir) = &self.working_dir {
            check(unsafe { libc::chdir(dir.as_ptr()) })?;
        }
        // If ondemand itself is killed (SIGKILL, the OOM killer), its apps get SIGTERM rather
        // than running on unsupervised. Armed after the user switch, which clears it. (The signal
        // follows the thread that forked: the spawner thread, which lives as long as ondemand.)
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) })?;
        if unsafe { libc::getppid() } != self.parent {
            return Err(io::Error::other(
                "ondemand exited while the app was being started",
            ));
        }
        self.env.write_listen_pid();
        self.env.install();
        Ok(())
    }
}

/// `ioprio_set`'s "which": the process (or thread) given by "who", 0 meaning the caller.
const IOPRIO_WHO_PROCESS: c_int = 1;
/// How far `ioprio_set` shifts the class above the level.
const IOPRIO_CLASS_SHIFT: c_int = 13;

impl IoPriority {
    /// The value `ioprio_set` takes: the class above the level (0 highest to 7 lowest).
    fn encode(self) -> io::Result<c_int> {
        let (class, level) = match self {
            IoPriority::Realtime(level) => (1, level),
            IoPriority::BestEffort(level) => (2, level),
            IoPriority::Idle => (3, 0),
        };
        if level > 7 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the io priority level {level} is out of range: 0 (highest) to 7 (lowest)"),
            ));
        }
        Ok(class << IOPRIO_CLASS_SHIFT | c_int::from(level))
    }
}

/// Returns the socket's fd, moved to a new close-on-exec fd above 2 if it is on 0-2 (std replaces
/// those with the stdio in the child), with that copy to keep open until the spawn is done.
fn socket_above_stdio(fd: RawFd) -> io::Result<(Option<RawFd>, Option<OwnedFd>)> {
    if fd >= LISTEN_FDS_START {
        return Ok((Some(fd), None));
    }
    // SAFETY: the caller's fd is only borrowed for the fcntl; `moved` is new and ours alone.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let moved = fcntl(borrowed, FcntlArg::F_DUPFD_CLOEXEC(LISTEN_FDS_START))?;
    Ok((Some(moved), Some(unsafe { OwnedFd::from_raw_fd(moved) })))
}

/// Child side. Puts the socket on fd 3 without close-on-exec, as systemd does; returns 3.
///
/// std's own fds in the child (its stdio pipes and the socket it reports exec errors on) are
/// opened in `spawn` in that order (unix.rs lines 71 and 78), taking the lowest free fds, so
/// whatever dup2 replaces on fd 3 is one of the pipes' spare ends or /dev/null, never the error
/// socket (unless another thread frees fd 3 in between).
fn hand_over_socket(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl and dup2 on fds this process owns.
    if fd == LISTEN_FDS_START {
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        check(flags)?;
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) })?;
    } else {
        // The copy dup2 makes never has close-on-exec.
        check(unsafe { libc::dup2(fd, LISTEN_FDS_START) })?;
    }
    Ok(LISTEN_FDS_START)
}

/// Child side. Marks every fd from `first` up close-on-exec, so the app gets only its stdio and
/// the handed-over socket even if some fd in ondemand was opened without `O_CLOEXEC` (by a
/// library, say). Marked rather than closed: std reports a failed exec to the parent over a
/// close-on-exec socket among those fds, and closing it would turn that error into a successful
/// spawn of nothing.
fn close_on_exec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range only changes fd flags. `first` is 3 or 4.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as c_uint,
            c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // ENOSYS: no close_range (Linux < 5.9); EINVAL: no CLOSE_RANGE_CLOEXEC (< 5.11).
    if !matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
        return Err(error);
    }
    for fd in first..FALLBACK_FD_LIMIT {
        // SAFETY: fcntl on fds that are not open fails with EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Child side. The same calls, in the same order, as std's `Command::uid`/`gid`/`groups`
/// (unix.rs lines 297-325), which std makes at this same point in the child.
fn switch_user(user: &UserSwitch) -> io::Result<()> {
    // SAFETY: the groups slice outlives the call; the rest are plain system calls.
    if let Some((gid, groups)) = &user.groups {
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
        check(unsafe { libc::setgid(*gid) })?;
    }
    if let Some(uid) = user.uid {
        check(unsafe { libc::setuid(uid) })?;
    }
    Ok(())
}

/// A soft and hard limit both set to `value`, as systemd's `LimitNOFILE=n` does.
fn both(value: libc::rlim_t) -> libc::rlimit {
    libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    }
}

/// Turns a libc "-1 and errno" result into an `io::Result` without allocating.
fn check(ret: impl Into<i64>) -> io::Result<()> {
    if ret.into() == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The app's environment in the form `execve` wants, built in the parent so that the child only
/// writes its pid into it and points `environ` at it.
struct ChildEnv {
    /// Each variable as `KEY=value\0`, back to back. Never reallocated after `new`.
    block: Vec<u8>,
    /// A pointer to each variable in `block`, then a null.
    pointers: Vec<*const c_char>,
    /// Where the placeholder digits of the `LISTEN_PID=` entry are in `block`, if there is one.
    listen_pid_digits: Option<usize>,
}

// SAFETY: `pointers` point into `block`, owned by the same struct and never reallocated. Only the
// forked child reads through them (its libc, and execve); the parent never does.
unsafe impl Send for ChildEnv {}
unsafe impl Sync for ChildEnv {}

impl ChildEnv {
    /// Builds the block from `vars`, plus a `LISTEN_PID=` placeholder entry if `listen_pid`.
    fn new(vars: &[(OsString, OsString)], listen_pid: bool) -> io::Result<ChildEnv> {
        let placeholder = [b'0'; PID_DIGITS];
        let listen_pid_entry = (OsStr::new("LISTEN_PID"), OsStr::from_bytes(&placeholder));
        let entries = vars
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
            .chain(listen_pid.then_some(listen_pid_entry));
        let mut block = Vec::new();
        let mut starts = Vec::new();
        let mut listen_pid_digits = None;
        for (key, value) in entries {
            let (key, value) = (key.as_bytes(), value.as_bytes());
            if key.contains(&0) || value.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the environment variable {} contains a NUL byte",
                        String::from_utf8_lossy(key)
                    ),
                ));
            }
            starts.push(block.len());
            block.extend_from_slice(key);
            block.push(b'=');
            if listen_pid && key == b"LISTEN_PID" {
                listen_pid_digits = Some(block.len());
            }
            block.extend_from_slice(value);
            block.push(0);
        }
        // `as_mut_ptr` (unlike indexing) keeps these pointers valid alongside the later in-place
        // write of the pid, which goes through `as_mut_ptr` too.
        let base = block.as_mut_ptr();
        let pointers = starts
            .iter()
            // SAFETY: every start is an offset inside `block`.
            .map(|&start| unsafe { base.add(start) } as *const c_char)
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(ChildEnv {
            block,
            pointers,
            listen_pid_digits,
        })
    }

    /// Child side. Overwrites the `LISTEN_PID` placeholder with this process's pid, which after
    /// exec is the app's pid: `sd_listen_fds` (and gunicorn, and others) ignore the sockets unless
    /// `LISTEN_PID` is their own pid.
    fn write_listen_pid(&mut self) {
        let Some(at) = self.listen_pid_digits else {
            return;
        };
        let mut digits = [0u8; PID_DIGITS];
        // SAFETY: getpid cannot fail.
        let start = decimal(unsafe { libc::getpid() }.unsigned_abs(), &mut digits);
        let pid = &digits[start..];
        let base = self.block.as_mut_ptr();
        // SAFETY: the placeholder has PID_DIGITS bytes and a NUL after them, so `at` to
        // `at + PID_DIGITS` is inside `block`; the pid and its NUL take at most that.
        unsafe {
            std::ptr::copy_nonoverlapping(pid.as_ptr(), base.add(at), pid.len());
            *base.add(at + pid.len()) = 0;
        }
    }

    /// Child side. Makes the block the process's environment, which std's `execvp` passes on
    /// (without searching `PATH`: the parent has already turned the program into a path).
    fn install(&self) {
        // SAFETY: the pointer array and the strings it points to live until exec, and no other
        // thread exists in the child to read `environ` concurrently.
        unsafe { libc::environ = self.pointers.as_ptr() as *mut *mut c_char };
    }
}

/// Writes `n` in decimal at the end of `digits` and returns where it starts. By hand, because the
/// child must not allocate (no `format!`).
fn decimal(mut n: u32, digits: &mut [u8; PID_DIGITS]) -> usize {
    let mut start = PID_DIGITS;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal_string(n: u32) -> String {
        let mut digits = [0u8; PID_DIGITS];
        let start = decimal(n, &mut digits);
        String::from_utf8_lossy(&digits[start..]).into_owned()
    }

    #[test]
    fn pids_are_written_in_decimal_without_padding() {
        for n in [0, 7, 10, 4_194_304, u32::MAX] {
            assert_eq!(decimal_string(n), n.to_string());
        }
    }

    #[test]
    fn listen_pid_is_written_in_place() {
        let vars = [("A".into(), "1".into())];
        let mut env = ChildEnv::new(&vars, true).unwrap();
        env.write_listen_pid();
        let pid = std::process::id().to_string();
        let block = String::from_utf8_lossy(&env.block);
        assert!(
            block.starts_with(&format!("A=1\0LISTEN_PID={pid}\0")),
            "{block:?}"
        );
        assert_eq!(env.pointers.len(), 3, "two entries and the null");
        assert!(env.pointers[2].is_null());
    }

    #[test]
    fn nul_bytes_in_the_environment_are_refused() {
        let vars = [("A".into(), OsStr::from_bytes(b"x\0y").to_owned())];
        let error = ChildEnv::new(&vars, false).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains('A'), "{error}");
    }

    #[test]
    fn io_priority_levels_are_checked() {
        assert_eq!(IoPriority::BestEffort(4).encode().unwrap(), 2 << 13 | 4);
        assert_eq!(IoPriority::Idle.encode().unwrap(), 3 << 13);
        assert!(IoPriority::Realtime(8).encode().is_err());
    }
}
