//! The `respond` handler: a fixed status, body and headers, checked once at config time so that
//! serving it is a clone of a few reference-counted buffers.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use toml::Spanned;

use super::{full, Body};
use crate::config::Located;

/// A fixed response.
#[derive(Debug, Clone)]
pub struct Respond {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Headers the server computes itself; setting them by hand would produce a broken message.
const COMPUTED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
];

impl Respond {
    /// Builds the handler from `respond = { ... }` of app `app`.
    pub fn from_config(
        app: &str,
        file: Spanned<crate::config::RespondFile>,
    ) -> Result<Respond, Located> {
        let span = file.span();
        let file = file.into_inner();
        let status = match file.status {
            None => StatusCode::OK,
            Some(s) => StatusCode::from_u16(*s.get_ref())
                .ok()
                .filter(|c| c.as_u16() >= 200)
                .ok_or_else(|| {
                    Located::new(
                        s.span(),
                        format!(
                            "app {app:?}: status {} is not a final HTTP status (200-999)",
                            s.get_ref()
                        ),
                    )
                })?,
        };
        let mut headers = HeaderMap::new();
        let content_type = file.content_type.map_or_else(
            || Ok(HeaderValue::from_static("text/plain; charset=utf-8")),
            |ct| header_value(app, "content_type", &ct),
        )?;
        headers.insert(CONTENT_TYPE, content_type);
        for (name, value) in &file.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Located::new(
                    span.clone(),
                    format!("app {app:?}: {name:?} is not a valid header name"),
                )
            })?;
            if COMPUTED.contains(&header.as_str()) {
                return Err(Located::new(
                    value.span(),
                    format!("app {app:?}: header {name:?} is set by ondemand itself; remove it"),
                ));
            }
            headers.append(header, header_value(app, name, value)?);
        }
        Ok(Respond {
            status,
            headers,
            body: Bytes::from(file.body.unwrap_or_default()),
        })
    }

    /// An empty 200 (for tests of what holds handlers).
    pub fn empty() -> Respond {
        Respond {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// The response for one request.
    pub fn response(&self) -> Response<Body> {
        let mut resp = Response::new(full(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

/// A header value from the config; CR, LF and NUL are refused so config can never inject headers.
fn header_value(app: &str, key: &str, value: &Spanned<String>) -> Result<HeaderValue, Located> {
    HeaderValue::from_str(value.get_ref()).map_err(|_| {
        Located::new(
            value.span(),
            format!("app {app:?}: {key} has characters not allowed in an HTTP header (CR, LF, NUL or other control characters)"),
        )
    })
}
