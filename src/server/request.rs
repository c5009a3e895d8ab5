//! One request, from arrival to the start of its response: find the host and normalized path,
//! route to the app, run its handler, and tie the request's activity to the response body so the
//! launcher counts it busy until the last byte is sent.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::io::ConnState;
use super::Shared;
use crate::access;
use crate::config::{AccessLog, App, Config, Handler};
use crate::handlers::{plain, Body, BodyInService, BoxError};
use crate::idle::ActivityGuard;
use crate::metrics::AppStats;
use crate::proxy::headers;
use crate::routing::host_key;
use crate::routing::path::{self, RequestPath};
use crate::tls::redirect;

/// Answers one request. The request counts as in flight from this call (before the returned
/// future first runs) until its response body is sent completely or dropped; then it is counted
/// in its app's metrics and written to the access log.
pub fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    conn: &Arc<ConnState>,
) -> impl Future<Output = Response<InFlightBody>> + Send + 'static {
    let config = shared.config.load();
    // A load balancer's health probe is answered by the launcher and is no activity at all.
    let probe = config
        .server
        .health_path
        .as_deref()
        .is_some_and(|p| req.uri().path() == p);
    let access_log = config.server.access_log;
    // Routed at once, with the configuration loaded for the settings above.
    let route = (!probe).then(|| route(&req, &config, conn.peer));
    drop(config);
    conn.request_started(probe);
    let mut req = req;
    if !hyper::body::Body::is_end_stream(req.body()) {
        let reading = conn.body_started();
        req.extensions_mut()
            .insert(BodyInService(Arc::new(reading)));
    }
    let in_flight = InFlight {
        activity: (!probe).then(|| shared.activity.begin()),
        conn: conn.clone(),
    };
    let shared = shared.clone();
    let peer = conn.peer;
    let started = Instant::now();
    let access = (access_log != AccessLog::Off).then(|| {
        Box::new(Access {
            format: access_log,
            line: RequestLine::of(&req),
            peer,
            app: None,
        })
    });
    // Only the access log says how long the upstream took.
    let timed = access.is_some();
    // The body of a response to HEAD is never sent: the response is complete with its head.
    let head = req.method() == Method::HEAD;
    let http1 = req.version() < Version::HTTP_2;
    async move {
        let upstream_time = OnceLock::new();
        let (mut response, app) = match route {
            None => (plain(StatusCode::OK, "ok\n".into()), None),
            Some(route) => match route {
                Route::Answered(answer) => (answer, None),
                Route::To(app, to) => {
                    let conn = &in_flight.conn;
                    let upstream_time = timed.then_some(&upstream_time);
                    let response =
                        match answer(req, &app, to, &shared, conn, started, upstream_time) {
                            Answer::Now(response) => response,
                            Answer::Later(future) => future.await,
                        };
                    (response, Some(app))
                }
            },
        };
        if http1 && shared.stopping.load(Ordering::SeqCst) {
            close_after(&mut response);
        }
        let stats = app.as_ref().and_then(|a| a.stats.get().cloned());
        if let Some(stats) = &stats {
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let mut in_flight = in_flight;
        let finish = Finish {
            started,
            activity: in_flight.activity.take(),
            status: response.status().as_u16(),
            upstream: upstream_time.get().copied(),
            stats,
            access: access.map(|mut access| {
                access.app = app.map(|a| a.name.clone());
                access
            }),
            bytes: 0,
            complete: false,
        };
        response.map(|body| {
            let mut finish = finish;
            // An empty body (HEAD, 204, 304) may never be polled.
            finish.complete = head || hyper::body::Body::is_end_stream(&body);
            InFlightBody {
                inner: body,
                finish,
                _in_flight: in_flight,
            }
        })
    }
}

