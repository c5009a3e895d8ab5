//! The route table against a brute-force reference: routes made from fuzzed hosts and paths the
//! way the config makes them, requests with fuzzed Host and path the way the server reads them,
//! and every lookup must pick the app the documented precedence picks (exact host, then the
//! longest wildcard, then the apps without a host; inside that group only, the longest prefix on
//! whole segments).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ondemand::fuzzing::{normalize_path, path_prefix, request_host, HostPattern, Router};

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<(Vec<Name>, Name)>,
    requests: Vec<(Option<Name>, Name)>,
}

/// A host or path: either any text, or one built from a few labels or segments, so that routes
/// and requests that share suffixes and prefixes (where precedence matters) are common.
#[derive(Arbitrary, Debug)]
enum Name {
    Text(String),
    Parts { wildcard: bool, parts: Vec<u8> },
}

const LABELS: &[&str] = &["a", "b", "Example", "c-d", "x_1"];
const SEGMENTS: &[&str] = &["a", "b", "", ".", "..", "%2e", "%61", "%2F", "A"];

impl Name {
    fn host(&self) -> String {
        match self {
            Name::Text(t) => t.clone(),
            Name::Parts { wildcard, parts } => {
                let labels: Vec<&str> = parts
                    .iter()
                    .map(|&p| LABELS[p as usize % LABELS.len()])
                    .collect();
                let host = labels.join(".");
                if *wildcard {
                    format!("*.{host}")
                } else {
                    host
                }
            }
        }
    }
    fn path(&self) -> String {
        match self {
            Name::Text(t) => t.clone(),
            Name::Parts { wildcard, parts } => {
                let mut path: String = parts
                    .iter()
                    .map(|&p| format!("/{}", SEGMENTS[p as usize % SEGMENTS.len()]))
                    .collect();
                if path.is_empty() || *wildcard {
                    path.push('/');
                }
                path
            }
        }
    }
    /// As a request's Host: a wildcard-built name gets a label in front of it, as a real host
    /// under the wildcard would.
    fn request_host(&self) -> String {
        match self {
            Name::Parts { wildcard: true, .. } => {
                format!("z.{}", self.host().trim_start_matches("*."))
            }
            _ => self.host(),
        }
    }
}

type Table = Vec<(Option<HostPattern>, String, usize)>;

fuzz_target!(|input: Input| {
    let mut router = Router::default();
    let mut table: Table = Vec::new();
    for (app, (hosts, path)) in input.routes.iter().enumerate() {
        let Ok(prefix) = path_prefix(&path.path()) else {
            continue;
        };
        assert!(prefix == "/" || (prefix.starts_with('/') && !prefix.ends_with('/')));
        let patterns: Vec<Option<HostPattern>> = if hosts.is_empty() {
            vec![None]
        } else {
            hosts
                .iter()
                .filter_map(|h| HostPattern::parse(&h.host()).ok())
                .map(Some)
                .collect()
        };
        for pattern in patterns {
            match router.insert(pattern.as_ref(), &prefix, app) {
                Ok(()) => table.push((pattern, prefix.clone(), app)),
                Err(first) => assert!(
                    table
                        .iter()
                        .any(|(p, x, a)| *p == pattern && *x == prefix && *a == first),
                    "a duplicate named app {first}, which does not have that route"
                ),
            }
        }
    }
    for (host, raw_path) in &input.requests {
        let Ok(path) = normalize_path(&raw_path.path()) else {
            continue;
        };
        let host = host.as_ref().map(|h| request_host(&h.request_host()));
        let got = router.lookup(host.as_deref(), &path);
        let want = reference(&table, host.as_deref(), &path);
        assert_eq!(got, want, "host {host:?} path {path:?} routes {table:?}");
    }
});

fn reference(table: &Table, host: Option<&str>, path: &str) -> Option<usize> {
    let in_group = |keep: &dyn Fn(&Option<HostPattern>) -> bool| -> Table {
        table.iter().filter(|(p, _, _)| keep(p)).cloned().collect()
    };
    let mut group = Table::new();
    if let Some(host) = host {
        group = in_group(&|p| matches!(p, Some(HostPattern::Exact(h)) if h == host));
        if group.is_empty() {
            let longest = table
                .iter()
                .filter_map(|(p, _, _)| match p {
                    Some(HostPattern::Wildcard(s)) if host.ends_with(s.as_str()) => Some(s.len()),
                    _ => None,
                })
                .max();
            if let Some(len) = longest {
                group = in_group(
                    &|p| matches!(p, Some(HostPattern::Wildcard(s)) if s.len() == len && host.ends_with(s.as_str())),
                );
            }
        }
    }
    if group.is_empty() {
        group = in_group(&|p| p.is_none());
    }
    let trimmed = path.trim_end_matches('/');
    group
        .iter()
        .filter(|(_, prefix, _)| {
            prefix == "/" || trimmed == prefix || path.starts_with(&format!("{prefix}/"))
        })
        .max_by_key(|(_, prefix, _)| if prefix == "/" { 0 } else { prefix.len() })
        .map(|(_, _, app)| *app)
}
