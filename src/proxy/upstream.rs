//! One upstream: where it is (TCP or unix socket), its pool of kept-alive HTTP/1.1 connections,
//! how many requests it has in flight, and whether it is believed dead.
//!
//! Hand-written on hyper's connection-level client rather than hyper-util's pooled `Client`:
//! a connection is made *before* the request is handed over, so a refused connect gives the
//! request back untouched and it can go to another upstream (a POST body included), and a pooled
//! connection found closed hands the request back too. hyper-util's client consumes the request
//! on every error.
//!
//! A connection is run by the request that uses it, not by a task of its own: hyper's connection
//! future ([`Driver`]) is polled together with the request's response (and then by the response
//! body), so the request is written upstream in the same turn that read it from the client, and
//! the response is read in the turn the upstream's answer wakes, with no hop through another
//! task each way. An idle connection in the pool is polled by nobody; an upstream's close is seen
//! when the connection is next taken (one poll, no system call unless the socket became readable)
//! or swept.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::handlers::Body;
use crate::socket_write::SocketWriter;

/// Idle pooled connections are closed after this: below the keep-alive timeout of common app
/// servers (gunicorn 2 s, node 5 s), so ondemand rarely reuses a connection the upstream is
/// closing at that very moment.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Most idle connections kept per upstream.
const POOL_MAX_IDLE: usize = 256;
/// How long an upstream that refused a connection is skipped before it is tried again.
const DEAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where an upstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `http://host:port`; the host is resolved when a connection is made.
    Tcp { host: String, port: u16 },
    /// `unix:/path/to.sock`.
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => {
                write!(f, "http://[{host}]:{port}")
            }
            Address::Tcp { host, port } => write!(f, "http://{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Address {
    /// Parses `http://host:port` (port defaults to 80) or `unix:/absolute/path`.
    pub fn parse(text: &str) -> Result<Address, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "upstream {text:?}: a unix socket path must be absolute (unix:/run/app.sock)"
                ));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if text.starts_with("https://") {
            return Err(format!(
                "upstream {text:?}: https upstreams are not supported; use http:// or unix:"
            ));
        }
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("upstream {text:?}: {e} (write it like \"http://127.0.0.1:9000\" or \"unix:/run/app.sock\")"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "upstream {text:?}: write it like \"http://127.0.0.1:9000\" or \"unix:/run/app.sock\""
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "upstream {text:?}: an upstream is an address only, without a path; \
                 the request's path is sent as is (use strip_prefix to remove the app's path)"
            ));
        }
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("upstream {text:?} has no host"));
        }
        Ok(Address::Tcp {
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(80),
        })
    }
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {address}: {source}")]
pub struct ConnectError {
    pub address: String,
    #[source]
    pub source: std::io::Error,
}

/// An upstream and its connections.
pub struct Upstream {
    pub address: Address,
    /// Relative share of traffic among the app's upstreams (0 = none unless asked for directly).
    pub weight: u32,
    idle: Mutex<Vec<Idle>>,
    /// A sweep of the pool is scheduled (see [`Upstream::sweep_later`]).
    sweep_scheduled: AtomicBool,
    in_flight: AtomicUsize,
    /// Set when a connect was refused; the upstream is skipped until then.
    dead_until: Mutex<Option<Instant>>,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    driver: Driver,
    since: Instant,
}

/// One upstream connection's I/O: hyper's connection future, which writes the requests its
/// `SendRequest` hands over and reads the responses whenever it is polled (see the module docs).
pub struct Driver(Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>);

