//! Forwarding a request to an upstream HTTP/1.1 server and its response back: what the `proxy`
//! handler does, and what an on-demand app's requests go through once the app runs.
//!
//! - [`upstream`]: one upstream's address, connection pool, in-flight count and liveness.
//! - [`balance`]: choosing among several upstreams.
//! - [`headers`]: the header rewriting (hop-by-hop, X-Forwarded-*, Forwarded).
//! - [`tunnel`]: Upgrade (WebSocket) pass-through.
//!
//! Bodies stream both ways with backpressure (hyper's `Incoming` is handed on as it is read), so
//! a 1 GB upload or download passes in constant memory. Every failure becomes a response with a
//! short body naming the app and the reason: 502 when the upstream refuses or fails, 504 when it
//! does not answer within the app's `timeout`, 413 for a body over the app's limit.

pub mod balance;
pub mod headers;
pub mod request_body;
mod tunnel;
pub mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST, RETRY_AFTER};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use tokio::time::Instant;

use crate::handlers::{plain, Body, BodyInService, BoxError};
use crate::idle::Activity;
use crate::timer::{self, LentDeadline, TimerSlot};
use balance::UpstreamSet;
use request_body::{BodyStalled, StallLimited};
use upstream::{Driver, InFlight, Upstream};

/// What an app's proxying is allowed: set per app in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time from receiving the request to the upstream's response head → 504.
    pub timeout: Duration,
    /// Largest request body → 413; `None` = no limit.
    pub max_body: Option<u64>,
}

/// What a request is served with, besides itself: the launcher's activity (an open WebSocket
/// tunnel counts as activity) and the timer its connection lends for the response deadline.
#[derive(Clone, Copy)]
pub struct Served<'a> {
    /// When the request arrived (read from the clock once per request).
    pub received: Instant,
    pub launcher: &'a Activity,
    /// `None`: the request makes a timer of its own.
    pub timers: Option<&'a TimerSlot>,
    /// Where to note the time the upstream took to send its response head: `Some` only for the
    /// access log, as timing it reads the clock twice more.
    pub upstream_time: Option<&'a OnceLock<Duration>>,
}

/// One request to forward, with what the proxy needs to know about it.
pub struct Forward<'a> {
    pub app: &'a Arc<str>,
    /// The path to send upstream (already normalized; the app's prefix already removed if asked);
    /// `None` to send the request's own target (path and query) as it came.
    pub path: Option<String>,
    pub client: headers::Client<'a>,
    /// What an open WebSocket tunnel counts as activity of: the launcher's, and the app's own
    /// for an on-demand app.
    pub launcher: &'a Activity,
    pub app_activity: Option<&'a Activity>,
    /// Where the timer for the app's `timeout` comes from.
    pub timers: Option<&'a TimerSlot>,
    /// When the request is taken to be sent: the app's `timeout` runs from here. A `proxy` app's
    /// request is sent as it arrives ([`Served::received`]); an on-demand app's after it waited
    /// for its place in the bulkhead and for the app to start.
    pub sent: Instant,
    /// See [`Served::upstream_time`].
    pub upstream_time: Option<&'a OnceLock<Duration>>,
}

/// Forwards `req` to one of `upstreams` and returns the response (or ondemand's own error answer).
///
/// What can be done before the upstream is asked is done at once, so that the returned future
/// holds only the request as it goes upstream: futures are moved whole (into a box, into hyper),
/// and whatever they hold is paid for on every request.
pub fn forward<'a>(
    mut req: Request<Incoming>,
    upstreams: &'a UpstreamSet,
    limits: &'a Limits,
    fwd: Forward<'a>,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    let reply = Reply {
        app: fwd.app,
        launcher: fwd.launcher,
        app_activity: fwd.app_activity,
        timers: fwd.timers,
        sent: fwd.sent,
        upstream_time: fwd.upstream_time,
    };
    if let Some(too_large) = body_too_large(req.headers(), limits, fwd.app) {
        return Either::Left(std::future::ready(too_large));
    }
    let upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let Some(outgoing) = upstream_request(req, upgrade, limits, &fwd) else {
        return Either::Left(std::future::ready(error_response(
            StatusCode::BAD_REQUEST,
            fwd.app,
            "the request target cannot be forwarded",
        )));
    };
    Either::Right(exchange_and_reply(
        outgoing,
        client_upgrade,
        upstreams,
        limits,
        reply,
    ))
}

