//! Per-app request handlers and the launcher's own error responses.
//!
//! Each handler turns a request for its app into a response. The error responses here are what a
//! client sees when ondemand itself answers (no route, bad path): short plain text saying what
//! happened, never a silent close.

mod beneath;
pub mod proxy;
pub mod respond;
pub mod run;
pub mod static_files;
pub mod versions;

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Errors a response body may produce while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response ondemand sends (`Send`, not `Sync`: file bodies are not).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Put in a request's extensions by the server while the request has a body to read: whoever
/// reads the body keeps it until the body is read or dropped. Until then the connection's reads
/// are the body's, not the next request head's (see `server::io`), even when the response is
/// already sent.
#[derive(Clone)]
pub struct BodyInService(pub std::sync::Arc<dyn std::any::Any + Send + Sync>);

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A body with nothing in it (boxing it allocates nothing: it has no size).
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A plain-text response from ondemand itself, e.g. 404 for a request no app matches.
pub fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `body`, holding `guard` until the body is sent completely or dropped (a bulkhead place, a
/// piece of activity).
pub fn hold<G: Send + Unpin + 'static>(body: Body, guard: G) -> Body {
    Held {
        inner: body,
        _guard: guard,
    }
    .boxed_unsync()
}

struct Held<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> hyper::body::Body for Held<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        // Both fields are Unpin, so no pin projection is needed.
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
