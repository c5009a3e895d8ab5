//! `https_redirect`: an app that is only served over HTTPS answers plain-HTTP requests with a
//! redirect to the same host and path on `https://`.
//!
//! `301 Moved Permanently` for GET and HEAD (what browsers and crawlers expect), `308 Permanent
//! Redirect` for other methods, which must not be turned into a GET. A request that a trusted
//! proxy marked `X-Forwarded-Proto: https` already came over HTTPS and is served.

use http::header::{HeaderMap, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};

use crate::handlers::{plain, Body};

/// True when the client's request reached us over HTTPS: on a TLS socket, or through a trusted
/// proxy that says so (its last `X-Forwarded-Proto` value).
pub fn came_over_https(tls: bool, trusted: bool, headers: &HeaderMap) -> bool {
    tls || (trusted
        && headers
            .get_all("x-forwarded-proto")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")))
}

/// The redirect to `https://HOST[:port]/path?query` for `req`, whose host as the client wrote it
/// is `host`.
pub fn to_https<B>(req: &Request<B>, host: Option<&str>, port: u16) -> Response<Body> {
    let Some(name) = host.map(host_without_port).filter(|h| !h.is_empty()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "ondemand: this app is served over HTTPS only, and the request names no host to \
             redirect to\n"
                .to_string(),
        );
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .trim_start_matches('*');
    let target = if target.starts_with('/') { target } else { "/" };
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let Ok(value) = HeaderValue::from_str(&location) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "ondemand: this app is served over HTTPS only, and the request's host cannot be \
             redirected to\n"
                .to_string(),
        );
    };
    let status = if matches!(*req.method(), Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = plain(status, format!("ondemand: moved to {location}\n"));
    resp.headers_mut().insert(LOCATION, value);
    resp
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(method: Method, uri: &str, host: &str, port: u16) -> (u16, String) {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let resp = to_https(&req, Some(host), port);
        let loc = resp
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (resp.status().as_u16(), loc)
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_set_the_port() {
        assert_eq!(
            location(Method::GET, "/a/b?x=1", "Example.com:8080", 443),
            (301, "https://Example.com/a/b?x=1".into())
        );
        assert_eq!(
            location(Method::HEAD, "/", "example.com", 8443),
            (301, "https://example.com:8443/".into())
        );
        assert_eq!(
            location(Method::POST, "/form", "[::1]:80", 443),
            (308, "https://[::1]/form".into())
        );
    }

    #[test]
    fn only_a_trusted_proxy_can_say_it_was_https() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http, https"));
        assert!(came_over_https(false, true, &h));
        assert!(!came_over_https(false, false, &h));
        assert!(came_over_https(true, false, &HeaderMap::new()));
    }
}
