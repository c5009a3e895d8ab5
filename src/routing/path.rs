//! Request-path normalization for routing (RFC 3986 §6.2.2): percent-encoded unreserved characters
//! are decoded, remaining escapes get upper-case hex, dot-segments are removed and repeated slashes
//! merged. A path that cannot be normalized safely — a `..` above the root, an encoded NUL, a broken
//! escape — is refused, and the caller answers 400.
//!
//! Hand-written because the crates that normalize URLs (`url`, `http`) either do not decode
//! unreserved escapes before removing dot-segments or resolve `/../` above the root silently, and
//! routing needs exactly this definition.

use std::borrow::Cow;
use std::fmt;

use http::uri::PathAndQuery;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (does not start with `/`).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%00`: a NUL byte can only be an attack on a file system or a C string.
    EncodedNul,
    /// `..` would climb above `/`.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path does not start with /",
            PathError::BadEscape => "the path has a % that is not followed by two hex digits",
            PathError::EncodedNul => "the path contains an encoded NUL (%00)",
            PathError::AboveRoot => "the path climbs above the root with ..",
        })
    }
}

impl std::error::Error for PathError {}

/// Normalizes `raw` (the path part of a request target, without the query).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    normalized(raw).map(Cow::into_owned)
}

/// [`normalize`], borrowing `raw` when it is normal already (the common case, checked on every
/// request).
pub fn normalized(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_slowly(raw).map(Cow::Owned)
}

/// True when `normalize` would return `raw` itself: an absolute path without escapes, without
/// empty segments (but for a trailing slash), and without dot-segments.
fn is_normal(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if raw.as_bytes().contains(&b'%') {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." | ".." => return false,
            "" if !last => return false,
            _ => {}
        }
    }
    true
}

fn normalize_slowly(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "" | "." => trailing_slash = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// A request's normalized path, as handlers get it. Most requests are sent with a normal path:
/// that path is then kept as part of the request target it came in (no copy), which a proxy
/// forwards as it is.
#[derive(Debug, Clone)]
pub enum RequestPath {
    /// The request target's path was normal already: the target itself (path and query).
    AsSent(PathAndQuery),
    /// The normalized path, which differs from the one sent.
    Normalized(String),
}

impl RequestPath {
    /// The path normalized from `raw`, the path of the request target `sent`.
    pub fn new(normalized: Cow<'_, str>, sent: Option<&PathAndQuery>) -> RequestPath {
        match (normalized, sent) {
            (Cow::Borrowed(path), Some(sent)) if sent.path() == path => {
                RequestPath::AsSent(sent.clone())
            }
            (path, _) => RequestPath::Normalized(path.into_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RequestPath::AsSent(sent) => sent.path(),
            RequestPath::Normalized(path) => path,
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` where XX is an unreserved character; upper-cases the hex of every other escape.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi * 16 + lo;
        if value == 0 {
            return Err(PathError::EncodedNul);
        }
        if is_unreserved(value) {
            out.push(value);
        } else {
            out.extend_from_slice(format!("%{value:02X}").as_bytes());
        }
        i += 3;
    }
    // Only ASCII bytes were added or rewritten, so valid UTF-8 in stays valid UTF-8 out.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_clean_paths() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/%2F", "/a%20b"] {
            assert_eq!(normalize(p).unwrap(), p);
        }
    }

    #[test]
    fn normal_paths_are_borrowed_and_the_rest_normalized_the_long_way() {
        for p in ["/", "/a", "/a/b/", "/a.b/.c/..d/", "/a~b_c-d"] {
            assert!(
                matches!(normalized(p), Ok(Cow::Borrowed(b)) if b == p),
                "{p}"
            );
        }
        for p in [
            "//", "/a//b", "/.", "/a/.", "/a/./", "/a/..", "/a/../b", "/%61", "/a%2f", "/a/.%2e",
            "a", "",
        ] {
            assert!(!matches!(normalized(p), Ok(Cow::Borrowed(_))), "{p}");
            assert_eq!(
                normalized(p).map(Cow::into_owned),
                normalize_slowly(p),
                "{p}"
            );
        }
    }

    #[test]
    fn a_request_path_keeps_the_target_when_it_is_normal() {
        let sent = PathAndQuery::from_static("/a/b?q=1");
        let path = RequestPath::new(normalized(sent.path()).unwrap(), Some(&sent));
        assert!(matches!(&path, RequestPath::AsSent(t) if t.as_str() == "/a/b?q=1"));
        assert_eq!(path.as_str(), "/a/b");
        let sent = PathAndQuery::from_static("/a/./b?q=1");
        let path = RequestPath::new(normalized(sent.path()).unwrap(), Some(&sent));
        assert!(matches!(&path, RequestPath::Normalized(p) if p == "/a/b"));
        // `OPTIONS *` is routed as "/", which is not its target.
        let sent = PathAndQuery::from_static("*");
        let path = RequestPath::new(normalized("/").unwrap(), Some(&sent));
        assert!(matches!(&path, RequestPath::Normalized(p) if p == "/"));
    }

    #[test]
    fn removes_dot_segments_and_merges_slashes() {
        assert_eq!(normalize("/a/./b").unwrap(), "/a/b");
        assert_eq!(normalize("/a/../b").unwrap(), "/b");
        assert_eq!(normalize("/a/b/..").unwrap(), "/a/");
        assert_eq!(normalize("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(normalize("//a///b").unwrap(), "/a/b");
        assert_eq!(normalize("/a/..").unwrap(), "/");
    }

    #[test]
    fn decodes_unreserved_before_removing_dots() {
        assert_eq!(normalize("/%61pi").unwrap(), "/api");
        assert_eq!(normalize("/a/%2e%2E/b").unwrap(), "/b");
        assert_eq!(normalize("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(normalize("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(normalize("/%7euser").unwrap(), "/~user");
    }

    #[test]
    fn refuses_what_cannot_be_normalized_safely() {
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a%00"), Err(PathError::EncodedNul));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
    }
}
