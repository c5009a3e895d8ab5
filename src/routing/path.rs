//! Request-path normalization for routing (RFC 3986 §6.2.2): percent-encoded unreserved characters
//! are decoded, remaining escapes get upper-case hex, dot-segments are removed and repeated slashes
//! merged. A path that cannot be normalized safely — a `..` above the root, an encoded NUL, a broken
//! escape — is refused, and the caller answers 400.
//!
//! Hand-written because the crates that normalize URLs (`url`, `http`) either do not decode
//! unreserved escapes before removing dot-segments or resolve `/../` above the root silently, and
//! routing needs exactly this definition.

use std::fmt;

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