/// What [`forward`] needs of [`Forward`] once the request is on its way.
#[derive(Clone, Copy)]
struct Reply<'a> {
    app: &'a Arc<str>,
    launcher: &'a Activity,
    app_activity: Option<&'a Activity>,
    timers: Option<&'a TimerSlot>,
    sent: Instant,
    upstream_time: Option<&'a OnceLock<Duration>>,
}

/// Sends `outgoing` upstream and turns the upstream's response into the client's.
async fn exchange_and_reply(
    outgoing: Request<Body>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upstreams: &UpstreamSet,
    limits: &Limits,
    fwd: Reply<'_>,
) -> Response<Body> {
    let mut last_tried = None;
    let asked = fwd.upstream_time.map(|_| Instant::now());
    let mut deadline = match fwd.timers {
        Some(slot) => slot.lend(fwd.sent + limits.timeout),
        None => LentDeadline::own(fwd.sent + limits.timeout),
    };
    let outcome = {
        let exchange = exchange(outgoing, upstreams, limits, &fwd, &mut last_tried);
        timer::within(&mut deadline, std::pin::pin!(exchange)).await
    };
    let (response, upstream, sender, driver, in_flight) = match outcome {
        Some(Ok(done)) => done,
        Some(Err(failure)) => return failure,
        None => {
            let within = humantime::format_duration(limits.timeout);
            let upstream =
                last_tried.map_or_else(String::new, |u: Arc<Upstream>| u.address.to_string());
            tracing::warn!(
                app = &**fwd.app,
                upstream = %upstream,
                "upstream did not answer within {within} (timeout)"
            );
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                fwd.app,
                &format!("the upstream did not answer within {within}"),
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    if let (Some(time), Some(asked)) = (fwd.upstream_time, asked) {
        let _ = time.set(asked.elapsed());
    }
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::for_client(&mut parts.headers, switching);
    if switching {
        let upstream_response = Response::from_parts(parts.clone(), body);
        return match client_upgrade {
            Some(client) => {
                // hyper hands the connection's I/O to the tunnel once it has run to the switch.
                driver.spawn();
                tunnel::spawn(
                    fwd.app,
                    client,
                    upstream_response,
                    [Some(fwd.launcher), fwd.app_activity]
                        .into_iter()
                        .flatten()
                        .map(Activity::begin)
                        .collect(),
                    in_flight,
                );
                Response::from_parts(parts, crate::handlers::full(Bytes::new()))
            }
            None => error_response(
                StatusCode::BAD_GATEWAY,
                fwd.app,
                "the upstream switched protocols without being asked to",
            ),
        };
    }
    let body = UpstreamBody {
        inner: body,
        give_back: Some((upstream, sender, driver)),
        app: fwd.app.clone(),
        bytes: 0,
        broke_off: None,
        _in_flight: in_flight,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// 413 when the declared Content-Length is over the app's limit (a streamed body over the limit
/// is caught while it is read).
fn body_too_large(headers: &HeaderMap, limits: &Limits, app: &str) -> Option<Response<Body>> {
    let max = limits.max_body?;
    let declared: u64 = headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()?;
    (declared > max).then(|| too_large(app, max))
}

fn too_large(app: &str, max: u64) -> Response<Body> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        app,
        &format!("the request body is larger than the app's limit of {max} bytes"),
    )
}

/// The request as the upstream gets it: origin-form target, HTTP/1.1, headers rewritten.
/// `upgrade`: the request asks to switch protocols (see [`headers::wants_upgrade`]).
fn upstream_request(
    req: Request<Incoming>,
    upgrade: bool,
    limits: &Limits,
    fwd: &Forward<'_>,
) -> Option<Request<Body>> {
    let (mut parts, body) = req.into_parts();
    let target = match (&fwd.path, parts.uri.query()) {
        (None, _) => parts.uri.path_and_query()?.clone(),
        (Some(path), Some(q)) => PathAndQuery::try_from(format!("{path}?{q}")).ok()?,
        (Some(path), None) => PathAndQuery::try_from(path.as_str()).ok()?,
    };
    // HTTP/2 carries the host in :authority, and an absolute-form target (`GET http://a/x`)
    // carries it in the target, which then overrides any Host field (RFC 9112 §3.2.2): the
    // upstream gets the host the request was routed by, in the Host field HTTP/1.1 requires.
    if let Some(host) = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(HOST, host);
    }
    headers::for_upstream(&mut parts.headers, &fwd.client, upgrade);
    parts.uri = Uri::from(target);
    parts.version = Version::HTTP_11;
    let reading = parts.extensions.remove::<BodyInService>();
    if reading.is_none() && hyper::body::Body::is_end_stream(&body) {
        // No body (most requests): an empty one, which takes no allocation and no polling
        // through the layers below.
        return Some(Request::from_parts(parts, crate::handlers::empty()));
    }
    let body = StallLimited::new(body, limits.timeout, reading);
    let body = match limits.max_body {
        Some(max) => Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed_unsync(),
        None => body.boxed_unsync(),
    };
    Some(Request::from_parts(parts, body))
}

type Exchanged = (
    Response<Incoming>,
    Arc<Upstream>,
    http1::SendRequest<Body>,
    Driver,
    InFlight,
);

/// Sends `req` to the first upstream that takes it. A refused connect moves the untouched
/// request on to the next upstream; once the request has been sent, its fate is that upstream's.
async fn exchange(
    req: Request<Body>,
    upstreams: &UpstreamSet,
    limits: &Limits,
    fwd: &Reply<'_>,
    last_tried: &mut Option<Arc<Upstream>>,
) -> Result<Exchanged, Response<Body>> {
    let app: &str = fwd.app;
    let mut req = req;
    // Only a refused upstream is noted: most requests are sent to the first one picked, and then
    // the list is never allocated.
    let mut tried = Vec::new();
    let mut refused = None;
    while let Some(index) = upstreams.pick(&tried) {
        let upstream = upstreams.upstreams[index].clone();
        *last_tried = Some(upstream.clone());
        let in_flight = upstream.begin();
        match send(&upstream, req, fwd.sent).await {
            Ok((response, sender, driver)) => {
                return Ok((response, upstream, sender, driver, in_flight))
            }
            Err(Failure::Refused(e, back)) => {
                tried.push(index);
                tracing::warn!(app, upstream = %upstream.address, "{e}");
                refused = Some(e);
                req = *back;
            }
            Err(Failure::Failed(e)) => return Err(failed(app, &upstream, &e, limits)),
        }
    }
    let why = refused.map_or_else(
        || "it has no upstream that takes traffic (every weight is 0)".to_string(),
        |e| e.to_string(),
    );
    Err(error_response(StatusCode::BAD_GATEWAY, app, &why))
}

enum Failure {
    /// No connection could be made: the request comes back untouched.
    Refused(upstream::ConnectError, Box<Request<Body>>),
    /// The request was sent (or partly sent) and failed.
    Failed(hyper::Error),
}

/// A pooled connection idle at least this long may be closing by the upstream's keep-alive
/// timeout as the request goes out: a copy of a body-less idempotent request is kept to send it
/// again. (Connections in steady use skip the copy.)
const MAY_BE_CLOSING: Duration = Duration::from_millis(200);

/// Sends `req` on a pooled or new connection to `upstream`. A pooled connection found closed
/// before the request was written gives it back, and it is sent again on a new connection; a
/// body-less idempotent request whose pooled connection broke mid-way is sent once more too.
/// `sent`: about now (see [`Forward::sent`]), for how long a pooled connection has been idle.
async fn send(upstream: &Upstream, req: Request<Body>, sent: Instant) -> Result<Sent, Failure> {
    // The rare paths' states are boxed: in this future they would make every request's larger.
    let conn = match upstream.pooled(sent) {
        Some(conn) => conn,
        None => match Box::pin(upstream.connect()).await {
            Ok((sender, driver)) => upstream::Connection {
                sender,
                driver,
                idle_for: None,
            },
            Err(e) => return Err(Failure::Refused(e, Box::new(req))),
        },
    };
    let retry = conn
        .idle_for
        .filter(|&idle| idle >= MAY_BE_CLOSING)
        .and_then(|_| retry_template(&req));
    let upstream::Connection {
        mut sender,
        mut driver,
        idle_for,
    } = conn;
    let error = match driver.until(sender.try_send_request(req)).await {
        Ok(response) => return Ok((response, sender, driver)),
        Err(e) => e,
    };
    if idle_for.is_none() {
        return Err(Failure::Failed(error.into_error()));
    }
    Box::pin(send_again(upstream, error, retry)).await
}

/// A response head, and the connection it came on.
type Sent = (Response<Incoming>, http1::SendRequest<Body>, Driver);

/// [`send`]'s second try, on a new connection, after a pooled one failed with `error`.
async fn send_again(
    upstream: &Upstream,
    mut error: hyper::client::conn::TrySendError<Request<Body>>,
    retry: Option<RetryTemplate>,
) -> Result<Sent, Failure> {
    let again = match (error.take_message(), retry.as_ref()) {
        (Some(req), _) => req,
        (None, Some(template)) => template.request(),
        (None, None) => return Err(Failure::Failed(error.into_error())),
    };
    let (mut sender, mut driver) = match upstream.connect().await {
        Ok(conn) => conn,
        Err(e) => return Err(Failure::Refused(e, Box::new(again))),
    };
    match driver.until(sender.try_send_request(again)).await {
        Ok(response) => Ok((response, sender, driver)),
        Err(e) => Err(Failure::Failed(e.into_error())),
    }
}

/// What it takes to send a body-less GET, HEAD or OPTIONS again.
struct RetryTemplate {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RetryTemplate {
    fn request(&self) -> Request<Body> {
        let mut req = Request::new(crate::handlers::full(Bytes::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

fn retry_template(req: &Request<Body>) -> Option<RetryTemplate> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let bodyless = hyper::body::Body::is_end_stream(req.body());
    (safe && bodyless && !headers::wants_upgrade(req.headers())).then(|| RetryTemplate {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    })
}

/// The answer for a request the upstream failed, and the log line with its address.
fn failed(app: &str, upstream: &Upstream, error: &hyper::Error, limits: &Limits) -> Response<Body> {
    if let (Some(max), true) = (limits.max_body, body_limit_hit(error)) {
        return too_large(app, max);
    }
    if let Some(stalled) = find_source::<BodyStalled>(error) {
        tracing::debug!(app, "{stalled}");
        return closing(error_response(
            StatusCode::REQUEST_TIMEOUT,
            app,
            &stalled.to_string(),
        ));
    }
    if let Some(client_error) = client_body_error(error) {
        // The client's own body was malformed (a bad chunk) or cut short: its fault, not the
        // upstream's. The upstream got a request it never saw the end of, on a connection that
        // is dropped, so nothing of it can be taken for a next request.
        tracing::debug!(app, "the request body could not be read: {client_error}");
        return closing(error_response(
            StatusCode::BAD_REQUEST,
            app,
            &format!("the request body could not be read: {client_error}"),
        ));
    }
    let why = if error.is_incomplete_message() || error.is_canceled() {
        "the upstream closed the connection without a complete response".to_string()
    } else if error.is_parse() {
        "the upstream sent a malformed response".to_string()
    } else if error.is_body_write_aborted() || error.is_user() {
        format!("the request body could not be sent: {}", error_chain(error))
    } else {
        format!(
            "the exchange with the upstream failed: {}",
            error_chain(error)
        )
    };
    tracing::warn!(app, upstream = %upstream.address, "{why} ({})", error_chain(error));
    error_response(StatusCode::BAD_GATEWAY, app, &why)
}

/// The error reading the client's request body, when that is why sending it upstream failed: a
/// hyper error below the client connection's own error (the body is read from a connection too).
fn client_body_error(error: &hyper::Error) -> Option<&hyper::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(inner) = e.downcast_ref::<hyper::Error>() {
            return Some(inner);
        }
        source = e.source();
    }
    None
}

/// True when the request failed because its body went over the app's limit.
fn body_limit_hit(error: &hyper::Error) -> bool {
    find_source::<http_body_util::LengthLimitError>(error).is_some()
}

/// The first error of type `E` in the chain of `error`'s sources.
fn find_source<E: std::error::Error + 'static>(error: &hyper::Error) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// `resp` with `Connection: close`: the request's body was not read to its end, so nothing after
/// it on the connection can be taken for a next request.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// ondemand's own answer for a failed proxy exchange: `ondemand: app "x": <why>`.
pub fn error_response(status: StatusCode, app: &str, why: &str) -> Response<Body> {
    let mut resp = plain(status, format!("ondemand: app {app:?}: {why}\n"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// An upstream's response body on its way to the client. Runs the connection it comes on (which
/// reads the body into `inner`), keeps the request counted in flight on the upstream until it
/// ends, then returns the connection to the pool.
struct UpstreamBody {
    inner: Incoming,
    give_back: Option<(Arc<Upstream>, http1::SendRequest<Body>, Driver)>,
    /// The app's name and the body bytes passed on so far, for the log line when the upstream
    /// breaks off mid-body (the client only sees its connection close).
    app: Arc<str>,
    bytes: u64,
    /// The upstream's error, held back for one turn (see `poll_frame`).
    broke_off: Option<hyper::Error>,
    _in_flight: InFlight,
}

impl UpstreamBody {
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some((upstream, sender, driver)) = self.give_back.take() {
            upstream.give_back(sender, driver, cx);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(e) = self.broke_off.take() {
            return Poll::Ready(Some(Err(e.into())));
        }
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some((_, _, driver)) = self.give_back.as_mut() {
                // The connection reads more of the body into `inner` (or ends, and `inner`
                // then says how).
                let _ = driver.poll(cx);
                polled = Pin::new(&mut self.inner).poll_frame(cx);
            }
        }
        match polled {
            Poll::Ready(None) => {
                self.release(cx);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                // hyper stops polling once the body says it has ended.
                if self.inner.is_end_stream() {
                    self.release(cx);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The upstream broke off mid-body: the connection is not reusable, and the
                // client's is closed (a complete-looking response would be a lie).
                let upstream = self.give_back.take().map(|(u, ..)| u.address.to_string());
                tracing::warn!(
                    app = %self.app,
                    upstream = upstream.as_deref().unwrap_or(""),
                    "the upstream broke off the response after {} body bytes ({}); the client's \
                     connection is closed mid-body",
                    self.bytes,
                    error_chain(&e)
                );
                // The error often comes in the same turn as the bytes before it (one read had
                // them and the close): held back for one turn, so that hyper writes out the head
                // and those bytes before the error makes it cut the client's connection.
                self.broke_off = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other.map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing in it (HEAD, 204, 304) may never be polled.
        if hyper::body::Body::is_end_stream(&self.inner) {
            if let Some((upstream, sender, driver)) = self.give_back.take() {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                upstream.give_back(sender, driver, &mut cx);
            }
        }
    }
}
