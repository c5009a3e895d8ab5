//! The route table: which app answers a request, from its Host and normalized path.
//!
//! Precedence is nginx's: first the host group (an exact host beats the longest matching wildcard,
//! a wildcard beats the apps that name no host), then, inside that group only, the longest path
//! prefix, matched on whole segments. A request whose host selects a group but whose path matches
//! nothing in it is not routed to another group: that is a 404, as in nginx.
//!
//! Lookups cost a few hash probes (one per label of the host, one per segment of the path), so a
//! table with thousands of apps routes as fast as one with three.

pub mod path;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A host pattern from the config, already lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `app.example`
    Exact(String),
    /// `*.example`, stored as the suffix `.example`: matches any name ending in it, at any depth.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a config host pattern; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err("an empty host name (omit `host` to match every host)".into());
        }
        if host == "*" {
            return Err("\"*\" is not a host pattern: omit `host` to match every host".into());
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            check_host_chars(raw, suffix)?;
            return Ok(HostPattern::Wildcard(format!(".{suffix}")));
        }
        check_host_chars(raw, &host)?;
        Ok(HostPattern::Exact(host))
    }
}

fn check_host_chars(raw: &str, host: &str) -> Result<(), String> {
    if host.starts_with('[') && host.ends_with(']') {
        return Ok(()); // an IPv6 literal, matched as written
    }
    if host.contains(':') {
        return Err(format!(
            "host {raw:?} has a port: ports are ignored when matching, so leave it out"
        ));
    }
    if host.contains('*') {
        return Err(format!(
            "host {raw:?}: a wildcard may only stand at the start, as in \"*.example\""
        ));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if !host.chars().all(ok) || host.starts_with('.') || host.contains("..") {
        return Err(format!("host {raw:?} is not a valid host name"));
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The route table's maps, keyed by host or path prefix.
type Map<V> = HashMap<String, V, BuildHasherDefault<Fnv>>;

/// FNV-1a, the route table's hash. Its keys come from the config; a client only looks them up and
/// cannot add colliding ones, so SipHash's protection against flooding buys nothing here, while
/// it cost more than the rest of a lookup (a lookup hashes once per path segment).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Path prefixes of one host group, each mapped to an app index.
#[derive(Debug, Default, Clone)]
struct PathTable(Map<usize>);

impl PathTable {
    /// The app with the longest prefix of `path` (a normalized path), matching whole segments.
    fn lookup(&self, path: &str) -> Option<usize> {
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(&app) = self.0.get(key) {
                return Some(app);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }
}

/// The compiled route table. Apps are referred to by their index in the config's app list.
#[derive(Debug, Default, Clone)]
pub struct Router {
    exact: Map<PathTable>,
    wildcard: Map<PathTable>,
    any_host: PathTable,
}

impl Router {
    /// Adds a route. Returns the index of the app that already has this host and path, if any.
    pub fn insert(
        &mut self,
        host: Option<&HostPattern>,
        path: &str,
        app: usize,
    ) -> Result<(), usize> {
        let table = match host {
            Some(HostPattern::Exact(h)) => self.exact.entry(h.clone()).or_default(),
            Some(HostPattern::Wildcard(s)) => self.wildcard.entry(s.clone()).or_default(),
            None => &mut self.any_host,
        };
        match table.0.get(path) {
            Some(&existing) => Err(existing),
            None => {
                table.0.insert(path.to_string(), app);
                Ok(())
            }
        }
    }

    /// The app for a request: `host` as returned by [`request_host`], `path` normalized.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.host_group(host).and_then(|table| table.lookup(path))
    }

    fn host_group(&self, host: Option<&str>) -> Option<&PathTable> {
        if let Some(host) = host {
            if let Some(table) = self.exact.get(host) {
                return Some(table);
            }
            // Leftmost dot first: the longest suffix, so the most specific wildcard wins.
            if !self.wildcard.is_empty() {
                for (i, _) in host.match_indices('.') {
                    if let Some(table) = self.wildcard.get(&host[i..]) {
                        return Some(table);
                    }
                }
            }
        }
        (!self.any_host.0.is_empty()).then_some(&self.any_host)
    }
}

/// The host a request is for, as routing compares it: lower-case, without port or trailing dot.
/// `authority` is the Host header or the :authority of an HTTP/2 request.
pub fn request_host(authority: &str) -> String {
    host_key(authority).into_owned()
}

/// [`request_host`], borrowed from `authority` unless it has upper-case letters.
pub fn host_key(authority: &str) -> Cow<'_, str> {
    // Byte searches: this runs for every request, and the generic `char` patterns cost more.
    let bytes = authority.as_bytes();
    let end = if bytes.first() == Some(&b'[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        bytes
            .iter()
            .position(|&b| b == b']')
            .map_or(bytes.len(), |i| i + 1)
    } else {
        bytes
            .iter()
            .rposition(|&b| b == b':')
            .unwrap_or(bytes.len())
    };
    // Without the trailing dots.
    let end = bytes[..end]
        .iter()
        .rposition(|&b| b != b'.')
        .map_or(0, |i| i + 1);
    let host = &authority[..end];
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(Option<&str>, &str)]) -> Router {
        let mut r = Router::default();
        for (i, (host, path)) in routes.iter().enumerate() {
            let host = host.map(|h| HostPattern::parse(h).unwrap());
            r.insert(host.as_ref(), path, i).unwrap();
        }
        r
    }

    #[test]
    fn exact_beats_wildcard_beats_no_host() {
        let r = router(&[
            (None, "/"),
            (Some("*.example"), "/"),
            (Some("a.example"), "/"),
        ]);
        assert_eq!(r.lookup(Some("a.example"), "/x"), Some(2));
        assert_eq!(r.lookup(Some("b.example"), "/x"), Some(1));
        assert_eq!(r.lookup(Some("deep.b.example"), "/x"), Some(1));
        assert_eq!(
            r.lookup(Some("example"), "/x"),
            Some(0),
            "*.example must not match example"
        );
        assert_eq!(r.lookup(Some("other"), "/"), Some(0));
        assert_eq!(r.lookup(None, "/"), Some(0));
    }

    #[test]
    fn longest_wildcard_wins() {
        let r = router(&[(Some("*.example"), "/"), (Some("*.b.example"), "/")]);
        assert_eq!(r.lookup(Some("x.b.example"), "/"), Some(1));
        assert_eq!(r.lookup(Some("x.c.example"), "/"), Some(0));
    }

    #[test]
    fn longest_prefix_on_whole_segments() {
        let r = router(&[(None, "/"), (None, "/api"), (None, "/api/v2")]);
        assert_eq!(r.lookup(None, "/api"), Some(1));
        assert_eq!(r.lookup(None, "/api/"), Some(1));
        assert_eq!(r.lookup(None, "/api/x"), Some(1));
        assert_eq!(r.lookup(None, "/apix"), Some(0));
        assert_eq!(r.lookup(None, "/api/v2/users"), Some(2));
        assert_eq!(r.lookup(None, "/api/v20"), Some(1));
    }

    #[test]
    fn a_host_group_does_not_fall_through_to_other_groups() {
        let r = router(&[(None, "/"), (Some("a.example"), "/api")]);
        assert_eq!(r.lookup(Some("a.example"), "/api/x"), Some(1));
        assert_eq!(r.lookup(Some("a.example"), "/other"), None);
    }

    #[test]
    fn no_route_is_none() {
        let r = router(&[(Some("a.example"), "/")]);
        assert_eq!(r.lookup(Some("b.example"), "/"), None);
        assert_eq!(r.lookup(None, "/"), None);
    }

    #[test]
    fn duplicate_route_names_the_first_app() {
        let mut r = router(&[(Some("a.example"), "/")]);
        let host = HostPattern::parse("A.Example").unwrap();
        assert_eq!(r.insert(Some(&host), "/", 7), Err(0));
    }

    #[test]
    fn request_host_ignores_case_port_and_trailing_dot() {
        assert_eq!(request_host("Hello.Example:8080"), "hello.example");
        assert_eq!(request_host("hello.example."), "hello.example");
        assert_eq!(request_host("[::1]:80"), "[::1]");
        assert_eq!(request_host("[::1]"), "[::1]");
        assert!(matches!(
            host_key("a.example:80"),
            Cow::Borrowed("a.example")
        ));
        assert!(matches!(host_key("A.example"), Cow::Owned(h) if h == "a.example"));
    }

    #[test]
    fn the_route_hash_is_fnv_1a() {
        // The published FNV-1a 64 test vectors.
        let hash = |bytes: &[u8]| {
            let mut h = Fnv::default();
            h.write(bytes);
            h.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn host_patterns_are_checked() {
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("a.example:80").is_err());
        assert!(HostPattern::parse("a.*.example").is_err());
        assert!(HostPattern::parse("").is_err());
        assert_eq!(
            HostPattern::parse("*.Ex.").unwrap(),
            HostPattern::Wildcard(".ex".into())
        );
    }
}
