//! Versions of one app, for switching traffic between them: each version has its own handler
//! (`run`, `proxy`, ...) and a weight. A reload with new weights moves traffic at once (the
//! configuration is swapped whole; requests in flight finish where they started); setting a
//! weight back rolls back. A version with weight 0 takes no traffic, but a request naming it in
//! the `X-Ondemand-Version` header reaches it (and starts it if it is a `run`): try a new version
//! before giving it any traffic.

use std::sync::Mutex;

use http::HeaderMap;

use crate::config::Handler;

/// The request header that picks a version by name, whatever its weight.
pub const VERSION_HEADER: &str = "x-ondemand-version";

/// One version of an app.
#[derive(Debug)]
pub struct Version {
    pub name: String,
    pub weight: u32,
    pub handler: Handler,
}

/// An app's versions and the state of the weighted choice among them.
#[derive(Debug)]
pub struct Versions {
    pub list: Vec<Version>,
    /// Smooth weighted round-robin state (as nginx): exact splits, even for sequential traffic.
    current: Mutex<Vec<i64>>,
}

impl Versions {
    pub fn new(list: Vec<Version>) -> Versions {
        let current = Mutex::new(vec![0; list.len()]);
        Versions { list, current }
    }

    /// The version for a request: the one its `X-Ondemand-Version` header names, else one chosen
    /// by weight. None when the header names no version.
    pub fn pick(&self, headers: &HeaderMap) -> Option<&Version> {
        if let Some(wanted) = headers.get(VERSION_HEADER) {
            let wanted = wanted.to_str().ok()?.trim();
            return self.list.iter().find(|v| v.name == wanted);
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let total: i64 = self.list.iter().map(|v| i64::from(v.weight)).sum();
        let mut chosen = None;
        for (i, version) in self.list.iter().enumerate() {
            if version.weight == 0 {
                continue;
            }
            current[i] += i64::from(version.weight);
            if chosen.is_none_or(|c: usize| current[i] > current[c]) {
                chosen = Some(i);
            }
        }
        let chosen = chosen?;
        current[chosen] -= total;
        Some(&self.list[chosen])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::respond::Respond;

    fn versions(weights: &[(&str, u32)]) -> Versions {
        Versions::new(
            weights
                .iter()
                .map(|(name, weight)| Version {
                    name: name.to_string(),
                    weight: *weight,
                    handler: Handler::Respond(Respond::empty()),
                })
                .collect(),
        )
    }

    #[test]
    fn weights_split_sequential_traffic_exactly() {
        let v = versions(&[("blue", 90), ("green", 10), ("canary", 0)]);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..1000 {
            *counts
                .entry(v.pick(&HeaderMap::new()).unwrap().name.clone())
                .or_insert(0) += 1;
        }
        assert_eq!(counts["blue"], 900);
        assert_eq!(counts["green"], 100);
        assert!(!counts.contains_key("canary"));
    }

    #[test]
    fn the_header_picks_any_version_even_weight_zero() {
        let v = versions(&[("blue", 1), ("canary", 0)]);
        let mut h = HeaderMap::new();
        h.insert(VERSION_HEADER, "canary".parse().unwrap());
        assert_eq!(v.pick(&h).unwrap().name, "canary");
        h.insert(VERSION_HEADER, "nope".parse().unwrap());
        assert!(v.pick(&h).is_none());
    }
}
