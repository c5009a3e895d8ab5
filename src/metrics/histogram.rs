//! A fixed-bucket histogram with atomic counters (one `fetch_add` per observation and bucket,
//! no lock), in the shape Prometheus expects: cumulative buckets are computed when rendered.

use std::sync::atomic::{AtomicU64, Ordering};

use super::saved::SavedHistogram;

pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot is "above every bound".
    counts: Vec<AtomicU64>,
    /// Sum of observations in microseconds (an integer, so it can be atomic).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// `base` plus what was observed here, as saved: cumulative buckets, count and sum.
    pub fn add_to(&self, base: &SavedHistogram) -> SavedHistogram {
        let mut buckets = Vec::with_capacity(self.bounds.len());
        let mut running = 0;
        for (i, c) in self.counts.iter().take(self.bounds.len()).enumerate() {
            running += c.load(Ordering::Relaxed);
            buckets.push(base.buckets.get(i).copied().unwrap_or(0) + running);
        }
        let here: u64 = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        SavedHistogram {
            buckets,
            count: base.count + here,
            sum: base.sum + self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_added_to_a_base() {
        static BOUNDS: &[f64] = &[0.1, 1.0];
        let h = Histogram::new(BOUNDS);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let base = SavedHistogram {
            buckets: vec![1, 2],
            count: 3,
            sum: 1.0,
        };
        let total = h.add_to(&base);
        assert_eq!(total.buckets, vec![2, 4]);
        assert_eq!(total.count, 6);
        assert!((total.sum - 6.55).abs() < 1e-6);
    }
}
