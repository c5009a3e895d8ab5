//! Choosing an upstream among several: least in flight relative to weight, live ones first.
//!
//! The upstream with the fewest requests in flight per unit of weight wins; a slow upstream
//! accumulates requests in flight and so receives fewer new ones. Ties (always the case on a
//! lightly loaded app, where every count is 0) are broken by smooth weighted round-robin (the
//! nginx algorithm), so weights hold for sequential traffic too: 90/10 gives 9 of every 10
//! requests to the first. An upstream that refused a connection is skipped until it is retried;
//! weight 0 takes no traffic.

use std::sync::{Arc, Mutex};

use super::upstream::Upstream;

/// An app's upstreams.
#[derive(Debug)]
pub struct UpstreamSet {
    pub upstreams: Vec<Arc<Upstream>>,
    /// Smooth weighted round-robin state, one entry per upstream.
    current: Mutex<Vec<i64>>,
}

impl UpstreamSet {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> UpstreamSet {
        let current = Mutex::new(vec![0; upstreams.len()]);
        UpstreamSet { upstreams, current }
    }

    /// The next upstream for a request, skipping those in `tried` (by index). Live upstreams
    /// first; when every untried one is dead, the one to retry soonest is tried anyway, so a
    /// request still gets a real answer (a 502 naming the refusal) rather than none. No
    /// allocation: this runs for every proxied request.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| !tried.contains(&i) && self.upstreams[i].weight > 0;
        if self.upstreams.len() == 1 {
            return eligible(0).then_some(0);
        }
        let live = |i: usize| eligible(i) && !self.upstreams[i].is_dead();
        // The lowest in-flight count per unit of weight, compared without division.
        let load = |i: usize| {
            let u = &self.upstreams[i];
            (u.in_flight() as u128, u128::from(u.weight))
        };
        let mut least: Option<(u128, u128)> = None;
        for i in (0..self.upstreams.len()).filter(|&i| live(i)) {
            let (n, w) = load(i);
            if least.is_none_or(|(bn, bw)| n * bw < bn * w) {
                least = Some((n, w));
            }
        }
        let Some((bn, bw)) = least else {
            return (0..self.upstreams.len()).find(|&i| eligible(i));
        };
        let tied = |i: usize| {
            live(i) && {
                let (n, w) = load(i);
                n * bw == bn * w
            }
        };
        Some(self.round_robin(tied))
    }

    /// Smooth weighted round-robin among the upstreams `candidate` accepts (at least one).
    fn round_robin(&self, candidate: impl Fn(usize) -> bool) -> usize {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0;
        let mut chosen = None;
        for i in (0..self.upstreams.len()).filter(|&i| candidate(i)) {
            let weight = i64::from(self.upstreams[i].weight);
            total += weight;
            current[i] += weight;
            if chosen.is_none_or(|c: usize| current[i] > current[c]) {
                chosen = Some(i);
            }
        }
        let chosen = chosen.unwrap_or(0);
        current[chosen] -= total;
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::super::upstream::Address;
    use super::*;

    fn set(weights: &[u32]) -> UpstreamSet {
        UpstreamSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    Arc::new(Upstream::new(
                        Address::Unix(format!("/nonexistent/{i}").into()),
                        w,
                    ))
                })
                .collect(),
        )
    }

    #[test]
    fn sequential_traffic_follows_the_weights() {
        let s = set(&[90, 10]);
        let mut counts = [0; 2];
        for _ in 0..1000 {
            counts[s.pick(&[]).unwrap()] += 1;
        }
        assert_eq!(counts, [900, 100]);
    }

    #[test]
    fn the_least_loaded_wins() {
        let s = set(&[1, 1, 1]);
        let _a = s.upstreams[0].begin();
        let _b = s.upstreams[0].begin();
        let _c = s.upstreams[1].begin();
        assert_eq!(s.pick(&[]), Some(2));
        assert_eq!(s.pick(&[2]), Some(1));
    }

    #[test]
    fn weight_scales_the_load() {
        let s = set(&[3, 1]);
        let _a = s.upstreams[0].begin();
        let _b = s.upstreams[0].begin();
        // 2 of 3 on the first (0.67) beats 0 of 1 on the second? No: 0 < 0.67.
        assert_eq!(s.pick(&[]), Some(1));
        let _c = s.upstreams[1].begin();
        // 2/3 < 1/1.
        assert_eq!(s.pick(&[]), Some(0));
    }

    #[test]
    fn weight_zero_takes_nothing_and_tried_ones_are_skipped() {
        let s = set(&[0, 1]);
        for _ in 0..10 {
            assert_eq!(s.pick(&[]), Some(1));
        }
        assert_eq!(s.pick(&[1]), None);
    }
}
