//! Accepting connections and serving each one: HTTP/1.1 with keep-alive and h2c (prior knowledge)
//! on the same socket, or on a socket that speaks TLS, HTTP/1.1 and HTTP/2 after the handshake
//! (by ALPN); with the connection limit, the head deadlines and a graceful close on shutdown.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::io::{ConnState, DeadlineIo, Deadlines};
use super::proxy_protocol::{self, Client, Refused, Rewind};
use super::{request, Shared};
use crate::socket_write::SocketWriter;

/// A listener registered with the runtime.
pub enum AsyncListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// What every connection task needs.
#[derive(Clone)]
pub struct ConnContext {
    pub shared: Arc<Shared>,
    /// Cancelled when the launcher stops: connections finish their current work and close.
    pub draining: CancellationToken,
    /// Tracks connection tasks so the drain can wait for them.
    pub tasks: TaskTracker,
}

/// Accepts on `listener` until `stop` is cancelled. A permit from `slots` is taken before each
/// accept, so at most `max_connections` are served and the rest wait in the kernel's queue.
/// Connections still in that queue when accepting stops are left for the supervisor's next start.
/// With `tls`, every connection begins with a TLS handshake. `name` describes the socket in logs;
/// `socket_name` is what `proxy_protocol` names it by.
pub async fn accept_loop(
    listener: AsyncListener,
    name: String,
    socket_name: String,
    tls: bool,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    ctx: ConnContext,
) {
    let config = ctx.shared.config.load();
    // (An unusable configuration has no certificates either; its own error is logged already.)
    if tls && config.tls.is_empty() && config.load_error.is_none() {
        tracing::error!(
            socket = %name,
            "this socket speaks TLS, but the configuration has no [[certificate]]: every \
             handshake on it fails until one is added (then reload)"
        );
    }
    drop(config);
    let socket: Arc<str> = Arc::from(socket_name);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    socket = %name,
                    "max_connections ({}) reached: new connections wait in the listen queue",
                    ctx.shared.config.load().server.max_connections
                );
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                spawn_connection(SocketWriter(stream), Some(peer), &socket, tls, permit, &ctx);
            }
            Ok(Accepted::Unix(stream)) => {
                spawn_connection(SocketWriter(stream), None, &socket, tls, permit, &ctx)
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: log, back off, carry on.
                tracing::warn!(socket = %name, "accept failed: {e}; retrying in 100ms");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    tracing::debug!(socket = %name, "stopped accepting");
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &AsyncListener) -> std::io::Result<Accepted> {
    match listener {
        AsyncListener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        AsyncListener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// How a socket's connections begin.
#[derive(Clone, Copy)]
struct Opening {
    /// With a PROXY protocol header (`proxy_protocol`).
    proxy_header: bool,
    /// With a TLS handshake (the socket named `https`).
    tls: bool,
}

fn spawn_connection<S>(
    stream: S,
    peer: Option<std::net::SocketAddr>,
    socket: &Arc<str>,
    tls: bool,
    permit: OwnedSemaphorePermit,
    ctx: &ConnContext,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let launcher = &ctx.shared.metrics.launcher;
    launcher.connections.fetch_add(1, Ordering::Relaxed);
    launcher.open_connections.fetch_add(1, Ordering::Relaxed);
    // Counted as activity from this moment: the launcher must not exit under a client about to speak.
    let activity = ctx.shared.activity.begin();
    let accepted_at = Instant::now();
    let config = ctx.shared.config.load_full();
    let opening = Opening {
        proxy_header: config.server.proxy_protocol.applies_to(socket),
        tls,
    };
    let socket = socket.clone();
    let ctx2 = ctx.clone();
    // Two task types, not one with a branch: a task is as large as its largest state, and the
    // TLS states (the handshake, the TLS stream) would make every plain connection pay for them.
    if tls {
        ctx.tasks.spawn(async move {
            // The handshake is bounded by first_request_timeout and not cut short by a drain:
            // the client gets its first request served, as on a plain socket.
            let deadline = accepted_at + config.server.first_request_timeout;
            if let Some((stream, client)) = opened(stream, peer, opening, deadline, &socket).await {
                let conn = Arc::new(ConnState::new(activity, client, true, accepted_at));
                match crate::tls::accept(stream, &config.tls, deadline).await {
                    Ok(stream) => serve_connection(stream, conn, &ctx2).await,
                    Err(e) => tracing::debug!(peer = ?peer, "TLS handshake failed: {e}"),
                }
            }
            closed(&ctx2, peer);
            drop(permit);
        });
    } else {
        ctx.tasks.spawn(async move {
            let deadline = accepted_at + config.server.first_request_timeout;
            drop(config);
            if let Some((stream, client)) = opened(stream, peer, opening, deadline, &socket).await {
                let conn = Arc::new(ConnState::new(activity, client, false, accepted_at));
                serve_connection(stream, conn, &ctx2).await;
            }
            closed(&ctx2, peer);
            drop(permit);
        });
    }
}

/// Reads the PROXY protocol header where the socket expects one; returns the stream to serve and
/// the client's address (the header's, else the peer's), or `None` for a refused connection.
async fn opened<S>(
    stream: S,
    peer: Option<std::net::SocketAddr>,
    opening: Opening,
    deadline: Instant,
    socket: &str,
) -> Option<(Rewind<S>, Option<IpAddr>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer_ip = peer.map(|p| p.ip().to_canonical());
    if !opening.proxy_header {
        return Some((Rewind::new(stream), peer_ip));
    }
    match proxy_protocol::read_header(stream, deadline, !opening.tls).await {
        Ok((Client::Address(client), stream)) => Some((stream, Some(client))),
        Ok((Client::Local, stream)) => Some((stream, peer_ip)),
        Err(Refused::Closed(0)) => {
            tracing::debug!(socket, peer = ?peer, "connection closed before sending anything");
            None
        }
        Err(refused) => {
            let peer = peer.map_or_else(|| "a unix-socket peer".to_string(), |p| p.to_string());
            tracing::warn!(
                socket,
                "connection from {peer} refused: {refused}. This socket expects a PROXY protocol \
                 header on every connection (proxy_protocol in [server]): only the load \
                 balancer, sending one (HAProxy: send-proxy-v2), should reach it"
            );
            None
        }
    }
}

/// Counts a connection's end.
fn closed(ctx: &ConnContext, peer: Option<std::net::SocketAddr>) {
    ctx.shared
        .metrics
        .launcher
        .open_connections
        .fetch_sub(1, Ordering::Relaxed);
    tracing::trace!(peer = ?peer, "connection closed");
}

/// Serves one connection until it closes, or until the drain asks it to finish.
async fn serve_connection<S>(stream: S, conn: Arc<ConnState>, ctx: &ConnContext)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = ctx.shared.config.load().server.clone();
    let deadlines = Deadlines {
        first_request: settings.first_request_timeout,
        header_read: settings.header_read_timeout,
        keepalive: settings.keepalive_timeout,
    };
    let io = TokioIo::new(DeadlineIo::new(stream, conn.clone(), deadlines));
    let shared = ctx.shared.clone();
    let conn_for_service = conn.clone();
    // `map`, not an async block around it: that would hold the request's future in a state
    // of its own, and every request would copy it once more.
    let service = service_fn(move |req| {
        request::handle(req, &shared, &conn_for_service).map(Ok::<_, std::convert::Infallible>)
    });
    let builder = builder(&settings);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let draining = ctx.draining.cancelled();
    tokio::pin!(draining);
    // The drain is watched by polling its future once, which registers this task to be woken by
    // it; after that it is polled again only once the launcher is stopping (an atomic load),
    // not at each of the connection's several wake-ups per request (a lock each).
    let mut watching = false;
    let served = std::future::poll_fn(|cx| {
        if !watching || ctx.shared.stopping.load(Ordering::Relaxed) {
            if draining.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            watching = true;
        }
        connection.as_mut().poll(cx).map(Some)
    })
    .await;
    let result = match served {
        Some(result) => result,
        None => {
            // hyper-util drops a connection whose protocol is not yet known when asked to shut
            // down, so a client that just connected would lose its request: let its first request
            // arrive (bounded by first_request_timeout) before asking for the graceful close.
            tokio::select! {
                result = connection.as_mut() => return log_result(result),
                _ = conn.first_request_arrived() => {}
            }
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    log_result(result);
}

fn log_result(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}

fn builder(settings: &crate::config::ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The head deadlines are enforced by DeadlineIo, which can answer 408.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(settings.max_header_size)
        .max_headers(settings.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(Some(256));
    builder
}
