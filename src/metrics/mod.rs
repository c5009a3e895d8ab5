//! Counters and histograms per app and for the launcher, that continue across activations.
//!
//! Each activation counts in memory from zero. The totals of earlier activations are read from
//! the state file (`state_dir/state.json`) only when first needed — the first periodic write,
//! a `/metrics` scrape, `ondemand status` — never at start-up. Totals are written back atomically
//! every `metrics_interval` and at exit, together with the Prometheus text file when
//! `metrics_file` is set (node_exporter's textfile collector), so a scrape never needs the
//! launcher up and never keeps it up.
//!
//! - [`histogram`]: fixed-bucket histograms.
//! - [`saved`]: the state file: what earlier activations counted.
//! - [`prometheus`]: the text exposition format.

pub mod histogram;
pub mod prometheus;
pub mod saved;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use histogram::Histogram;
use saved::{SavedApp, SavedHistogram, SavedLauncher, SavedState};

/// Upper bounds (seconds) of the request latency buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the cold-start buckets (process start to ready).
pub const COLD_START_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Latencies kept for the status table's percentiles.
const RECENT_LATENCIES: usize = 1024;
/// The window of "RPS over the last minute".
const WINDOW_SECONDS: usize = 60;

/// Everything counted, for the whole launcher.
pub struct Metrics {
    pub launcher: LauncherStats,
    apps: Mutex<BTreeMap<String, Arc<AppStats>>>,
    /// Totals of earlier activations; read on first need.
    saved: Mutex<Option<SavedState>>,
    pub state_file: PathBuf,
    pub metrics_file: Option<PathBuf>,
}

/// The launcher's own counters since this activation.
pub struct LauncherStats {
    pub started: Instant,
    pub connections: AtomicU64,
    pub open_connections: AtomicI64,
}

/// One app's counters since this activation, and what the status table shows of it now.
pub struct AppStats {
    /// Requests by status class: 1xx to 5xx.
    pub requests: [AtomicU64; 5],
    pub latency: Histogram,
    pub in_flight: AtomicI64,
    pub starts: AtomicU64,
    pub crashes: AtomicU64,
    pub cold_start: Histogram,
    pub last_exit: Mutex<Option<String>>,
    recent: Mutex<Recent>,
}

/// Recent requests: latencies for percentiles, counts per second for the rate.
struct Recent {
    latencies: std::collections::VecDeque<(Instant, f64)>,
    per_second: [u32; WINDOW_SECONDS],
    /// The second (since `epoch`) `per_second` was last written for.
    last_second: u64,
    epoch: Instant,
}

impl std::fmt::Debug for AppStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStats").finish_non_exhaustive()
    }
}

impl Default for AppStats {
    fn default() -> Self {
        AppStats {
            requests: Default::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            in_flight: AtomicI64::new(0),
            starts: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            cold_start: Histogram::new(COLD_START_BUCKETS),
            last_exit: Mutex::new(None),
            recent: Mutex::new(Recent {
                latencies: std::collections::VecDeque::new(),
                per_second: [0; WINDOW_SECONDS],
                last_second: 0,
                epoch: Instant::now(),
            }),
        }
    }
}

impl AppStats {
    /// Counts one finished request.
    pub fn record(&self, status: u16, latency: Duration) {
        self.record_at(status, latency, Instant::now());
    }

