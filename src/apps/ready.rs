//! Getting an app process's socket ready before it starts, and knowing when it is ready after:
//! the unix socket ondemand binds and hands over (socket mode), the free loopback port it picks
//! (port mode), the `NOTIFY_SOCKET` it listens on, and the readiness checks (`listen`, `connect`,
//! `http:/path`, `notify`).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use tokio::net::UnixDatagram;

use super::port_owner::{self, Owner};
use super::spec::ReadyCheck;
use crate::proxy::upstream::{Address, Upstream};

/// Longest path a unix socket address can hold (sun_path, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// The directory of the apps' sockets: `<runtime_dir>/apps`, created on first use. Mode 0711:
/// an app running as another user can reach its notify socket, but no one can list the sockets.
pub fn apps_dir(runtime_dir: &Path) -> io::Result<PathBuf> {
    let dir = runtime_dir.join("apps");
    std::fs::create_dir_all(&dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot create {}: {e} (set [server] runtime_dir to a writable directory)",
                dir.display()
            ),
        )
    })?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}

/// Binds the listening unix socket handed to instance `index` of `app`; only ondemand's user
/// may connect to it (mode 0600), so no one reaches the app around ondemand.
pub fn bind_app_socket(dir: &Path, app: &str, index: usize) -> io::Result<(OwnedFd, PathBuf)> {
    let path = socket_path(dir, app, index, "sock")?;
    remove_stale(&path)?;
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((OwnedFd::from(listener), path))
}

/// Binds the datagram socket an app in `notify` mode sends `READY=1` to, owned by the app's user.
pub fn bind_notify_socket(
    dir: &Path,
    app: &str,
    index: usize,
    owner: Option<u32>,
) -> io::Result<(UnixDatagram, PathBuf)> {
    let path = socket_path(dir, app, index, "notify")?;
    remove_stale(&path)?;
    let socket = UnixDatagram::bind(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    // The mode first: once the file is the app user's, changing it would need CAP_FOWNER,
    // which ondemand does not hold when it runs unprivileged (CAP_CHOWN is enough for chown).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(uid) = owner.filter(|&uid| uid != nix::unistd::geteuid().as_raw()) {
        std::os::unix::fs::chown(&path, Some(uid), None)?;
    }
    Ok((socket, path))
}

fn socket_path(dir: &Path, app: &str, index: usize, kind: &str) -> io::Result<PathBuf> {
    let path = dir.join(format!("{app}.{index}.{kind}"));
    if path.as_os_str().len() > SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket path {} is longer than the {SUN_PATH_MAX} bytes a unix socket \
                 address can hold: set a shorter [server] runtime_dir",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// Removes a socket file left by an earlier instance; refuses to remove anything else.
fn remove_stale(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A loopback port free a moment ago, for port mode.
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until the app at `address` is ready by `check`. `notify` is the socket for
/// [`ReadyCheck::Notify`]. Runs until ready: the caller bounds it with `start_timeout` and
/// watches the process for an early exit.
///
/// In port mode `group` is the app's process group: a port that answers counts only once the
/// app holds it. While another process holds it, `taken` is set and the wait goes on (the app
/// cannot bind it, and exits).
pub async fn wait_ready(
    check: &ReadyCheck,
    address: &Address,
    notify: Option<UnixDatagram>,
    group: Option<u32>,
    taken: &AtomicBool,
) {
    let port = match address {
        Address::Tcp { port, .. } => group.map(|group| (*port, group)),
        Address::Unix(_) => None,
    };
    let answered_by_app = |answered: bool| async move {
        match port.filter(|_| answered) {
            Some((port, group)) => held_by_app(port, group, taken).await,
            None => answered,
        }
    };
    match check {
        ReadyCheck::Listen => {}
        ReadyCheck::Connect => {
            poll(address, |up| async move {
                answered_by_app(up.connect().await.is_ok()).await
            })
            .await;
        }
        ReadyCheck::Http(path) => {
            poll(address, |up| async move {
                answered_by_app(http_ok(&up, path).await).await
            })
            .await;
        }
        ReadyCheck::Notify => match notify {
            Some(socket) => wait_for_ready_datagram(&socket).await,
            None => std::future::pending().await,
        },
    }
}

/// Whether the listener on `port` is the app's (process group `group`), not another process's
/// (`taken` says which it was). Off the serving thread: it reads /proc, which on a busy host can
/// take milliseconds.
async fn held_by_app(port: u16, group: u32, taken: &AtomicBool) -> bool {
    let owner = tokio::task::spawn_blocking(move || port_owner::owner(port, group))
        .await
        .unwrap_or(Owner::Unknown);
    let other = owner == Owner::Other;
    taken.store(other, Ordering::Relaxed);
    !other
}

/// Tries `probe` every 10 ms, backing off to every 100 ms.
async fn poll<F, Fut>(address: &Address, probe: F)
where
    F: Fn(Arc<Upstream>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut pause = Duration::from_millis(10);
    loop {
        let upstream = Arc::new(Upstream::new(address.clone(), 1));
        if probe(upstream).await {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(100));
    }
}

async fn http_ok(upstream: &Upstream, path: &str) -> bool {
    let Ok((mut sender, mut driver)) = upstream.connect().await else {
        return false;
    };
    let Ok(req) = Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::USER_AGENT, "ondemand-ready-check")
        .body(crate::handlers::full(Bytes::new()))
    else {
        return false;
    };
    match driver.until(sender.send_request(req)).await {
        Ok(resp) => resp.status().is_success(),
        Err(_) => false,
    }
}

async fn wait_for_ready_datagram(socket: &UnixDatagram) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(n) = socket.recv(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.lines().any(|line| line.trim() == "READY=1") {
            return;
        }
    }
}
