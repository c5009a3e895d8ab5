//! The sockets ondemand serves on. Three ways in, one code path: systemd passes sockets
//! (`LISTEN_FDS`), xinetd passes one on fd 0, or `--listen ADDR` binds for development. All of them
//! end up as [`NamedListener`]s, non-blocking and close-on-exec, handed to the server.
//!
//! An inherited socket is never shut down (the supervisor keeps using its copy); ondemand only
//! closes its own descriptor when it stops accepting.

pub mod activation;

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A listening socket before it is registered with the async runtime.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// Where a listener came from; decides defaults such as where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Systemd,
    Xinetd,
    CommandLine,
}

/// A listener with its socket name (`FileDescriptorName=` under systemd; "http" otherwise).
#[derive(Debug)]
pub struct NamedListener {
    pub name: String,
    pub listener: Listener,
    pub origin: Origin,
}

/// The name of the inherited socket reserved for the control socket; it never serves HTTP.
pub const CONTROL_SOCKET_NAME: &str = "control";

/// The name of sockets that speak HTTPS (TLS, then HTTP/1.1 or HTTP/2 by ALPN): systemd's
/// `FileDescriptorName=https`, xinetd's `--xinetd-socket-name https`, `--listen https://ADDR`.
/// Every other name speaks plain HTTP.
pub const HTTPS_SOCKET_NAME: &str = "https";

impl NamedListener {
    /// Sets O_NONBLOCK, as the async runtime requires. (Inherited sockets arrive blocking; the
    /// flag is shared with the supervisor's copy, which both xinetd and systemd tolerate.)
    pub fn set_nonblocking(&self) -> Result<()> {
        match &self.listener {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
        .with_context(|| format!("cannot make {self} non-blocking"))
    }

    /// True for a socket that speaks TLS (named [`HTTPS_SOCKET_NAME`]).
    pub fn speaks_tls(&self) -> bool {
        self.name == HTTPS_SOCKET_NAME
    }
}

/// Names the socket xinetd passed (`--xinetd-socket-name`): xinetd passes one socket and no name.
pub fn name_xinetd_socket(all: &mut [NamedListener], name: &str) {
    for l in all.iter_mut().filter(|l| l.origin == Origin::Xinetd) {
        l.name = name.to_string();
    }
}

impl fmt::Display for NamedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            Origin::Systemd => "from systemd",
            Origin::Xinetd => "from xinetd",
            Origin::CommandLine => "from --listen",
        };
        match &self.listener {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => write!(f, "socket {:?} on {addr} ({origin})", self.name),
                Err(_) => write!(f, "socket {:?} ({origin})", self.name),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => write!(
                    f,
                    "socket {:?} on unix:{} ({origin})",
                    self.name,
                    p.display()
                ),
                None => write!(f, "socket {:?} on a unix socket ({origin})", self.name),
            },
        }
    }
}

/// An address given to `--listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// `https://HOST:PORT`: a TCP socket named `https`, which speaks TLS.
    Https(SocketAddr),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: a unix socket path must be absolute, like unix:/run/ondemand.sock"
                ));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let (tcp, https): (&str, bool) =
            match (s.strip_prefix("https://"), s.strip_prefix("http://")) {
                (Some(addr), _) => (addr, true),
                (None, Some(addr)) => (addr, false),
                (None, None) => (s, false),
            };
        let addr = tcp.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{s:?} is not an address: use HOST:PORT (127.0.0.1:8080, [::1]:8080), \
                 https://HOST:PORT for HTTPS, or unix:/path"
            )
        })?;
        Ok(if https {
            ListenAddr::Https(addr)
        } else {
            ListenAddr::Tcp(addr)
        })
    }
}

/// Binds `addr` for `--listen`.
pub fn bind(addr: &ListenAddr) -> Result<NamedListener> {
    let listener = match addr {
        ListenAddr::Tcp(a) | ListenAddr::Https(a) => Listener::Tcp(
            std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}"))?,
        ),
        ListenAddr::Unix(path) => Listener::Unix(bind_unix(path)?),
    };
    let name = match addr {
        ListenAddr::Https(_) => HTTPS_SOCKET_NAME,
        _ => "http",
    };
    Ok(NamedListener {
        name: name.into(),
        listener,
        origin: Origin::CommandLine,
    })
}

/// Binds a unix socket, replacing a stale socket file that nothing listens on any more.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "cannot listen on unix:{}: another process is listening there",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket file {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on unix:{}", path.display()))
}

/// Every listener this process will use: inherited ones first, then `--listen` ones.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Vec<NamedListener>,
    /// The socket named `control`, kept aside for the control interface; it never serves HTTP.
    pub control: Option<NamedListener>,
}

impl Listeners {
    /// Sorts `all` into HTTP and control listeners; errors if there is nothing to serve on.
    pub fn new(all: Vec<NamedListener>) -> Result<Listeners> {
        let mut out = Listeners::default();
        for l in all {
            if l.name == CONTROL_SOCKET_NAME {
                out.control = Some(l);
            } else {
                out.http.push(l);
            }
        }
        if out.http.is_empty() {
            bail!(
                "no socket to serve on. ondemand gets its listening socket in one of three ways:\n  \
                 1. from systemd socket activation (systemctl enable --now ondemand.socket, or \
                 systemd-socket-activate -l 8080 ondemand serve),\n  \
                 2. from xinetd with wait = yes (see /etc/xinetd.d/ondemand),\n  \
                 3. with --listen ADDR for a run by hand (ondemand serve --listen 127.0.0.1:8080)"
            );
        }
        Ok(out)
    }

    /// Where these listeners came from (xinetd wins, as it decides where logs can go).
    pub fn origin(&self) -> Origin {
        let all = || self.http.iter().chain(self.control.iter());
        if all().any(|l| l.origin == Origin::Xinetd) {
            Origin::Xinetd
        } else if all().any(|l| l.origin == Origin::Systemd) {
            Origin::Systemd
        } else {
            Origin::CommandLine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "127.0.0.1:80".parse(),
            Ok(ListenAddr::Tcp(([127, 0, 0, 1], 80).into()))
        );
        assert!(matches!(
            "[::1]:8080".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp(_))
        ));
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(ListenAddr::Unix("/run/x.sock".into()))
        );
        assert!("unix:relative".parse::<ListenAddr>().is_err());
        assert_eq!(
            "https://127.0.0.1:8443".parse(),
            Ok(ListenAddr::Https(([127, 0, 0, 1], 8443).into()))
        );
        assert_eq!(
            "http://127.0.0.1:80".parse(),
            Ok(ListenAddr::Tcp(([127, 0, 0, 1], 80).into()))
        );
        assert!("8080"
            .parse::<ListenAddr>()
            .unwrap_err()
            .contains("HOST:PORT"));
    }
}