impl Driver {
    /// Runs the connection as far as it can go now. Ready once it has ended: closed by either
    /// side, failed, or handed over to a protocol switch; it stays ended.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(conn) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        let Poll::Ready(result) = conn.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        if let Err(e) = result {
            tracing::trace!("upstream connection ended: {e}");
        }
        self.0 = None;
        Poll::Ready(())
    }

    /// Polls an idle connection once with no task to wake: false when it has ended (the
    /// upstream closed it).
    fn is_open(&mut self) -> bool {
        self.poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }

    /// Waits for `response` (of a request just handed to this connection's `SendRequest`) while
    /// running the connection, which sends the request and reads the response.
    pub async fn until<F: Future>(&mut self, response: F) -> F::Output {
        let mut response = std::pin::pin!(response);
        std::future::poll_fn(|cx| {
            let _ = self.poll(cx);
            response.as_mut().poll(cx)
        })
        .await
    }

    /// Lets the connection run on in a task of its own: after a protocol switch, whose tunnel
    /// takes the connection's I/O once hyper hands it over.
    pub fn spawn(mut self) {
        if self.0.is_some() {
            tokio::spawn(async move { std::future::poll_fn(|cx| self.poll(cx)).await });
        }
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("address", &self.address)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

/// A connection ready for one request, and whether (and how long) it sat in the pool.
pub struct Connection {
    pub sender: http1::SendRequest<Body>,
    pub driver: Driver,
    /// How long it was idle in the pool; `None` for a new connection.
    pub idle_for: Option<Duration>,
}

impl Upstream {
    pub fn new(address: Address, weight: u32) -> Upstream {
        Upstream {
            address,
            weight,
            idle: Mutex::new(Vec::new()),
            sweep_scheduled: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            dead_until: Mutex::new(None),
        }
    }

    /// Requests sent to this upstream whose response has not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// True while the upstream is skipped after a refused connect.
    pub fn is_dead(&self) -> bool {
        lock(&self.dead_until).is_some_and(|t| Instant::now() < t)
    }

    fn mark_dead(&self) {
        *lock(&self.dead_until) = Some(Instant::now() + DEAD_RETRY_AFTER);
    }

    fn mark_alive(&self) {
        lock(&self.dead_until).take();
    }

    /// A new connection, never from the pool.
    pub async fn connect(&self) -> Result<(http1::SendRequest<Body>, Driver), ConnectError> {
        match self.open().await {
            Ok(conn) => {
                self.mark_alive();
                Ok(conn)
            }
            Err(source) => {
                self.mark_dead();
                Err(ConnectError {
                    address: self.address.to_string(),
                    source,
                })
            }
        }
    }

    async fn open(&self) -> std::io::Result<(http1::SendRequest<Body>, Driver)> {
        match &self.address {
            Address::Tcp { host, port } => {
                let stream = connect_tcp(host, *port).await?;
                let _ = stream.set_nodelay(true);
                handshake(SocketWriter(stream)).await
            }
            Address::Unix(path) => handshake(SocketWriter(UnixStream::connect(path).await?)).await,
        }
    }

    /// A connection from the pool, if it has one ready. `now`: about now (a time read for the
    /// request being sent, to spare a clock read).
    pub fn pooled(&self, now: Instant) -> Option<Connection> {
        let mut idle = lock(&self.idle);
        while let Some(mut conn) = idle.pop() {
            let idle_for = now.saturating_duration_since(conn.since);
            if idle_for < POOL_IDLE_TIMEOUT && conn.sender.is_ready() && conn.driver.is_open() {
                return Some(Connection {
                    sender: conn.sender,
                    driver: conn.driver,
                    idle_for: Some(idle_for),
                });
            }
        }
        None
    }

    /// Returns a connection to the pool once hyper has finished the previous exchange on it:
    /// at once when it already has (run once more with `cx`, the caller's task, it finishes
    /// the response it just read), else from a task that runs it until it has (a request body
    /// still being sent after the response ended).
    pub fn give_back(
        self: &Arc<Self>,
        mut sender: http1::SendRequest<Body>,
        mut driver: Driver,
        cx: &mut Context<'_>,
    ) {
        let mut ready = sender.poll_ready(cx);
        if ready.is_pending() {
            if driver.poll(cx).is_ready() {
                return;
            }
            ready = sender.poll_ready(cx);
        }
        match ready {
            Poll::Ready(Ok(())) => self.pool(sender, driver),
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                let upstream = self.clone();
                tokio::spawn(async move {
                    let ready = std::future::poll_fn(|cx| {
                        if driver.poll(cx).is_ready() {
                            return Poll::Ready(false);
                        }
                        sender.poll_ready(cx).map(|r| r.is_ok())
                    })
                    .await;
                    if ready {
                        upstream.pool(sender, driver);
                    }
                });
            }
        }
    }

    fn pool(self: &Arc<Self>, sender: http1::SendRequest<Body>, driver: Driver) {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        // Expired and closed connections are dropped by the sweep (`sweep_later`), and skipped
        // by `pooled` until then.
        if idle.len() < POOL_MAX_IDLE {
            idle.push(Idle {
                sender,
                driver,
                since: now,
            });
        }
        drop(idle);
        self.sweep_later();
    }

    /// Makes sure the pool is swept when its oldest connection expires: the sweep is what drops
    /// expired and closed connections, with or without traffic (without it, an upstream that
    /// gets no more requests would keep its idle connections open for as long as the upstream
    /// does). One sleeping task per upstream at most, and only while its pool is not empty.
    fn sweep_later(self: &Arc<Self>) {
        // Read before written: under traffic a sweep is almost always scheduled already.
        if self.sweep_scheduled.load(Ordering::Relaxed)
            || self.sweep_scheduled.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let upstream = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(upstream) = upstream.upgrade() else {
                        return;
                    };
                    let now = Instant::now();
                    let mut idle = lock(&upstream.idle);
                    idle.retain_mut(|c| {
                        now.duration_since(c.since) < POOL_IDLE_TIMEOUT && c.driver.is_open()
                    });
                    match idle.first() {
                        Some(oldest) => oldest.since + POOL_IDLE_TIMEOUT,
                        None => {
                            upstream.sweep_scheduled.store(false, Ordering::Release);
                            return;
                        }
                    }
                };
                tokio::time::sleep_until(next).await;
            }
        });
    }
}