/// Marks an HTTP/1 response as the connection's last (`Connection: close`; hyper then closes the
/// connection once it is sent). Used once the launcher is stopping: a request that arrived on a
/// kept-alive connection just as the launcher went idle is still served, and its client learns
/// from the response not to send another on that connection, instead of racing the close that
/// follows (a request sent into a closing connection is lost and must be retried). A switch to
/// another protocol (101) keeps its own `Connection: upgrade`.
fn close_after(response: &mut Response<Body>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// What the access log says of a request, taken before the request is consumed.
struct RequestLine {
    method: String,
    target: String,
    version: &'static str,
    host: String,
}

impl RequestLine {
    fn of(req: &Request<Incoming>) -> RequestLine {
        RequestLine {
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.to_string()),
            version: match req.version() {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            host: raw_host(req)
                .and_then(|h| h.to_str().ok().map(String::from))
                .unwrap_or_default(),
        }
    }
}

/// What the access log line of a request needs besides the response.
struct Access {
    format: AccessLog,
    line: RequestLine,
    peer: Option<std::net::IpAddr>,
    app: Option<Arc<str>>,
}

/// Counted when the response ends: the app's metrics and the access log, and the end of the
/// request's launcher activity (at the same time read from the clock).
struct Finish {
    started: Instant,
    /// None for a health probe.
    activity: Option<ActivityGuard>,
    status: u16,
    upstream: Option<Duration>,
    stats: Option<Arc<AppStats>>,
    /// Boxed: only an access log needs it, and without one the response body (moved a few
    /// times per request) stays small.
    access: Option<Box<Access>>,
    bytes: u64,
    /// The body reached its end (not: the client went away).
    complete: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(activity) = self.activity.take() {
            activity.end_at(now);
        }
        let duration = now.saturating_duration_since(self.started);
        if let Some(stats) = &self.stats {
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            stats.record_at(self.status, duration, now.into_std());
        }
        if let Some(Access {
            format,
            line,
            peer,
            app,
        }) = self.access.as_deref()
        {
            access::log(
                *format,
                &access::Entry {
                    peer: *peer,
                    method: &line.method,
                    target: &line.target,
                    version: line.version,
                    host: &line.host,
                    app: app.as_deref().unwrap_or("-"),
                    status: self.status,
                    bytes: self.bytes,
                    duration,
                    upstream: self.upstream,
                    complete: self.complete,
                },
            );
        }
    }
}

/// A handler's answer: made at once, or still to come.
enum Answer<'a> {
    Now(Response<Body>),
    /// Boxed: the handlers' states are large (kilobytes), and hyper moves the request's future
    /// into place after creating it; unboxed, every request, even one answered at once, paid for
    /// copying the largest of them. Only this box's pointer is in the request's future.
    Later(Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>),
}

/// Starts answering a routed request with its app's handler.
fn answer<'a>(
    req: Request<Incoming>,
    app: &'a App,
    to: RouteTo,
    shared: &'a Shared,
    conn: &'a ConnState,
    received: Instant,
    upstream_time: Option<&'a OnceLock<Duration>>,
) -> Answer<'a> {
    let RouteTo {
        path,
        host,
        trusted,
    } = to;
    tracing::debug!(app = %app.name, method = %req.method(), path = path.as_str(), "request");
    let client = client(conn, host, trusted);
    if let Some(port) = app.https_redirect {
        if !redirect::came_over_https(conn.tls, trusted, req.headers()) {
            let host = client.host.as_ref().and_then(|h| h.to_str().ok());
            return Answer::Now(redirect::to_https(&req, host, port));
        }
    }
    let served = crate::proxy::Served {
        received,
        launcher: &shared.activity,
        timers: Some(&conn.request_timer),
        upstream_time,
    };
    let handler = match &app.handler {
        Handler::Versions(versions) => match versions.pick(req.headers()) {
            Some(version) => &version.handler,
            None => return Answer::Now(no_such_version(&app.name)),
        },
        handler => handler,
    };
    match handler {
        Handler::Respond(respond) => Answer::Now(respond.response()),
        Handler::Static(files) => {
            let (parts, _body) = req.into_parts();
            Answer::Later(Box::pin(async move {
                files
                    .serve(&app.name, &app.path, path.as_str(), parts)
                    .await
            }))
        }
        Handler::Proxy(proxy) => Answer::Later(Box::pin(
            proxy.serve(&app.name, &app.path, path, req, client, served),
        )),
        Handler::Run(run) => Answer::Later(Box::pin(
            run.serve(&app.name, &app.path, path, req, client, served),
        )),
        // Versions hold plain handlers only (the config allows no versions of versions).
        Handler::Versions(_) => Answer::Now(no_such_version(&app.name)),
    }
}

fn no_such_version(app: &str) -> Response<Body> {
    plain(
        StatusCode::NOT_FOUND,
        format!(
            "ondemand: app {app:?} has no version named in the {} header\n",
            crate::handlers::versions::VERSION_HEADER
        ),
    )
}

fn client(conn: &ConnState, host: Option<HeaderValue>, trusted: bool) -> headers::Client<'_> {
    headers::Client {
        addr: conn.peer_address.as_ref(),
        forwarded: Some(&conn.forwarded),
        proto: if conn.tls { "https" } else { "http" },
        host,
        trusted,
    }
}

/// Where a request goes: its app and normalized path, or ondemand's own answer when there is none.
enum Route {
    To(Arc<App>, RouteTo),
    Answered(Response<Body>),
}

