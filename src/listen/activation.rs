//! Taking over the sockets a supervisor hands us: systemd's `LISTEN_FDS` protocol and xinetd's
//! `wait = yes` convention (fds 0, 1 and 2 are all the listening socket).
//!
//! Both functions change the process's file descriptors and environment and must run at the very
//! start of `main`, while the process is still single-threaded and before anything can print.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::socket::{getsockopt, sockopt};

use super::{Listener, NamedListener, Origin};

/// The fd systemd's first socket arrives on.
const SD_LISTEN_FDS_START: RawFd = 3;

/// True when `fd` is a socket in the listening state.
fn is_listening(fd: impl AsFd) -> bool {
    getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false)
}

/// Under xinetd `wait = yes`, fd 0 (and 1 and 2) is the listening socket. If so, moves it to a new
/// close-on-exec fd and puts /dev/null on 0, 1 and 2, so that nothing written to stdout or stderr
/// can reach the socket (or fail with EPIPE and panic). Returns the socket, or None if fd 0 is not
/// a listening socket.
///
/// Skipped when `LISTEN_FDS` is set: then systemd is the supervisor, whatever fd 0 is.
pub fn take_xinetd_socket() -> Result<Option<NamedListener>> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        return Ok(None);
    }
    // SAFETY: fd 0 is only borrowed for the getsockopt call.
    let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
    if !is_listening(stdin) {
        return Ok(None);
    }
    let moved = fcntl(stdin, FcntlArg::F_DUPFD_CLOEXEC(SD_LISTEN_FDS_START))
        .context("cannot move the listening socket xinetd passed on fd 0 to a new fd")?;
    // SAFETY: `moved` is a fresh fd that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(moved) };
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto 0-2 replaces the socket copies; `null` stays owned by us and is closed
        // when it drops (it is above 2, since 0-2 were all in use).
        if unsafe { nix::libc::dup2(null.as_raw_fd(), fd) } < 0 {
            bail!(
                "cannot put /dev/null on fd {fd}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let listener = listener_from_fd(socket, "xinetd fd 0")?;
    Ok(Some(NamedListener {
        name: "http".into(),
        listener,
        origin: Origin::Xinetd,
    }))
}

/// Takes the sockets systemd passed with `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`, marks them
/// close-on-exec and removes the three variables from the environment (so no child ever sees them).
///
/// # Safety
/// Changes the environment: call only while the process is single-threaded.
pub unsafe fn take_systemd_sockets() -> Result<Vec<NamedListener>> {
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // listenfd checks LISTEN_PID against our pid, validates each fd's socket type, sets
    // FD_CLOEXEC, and removes LISTEN_PID and LISTEN_FDS.
    let mut fds = listenfd::ListenFd::from_env();
    unsafe { std::env::remove_var("LISTEN_FDNAMES") };
    let names: Vec<String> = match names {
        Some(n) if !n.is_empty() => n.split(':').map(str::to_string).collect(),
        _ => vec!["http".to_string(); fds.len()],
    };
    if names.len() != fds.len() {
        bail!(
            "LISTEN_FDNAMES names {} sockets but LISTEN_FDS says {}: the supervisor's hand-over is inconsistent",
            names.len(),
            fds.len()
        );
    }
    let mut listeners = Vec::with_capacity(fds.len());
    for (idx, name) in names.into_iter().enumerate() {
        let fd = SD_LISTEN_FDS_START + idx as RawFd;
        let what = format!("inherited socket {name:?} (fd {fd})");
        let raw = fds
            .take_raw_fd(idx)
            .with_context(|| format!("cannot take {what}"))?
            .with_context(|| format!("{what} was already taken"))?;
        // SAFETY: borrowed only to check that the fd is open before taking ownership of it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        fcntl(borrowed, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).with_context(|| {
            format!(
                "{what} is not open: the supervisor's LISTEN_FDS does not match the fds it passed"
            )
        })?;
        // SAFETY: the fd is open, systemd passed it to us, and listenfd handed over its ownership.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let listener = listener_from_fd(owned, &what)?;
        listeners.push(NamedListener {
            name,
            listener,
            origin: Origin::Systemd,
        });
    }
    Ok(listeners)
}

/// Wraps a listening socket fd as a TCP or unix-stream listener, or says why it cannot be one.
fn listener_from_fd(fd: OwnedFd, what: &str) -> Result<Listener> {
    let sock_type =
        getsockopt(&fd, sockopt::SockType).with_context(|| format!("{what} is not a socket"))?;
    if sock_type != nix::sys::socket::SockType::Stream {
        bail!(
            "{what} is a {sock_type:?} socket; ondemand serves stream sockets only (ListenStream=)"
        );
    }
    if !is_listening(&fd) {
        bail!(
            "{what} is not listening: it is a single connection. Set Accept=no in the socket unit \
             (or wait = yes in xinetd), so ondemand gets the listening socket"
        );
    }
    let addr: nix::sys::socket::SockaddrStorage = nix::sys::socket::getsockname(fd.as_raw_fd())
        .with_context(|| format!("cannot read the address of {what}"))?;
    if addr.as_unix_addr().is_some() {
        Ok(Listener::Unix(UnixListener::from(fd)))
    } else if addr.as_sockaddr_in().is_some() || addr.as_sockaddr_in6().is_some() {
        Ok(Listener::Tcp(std::net::TcpListener::from(fd)))
    } else {
        bail!("{what} is neither a TCP nor a unix socket")
    }
}