    /// [`AppStats::record`] of a request that ended at `now` (a clock read the caller made).
    pub fn record_at(&self, status: u16, latency: Duration, now: Instant) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        let seconds = latency.as_secs_f64();
        self.latency.observe(seconds);
        let mut recent = lock(&self.recent);
        recent.advance(now);
        let slot = (recent.last_second % WINDOW_SECONDS as u64) as usize;
        recent.per_second[slot] += 1;
        if recent.latencies.len() == RECENT_LATENCIES {
            recent.latencies.pop_front();
        }
        recent.latencies.push_back((now, seconds));
    }

    /// Requests per second over the last minute, and p50/p99 latency (seconds) of the requests of
    /// the last minute (at most the last 1024).
    pub fn recent(&self) -> (f64, Option<f64>, Option<f64>) {
        let now = Instant::now();
        let mut recent = lock(&self.recent);
        recent.advance(now);
        let total: u32 = recent.per_second.iter().sum();
        let minute_ago = now.checked_sub(Duration::from_secs(60));
        let mut latencies: Vec<f64> = recent
            .latencies
            .iter()
            .filter(|(t, _)| minute_ago.is_none_or(|m| *t >= m))
            .map(|(_, l)| *l)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            (!latencies.is_empty()).then(|| {
                let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
                latencies[rank - 1]
            })
        };
        (
            f64::from(total) / WINDOW_SECONDS as f64,
            pct(0.5),
            pct(0.99),
        )
    }

    /// Counts a start of the app's process that became ready after `cold_start`.
    pub fn started(&self, cold_start: Duration) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        self.cold_start.observe(cold_start.as_secs_f64());
    }

    /// Counts an exit of the app's process; `crash` when nobody asked for it.
    pub fn exited(&self, how: &str, crash: bool) {
        if crash {
            self.crashes.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.last_exit) = Some(how.to_string());
    }

    fn saved(&self, base: Option<&SavedApp>) -> SavedApp {
        let base = base.cloned().unwrap_or_default();
        let mut requests = base.requests;
        for (i, n) in self.requests.iter().enumerate() {
            *requests.entry(format!("{}xx", i + 1)).or_default() += n.load(Ordering::Relaxed);
        }
        SavedApp {
            requests,
            latency: self.latency.add_to(&base.latency),
            starts: base.starts + self.starts.load(Ordering::Relaxed),
            crashes: base.crashes + self.crashes.load(Ordering::Relaxed),
            cold_start: self.cold_start.add_to(&base.cold_start),
            last_exit: lock(&self.last_exit).clone().or(base.last_exit),
        }
    }
}

impl Recent {
    /// Moves the per-second window to `now`, clearing the seconds that passed.
    fn advance(&mut self, now: Instant) {
        let second = now.duration_since(self.epoch).as_secs();
        let passed = second
            .saturating_sub(self.last_second)
            .min(WINDOW_SECONDS as u64);
        for s in 1..=passed {
            self.per_second[((self.last_second + s) % WINDOW_SECONDS as u64) as usize] = 0;
        }
        self.last_second = self.last_second.max(second);
    }
}

impl Metrics {
    pub fn new(state_file: PathBuf, metrics_file: Option<PathBuf>) -> Metrics {
        Metrics {
            launcher: LauncherStats {
                started: Instant::now(),
                connections: AtomicU64::new(0),
                open_connections: AtomicI64::new(0),
            },
            apps: Mutex::new(BTreeMap::new()),
            saved: Mutex::new(None),
            state_file,
            metrics_file,
        }
    }