/// What routing found out about a request, besides its app.
struct RouteTo {
    path: RequestPath,
    /// The host as the client sent it (for X-Forwarded-Host).
    host: Option<HeaderValue>,
    /// The peer is a trusted proxy.
    trusted: bool,
}

fn route(req: &Request<Incoming>, config: &Config, peer: Option<std::net::IpAddr>) -> Route {
    if config.load_error.is_some() {
        return Route::Answered(unusable_config(&config.path));
    }
    let host = match host_of(req) {
        Ok(host) => host,
        Err(why) => return Route::Answered(bad_request(why)),
    };
    if let Some(scheme) = req.uri().scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Route::Answered(bad_request(&format!(
                "the request target's scheme {scheme:?} is not http or https"
            )));
        }
    }
    let raw_path = if req.method() == Method::OPTIONS && req.uri() == "*" {
        "/"
    } else {
        req.uri().path()
    };
    let path = match path::normalized(raw_path) {
        Ok(p) => p,
        Err(why) => return Route::Answered(bad_request(&format!("bad request path: {why}"))),
    };
    let Some(app) = config
        .router
        .lookup(host.as_deref(), &path)
        .map(|i| config.apps[i].clone())
    else {
        tracing::debug!(
            host = host.as_deref().unwrap_or("-"),
            path = &*path,
            "no app matches"
        );
        return Route::Answered(plain(
            StatusCode::NOT_FOUND,
            format!(
                "ondemand: no app for host {} and path {path}\n",
                host.as_deref().unwrap_or("(none)")
            ),
        ));
    };
    let path = RequestPath::new(path, req.uri().path_and_query());
    Route::To(
        app,
        RouteTo {
            path,
            host: raw_host(req),
            trusted: config.server.is_trusted(peer),
        },
    )
}

/// ondemand's 400 for a request it will not route. The connection is closed after it: whatever
/// the client pipelined behind a malformed request is not read as a request of its own.
fn bad_request(why: &str) -> Response<Body> {
    let mut resp = plain(StatusCode::BAD_REQUEST, format!("ondemand: {why}\n"));
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// The host exactly as the client wrote it, port included (for X-Forwarded-Host and Forwarded):
/// the Host field itself (no copy), or the URI's authority.
fn raw_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req
            .headers()
            .get(http::header::HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned(),
    }
}

/// The request's host for routing: the URI authority (HTTP/2, absolute-form) or the Host header.
/// HTTP/1.1 requires a Host header (RFC 9112 §3.2); HTTP/1.0 may go without.
fn host_of(req: &Request<Incoming>) -> Result<Option<Cow<'_, str>>, &'static str> {
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return Err("the request target carries user information (user@host)");
        }
        return Ok(Some(host_key(authority.as_str())));
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err("more than one Host header"),
        (Some(h), None) => match h.to_str() {
            Ok("") => Ok(None),
            Ok(h) if is_authority(h) => Ok(Some(host_key(h))),
            _ => Err("the Host header is not a host name with an optional port"),
        },
        (None, _) if req.version() == Version::HTTP_11 => {
            Err("HTTP/1.1 requests need a Host header")
        }
        (None, _) => Ok(None),
    }
}

/// True for `host[:port]` as RFC 9110 §7.2 allows it in Host (no user info, path or spaces).
fn is_authority(host: &str) -> bool {
    // A name or IPv4 address with an optional port, as nearly every Host field is, is one
    // without the copy that building an `Authority` makes.
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && port.bytes().all(|b| b.is_ascii_digit());
    plain || (!host.contains('@') && http::uri::Authority::try_from(host).is_ok())
}

/// A request in flight: launcher activity plus the connection's count of requests in service.
struct InFlight {
    /// None for a health probe; handed to [`Finish`] with the response.
    activity: Option<ActivityGuard>,
    conn: Arc<ConnState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.request_finished();
    }
}

/// A response body that keeps its request in flight until it is sent completely or dropped,
/// counting the bytes sent. (The response's body as hyper gets it, not boxed once more.)
pub struct InFlightBody {
    inner: Body,
    finish: Finish,
    _in_flight: InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.finish.bytes += data.len() as u64;
                }
                // hyper stops polling once the body says it has ended.
                if self.inner.is_end_stream() {
                    self.finish.complete = true;
                }
            }
            Poll::Ready(None) => self.finish.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer while the configuration could not be loaded: 503, with a hint for the administrator
/// (the error itself is in the log, not shown to clients).
fn unusable_config(path: &std::path::Path) -> Response<Body> {
    let mut resp = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "ondemand: the configuration is invalid, so no app can be served. \
             The log has the error; `ondemand check --config {}` shows it too.\n",
            path.display()
        ),
    );
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("10"),
    );
    resp
}
