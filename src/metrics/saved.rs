//! The state file: counters of every activation so far (JSON), read by the next activation and
//! by `ondemand status` when no launcher runs. Written atomically (a temporary file in the same
//! directory, then rename), so a reader never sees half a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedState {
    pub launcher: SavedLauncher,
    pub apps: BTreeMap<String, SavedApp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedLauncher {
    pub activations: u64,
    pub idle_exits: u64,
    pub connections: u64,
    pub uptime_seconds: f64,
    pub last_pid: Option<u32>,
    /// When this was written (Unix seconds).
    pub last_seen: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedApp {
    /// Requests by status class ("2xx"...).
    pub requests: BTreeMap<String, u64>,
    pub latency: SavedHistogram,
    pub starts: u64,
    pub crashes: u64,
    pub cold_start: SavedHistogram,
    pub last_exit: Option<String>,
}

/// Cumulative bucket counts (one per bound), total count and sum (seconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedHistogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl SavedApp {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Nothing counted yet: what a missing entry of the state file reads as.
    pub fn is_unused(&self) -> bool {
        self.total_requests() == 0
            && self.latency.count == 0
            && self.starts == 0
            && self.crashes == 0
            && self.cold_start.count == 0
            && self.last_exit.is_none()
    }
}

/// The state in `path`; empty when there is none yet. An unreadable or corrupt file is logged and
/// counting starts again from zero rather than failing the launcher.
pub fn read(path: &Path) -> SavedState {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "the state file {} is not valid ({e}); counting starts from zero",
                path.display()
            );
            SavedState::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SavedState::default(),
        Err(e) => {
            tracing::warn!("cannot read the state file {}: {e}", path.display());
            SavedState::default()
        }
    }
}

/// Writes `state` to `path`, leaving out the apps that never counted anything: a missing app
/// reads as all zeros, and the file (written at every exit and every `metrics_interval`) grows
/// with the apps that served, not with the apps configured (7 MB for 10,000 idle apps otherwise).
pub fn write(path: &Path, state: &SavedState) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Used<'a> {
        launcher: &'a SavedLauncher,
        apps: BTreeMap<&'a str, &'a SavedApp>,
    }
    let used = Used {
        launcher: &state.launcher,
        apps: state
            .apps
            .iter()
            .filter(|(_, app)| !app.is_unused())
            .map(|(name, app)| (name.as_str(), app))
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&used).map_err(std::io::Error::other)?;
    write_atomically(path, &json)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