    /// The stats of app `name` (the same object for the same name, across reloads).
    pub fn app(&self, name: &str) -> Arc<AppStats> {
        lock(&self.apps)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The totals over every activation, this one included (`idle_exit`: this activation is
    /// ending because it was idle).
    pub fn totals(&self, idle_exit: bool) -> SavedState {
        let mut saved = lock(&self.saved);
        let base = saved.get_or_insert_with(|| saved::read(&self.state_file));
        let mut apps = base.apps.clone();
        for (name, stats) in lock(&self.apps).iter() {
            let total = stats.saved(base.apps.get(name));
            apps.insert(name.clone(), total);
        }
        let l = &base.launcher;
        SavedState {
            launcher: SavedLauncher {
                activations: l.activations + 1,
                idle_exits: l.idle_exits + u64::from(idle_exit),
                connections: l.connections + self.launcher.connections.load(Ordering::Relaxed),
                uptime_seconds: l.uptime_seconds + self.launcher.started.elapsed().as_secs_f64(),
                last_pid: Some(std::process::id()),
                last_seen: unix_seconds(),
            },
            apps,
        }
    }

    /// Writes the state file and the metrics file (if set), each atomically. At `exit`, the live
    /// gauges are written as 0: nothing runs once the launcher is gone.
    pub fn persist(&self, exit: Exit, apps_now: &[LiveApp]) {
        let idle_exit = exit == Exit::Idle;
        let totals = self.totals(idle_exit);
        if let Err(e) = saved::write(&self.state_file, &totals) {
            tracing::warn!(
                "cannot write the state file {}: {e}",
                self.state_file.display()
            );
        }
        if let Some(path) = &self.metrics_file {
            let launcher = match exit {
                Exit::NotYet => self.live_launcher(),
                Exit::Idle | Exit::Stopped => LiveLauncher {
                    uptime: Duration::ZERO,
                    open_connections: 0,
                },
            };
            let text = prometheus::render(&totals, &launcher, apps_now);
            if let Err(e) = saved::write_atomically(path, text.as_bytes()) {
                tracing::warn!("cannot write the metrics file {}: {e}", path.display());
            }
        }
    }

    /// The Prometheus text of everything, live.
    pub fn render(&self, apps_now: &[LiveApp]) -> String {
        prometheus::render(&self.totals(false), &self.live_launcher(), apps_now)
    }

    fn live_launcher(&self) -> LiveLauncher {
        LiveLauncher {
            uptime: self.launcher.started.elapsed(),
            open_connections: self.launcher.open_connections.load(Ordering::Relaxed),
        }
    }
}

/// Whether the launcher is exiting, and why, when the files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    NotYet,
    Idle,
    Stopped,
}

/// Gauges of the launcher that only exist while it runs.
pub struct LiveLauncher {
    pub uptime: Duration,
    pub open_connections: i64,
}

/// Gauges of an app that only exist while the launcher runs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LiveApp {
    pub name: String,
    pub state: String,
    pub in_flight: i64,
    pub queued: usize,
    pub memory_bytes: u64,
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A histogram's totals as saved.
pub fn empty_histogram(bounds: &[f64]) -> SavedHistogram {
    SavedHistogram {
        buckets: vec![0; bounds.len()],
        count: 0,
        sum: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_continue_from_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        for activation in 1..=3u64 {
            let m = Metrics::new(file.clone(), None);
            let app = m.app("wiki");
            app.record(200, Duration::from_millis(3));
            app.record(503, Duration::from_millis(1));
            app.started(Duration::from_millis(40));
            m.persist(Exit::Idle, &[]);
            let t = m.totals(true);
            assert_eq!(t.launcher.activations, activation);
            assert_eq!(t.launcher.idle_exits, activation);
            let wiki = &t.apps["wiki"];
            assert_eq!(wiki.requests["2xx"], activation);
            assert_eq!(wiki.requests["5xx"], activation);
            assert_eq!(wiki.latency.count, 2 * activation);
            assert_eq!(wiki.starts, activation);
        }
    }

    #[test]
    fn the_state_file_leaves_out_apps_that_counted_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        let m = Metrics::new(file.clone(), None);
        m.app("wiki").record(200, Duration::from_millis(3));
        for i in 0..1000 {
            m.app(&format!("idle{i}"));
        }
        m.persist(Exit::Idle, &[]);
        let saved = saved::read(&file);
        assert_eq!(saved.apps.keys().collect::<Vec<_>>(), ["wiki"]);
        assert!(std::fs::metadata(&file).unwrap().len() < 2000);
        // The totals (the metrics, `ondemand status`) still have every app, at zero.
        let t = m.totals(true);
        assert_eq!(t.apps.len(), 1001);
        assert_eq!(t.apps["idle7"].total_requests(), 0);
        // The next activation counts on from the file, for the idle apps too.
        let next = Metrics::new(file.clone(), None);
        next.app("idle7").record(404, Duration::from_millis(1));
        next.persist(Exit::Idle, &[]);
        let saved = saved::read(&file);
        assert_eq!(saved.apps.keys().collect::<Vec<_>>(), ["idle7", "wiki"]);
        assert_eq!(saved.apps["wiki"].requests["2xx"], 1);
        assert_eq!(saved.apps["idle7"].requests["4xx"], 1);
    }

    #[test]
    fn recent_rate_and_percentiles() {
        let app = AppStats::default();
        assert_eq!(app.recent(), (0.0, None, None));
        for ms in 1..=100 {
            app.record(200, Duration::from_millis(ms));
        }
        let (rps, p50, p99) = app.recent();
        assert!((rps - 100.0 / 60.0).abs() < 1e-9);
        assert_eq!(p50, Some(0.050));
        assert_eq!(p99, Some(0.099));
    }
}
