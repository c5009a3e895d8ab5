//! The `proxy` handler: an app served by upstream HTTP/1.1 servers that already run, over TCP or
//! unix sockets. The forwarding itself lives in [`crate::proxy`]; this module builds the app's
//! upstream set and limits from `proxy = { ... }` and hands each request on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use toml::Spanned;

use super::Body;
use crate::config::{Located, ProxyFile, UpstreamFile};
use crate::proxy::balance::UpstreamSet;
use crate::proxy::upstream::{Address, Upstream};
use crate::proxy::{self, headers, Limits};
use crate::routing::path::RequestPath;

/// Default for `timeout`: how long an upstream may take to start its response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An app's upstreams and limits.
#[derive(Debug)]
pub struct Proxy {
    pub upstreams: UpstreamSet,
    pub limits: Limits,
    /// Remove the app's path prefix before forwarding.
    pub strip_prefix: bool,
}

impl Proxy {
    /// Builds the handler from `proxy = { ... }` of app `app`.
    pub fn from_config(app: &str, file: Spanned<ProxyFile>) -> Result<Proxy, Located> {
        let span = file.span();
        let file = file.into_inner();
        let list = file.upstream.get_ref();
        if list.0.is_empty() {
            return Err(Located::new(
                file.upstream.span(),
                format!("app {app:?}: upstream = [] names no server; give at least one address"),
            ));
        }
        let mut upstreams = Vec::with_capacity(list.0.len());
        for entry in &list.0 {
            let (text, weight) = match entry {
                UpstreamFile::Address(a) => (a.as_str(), 1),
                UpstreamFile::Weighted { url, weight } => (url.as_str(), *weight),
            };
            let address = Address::parse(text)
                .map_err(|e| Located::new(file.upstream.span(), format!("app {app:?}: {e}")))?;
            upstreams.push(Arc::new(Upstream::new(address, weight)));
        }
        if upstreams.iter().all(|u| u.weight == 0) {
            return Err(Located::new(
                span,
                format!("app {app:?}: every upstream has weight 0, so none would get traffic"),
            ));
        }
        Ok(Proxy {
            upstreams: UpstreamSet::new(upstreams),
            limits: Limits {
                timeout: file.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
                max_body: file.max_body.map(|b| b.0),
            },
            strip_prefix: file.strip_prefix.unwrap_or(false),
        })
    }

    /// Forwards one request of app `app` (mounted at `prefix`) for normalized `path`. (Not an
    /// async fn: the future is the forwarding's own, without a state of this function's around it.)
    pub fn serve<'a>(
        &'a self,
        app: &'a Arc<str>,
        prefix: &str,
        path: RequestPath,
        req: Request<Incoming>,
        client: headers::Client<'a>,
        served: proxy::Served<'a>,
    ) -> impl Future<Output = Response<Body>> + Send + 'a {
        let path = upstream_path(self.strip_prefix, prefix, &path);
        let fwd = proxy::Forward {
            app,
            path,
            client,
            launcher: served.launcher,
            app_activity: None,
            timers: served.timers,
            sent: served.received,
            upstream_time: served.upstream_time,
        };
        proxy::forward(req, &self.upstreams, &self.limits, fwd)
    }
}

/// The path to send upstream: `path` itself, or with `strip_prefix` without the app's prefix;
/// `None` when that is the request's own target, to be sent as it came.
pub fn upstream_path(strip_prefix: bool, prefix: &str, path: &RequestPath) -> Option<String> {
    match path {
        _ if strip_prefix => Some(strip(prefix, path.as_str())),
        RequestPath::AsSent(_) => None,
        RequestPath::Normalized(path) => Some(path.clone()),
    }
}

/// `path` without the app's prefix: "/api/v1/x" under "/api" is "/v1/x"; "/api" itself is "/".
fn strip(prefix: &str, path: &str) -> String {
    if prefix == "/" {
        return path.to_string();
    }
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_prefix_keeps_a_path() {
        assert_eq!(super::strip("/api", "/api/v1/x"), "/v1/x");
        assert_eq!(super::strip("/api", "/api"), "/");
        assert_eq!(super::strip("/api", "/api/"), "/");
        assert_eq!(super::strip("/", "/a"), "/a");
    }
}