async fn connect_tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return TcpStream::connect(SocketAddr::new(ip, port)).await;
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} has no address"))))
}

async fn handshake<S>(stream: S) -> std::io::Result<(http1::SendRequest<Body>, Driver)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    Ok((sender, Driver(Some(Box::pin(connection.with_upgrades())))))
}

/// A request counted in flight on an upstream.
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream at `addr`, weight 1.
    fn upstream_at(addr: SocketAddr) -> Arc<Upstream> {
        Arc::new(Upstream::new(
            Address::parse(&format!("http://{addr}")).unwrap(),
            1,
        ))
    }

    /// Opens a new connection to `up`, runs it until it is ready for a request, and pools it.
    async fn pool_new_connection(up: &Arc<Upstream>) {
        let (mut sender, mut driver) = up.connect().await.unwrap();
        driver.until(sender.ready()).await.unwrap();
        up.pool(sender, driver);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("http://127.0.0.1:9000").unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            }
        );
        assert_eq!(
            Address::parse("http://[::1]:9000/").unwrap().to_string(),
            "http://[::1]:9000"
        );
        assert_eq!(
            Address::parse("http://backend").unwrap(),
            Address::Tcp {
                host: "backend".into(),
                port: 80
            }
        );
        assert_eq!(
            Address::parse("unix:/run/app.sock").unwrap(),
            Address::Unix("/run/app.sock".into())
        );
        for bad in [
            "unix:run/app.sock",
            "https://x:1",
            "ftp://x",
            "http://x:1/base",
            "127.0.0.1:9000",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[tokio::test]
    async fn a_refused_connect_marks_the_upstream_dead_for_a_while() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let up = Upstream::new(
            Address::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            1,
        );
        assert!(!up.is_dead());
        let err = up.connect().await.err().unwrap();
        assert!(err
            .to_string()
            .contains("cannot connect to http://127.0.0.1:"));
        assert!(up.is_dead());
    }

    /// The pool is a stack whose bottom expires: the newest connection is taken first, and a
    /// connection idle for POOL_IDLE_TIMEOUT is gone once another joins. (Each is pooled ready
    /// for a request, as `give_back` does.)
    #[tokio::test(start_paused = true)]
    async fn the_pool_hands_out_the_newest_and_drops_the_expired() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while held.len() < 3 {
                held.push(listener.accept().await.unwrap().0);
            }
            held
        });
        let up = upstream_at(addr);
        pool_new_connection(&up).await; // the oldest
        tokio::time::advance(Duration::from_millis(1000)).await;
        pool_new_connection(&up).await;
        tokio::time::advance(Duration::from_millis(600)).await;
        pool_new_connection(&up).await; // the newest
        assert_eq!(
            lock(&up.idle).len(),
            2,
            "the oldest (idle 1.6 s) is dropped"
        );
        let now = Instant::now();
        let first = up.pooled(now).unwrap();
        assert_eq!(first.idle_for, Some(Duration::ZERO));
        let second = up.pooled(now).unwrap();
        assert_eq!(second.idle_for, Some(Duration::from_millis(600)));
        assert!(up.pooled(now).is_none());
        drop(server.await.unwrap());
    }

    /// Nobody runs an idle pooled connection: one the upstream closed meanwhile is found closed
    /// when it is next taken (its end read then), and never handed out.
    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = upstream_at(addr);
        pool_new_connection(&up).await;
        let (accepted_kept, _) = listener.accept().await.unwrap();
        pool_new_connection(&up).await;
        let (accepted_closed, _) = listener.accept().await.unwrap();
        drop(accepted_closed);
        // On loopback the close has reached this side when `drop` returns; a yield gives the
        // runtime one turn of its I/O driver, which notes the socket readable.
        tokio::task::yield_now().await;
        let first = up.pooled(Instant::now()).expect("the open connection");
        assert!(first.sender.is_ready());
        assert!(
            up.pooled(Instant::now()).is_none(),
            "the closed one is dropped"
        );
        drop(accepted_kept);
    }

    /// An upstream that gets no more requests: its idle connections are closed once they
    /// expire, not kept open for as long as the upstream would (the upstream reads their end).
    #[tokio::test]
    async fn an_unused_pool_is_swept_and_its_connections_closed() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = upstream_at(addr);
        pool_new_connection(&up).await;
        let (mut accepted, _) = listener.accept().await.unwrap();
        assert_eq!(lock(&up.idle).len(), 1);
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(POOL_IDLE_TIMEOUT * 4, accepted.read(&mut buf))
            .await
            .expect("the idle connection is closed once it expires");
        assert_eq!(read.unwrap(), 0, "closed without a byte sent");
        assert!(lock(&up.idle).is_empty());
        assert!(
            !up.sweep_scheduled.load(Ordering::Acquire),
            "the sweep ends with the pool"
        );
    }
}
