//! Per-app request handlers and the launcher's own error responses.
//!
//! Each handler turns a request for its app into a response. The error responses here are what a
//! client sees when ondemand itself answers (no route, bad path): short plain text saying what
//! happened, never a silent close.

mod beneath;
pub mod proxy;
pub mod respond;
pub mod static_files;

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Errors a response body may produce while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response ondemand sends (`Send`, not `Sync`: file bodies are not).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
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
