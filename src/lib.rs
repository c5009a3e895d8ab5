//! ondemand: a socket-activated launcher that routes HTTP requests to many mostly-idle apps and
//! exits when idle, so nothing stays resident while no one uses them.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`access`]: the access log.
//! - [`metrics`]: counters that continue across activations; the Prometheus text.
//! - [`control`]: the control socket and the commands that use it (status, start, stop, reload).
//! - [`config`]: reading and checking `ondemand.toml` (file mirror → validated [`config::Config`]).
//! - [`listen`]: the sockets, from systemd, xinetd or `--listen`.
//! - [`server`]: accepting, serving HTTP/1.1 and h2c, the head deadlines, the stop sequence.
//! - [`tls`]: HTTPS on the sockets named `https`: certificates chosen by SNI, loaded lazily.
//! - [`routing`]: Host + path → app, and request-path normalization.
//! - [`handlers`]: what answers an app's requests (`respond`, `static`, `proxy`), and ondemand's own error responses.
//! - [`proxy`]: forwarding to upstream HTTP/1.1 servers (pools, balancing, headers, WebSocket).
//! - [`apps`]: on-demand app processes (`run`): start, readiness, idle stop, crashes, bulkheads.
//! - [`idle`]: activity tracking and the idle timer.
//! - [`timer`]: deadlines re-armed lazily, and a connection's timer lent to its requests.
//! - [`notify`]: sd_notify (READY, STATUS, STOPPING, WATCHDOG).
//! - [`shutdown`]: the signals that stop and reload.
//! - [`logging`]: stderr, syslog or a file, per mode.

pub mod access;
pub mod apps;
pub mod cli;
pub mod config;
pub mod control;
pub mod handlers;
pub mod idle;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod socket_write;
pub mod timer;
pub mod tls;

/// What the fuzz targets in `fuzz/` call: the functions `ondemand check` and the router use,
/// re-exported so the fuzzers reach them without widening the crate's public surface.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::config::{parse as parse_config, ConfigError};
    pub use crate::handlers::static_files::relative_path as static_relative_path;
    pub use crate::routing::path::{normalize as normalize_path, PathError};
    pub use crate::routing::{request_host, HostPattern, Router};

    /// An app's `path` as the config turns it into a route prefix.
    pub fn path_prefix(raw: &str) -> Result<String, String> {
        crate::config::validate::path_prefix_of(raw)
    }
}

use anyhow::{Context, Result};

/// Builds the runtime and serves until idle or stopped.
pub fn serve(
    config: config::Config,
    listeners: listen::Listeners,
    log: logging::LogHandle,
) -> Result<()> {
    let runtime = runtime_builder(config.server.threads)
        .enable_all()
        .thread_name("ondemand")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(server::run(config, listeners, log))
}

/// One thread: a current-thread runtime, which starts in a fraction of the time a pool takes
/// (no threads to create), and that start is paid on every activation. More: a work-stealing pool.
fn runtime_builder(threads: Option<usize>) -> tokio::runtime::Builder {
    let threads = threads.unwrap_or_else(cpus_available);
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    builder
}

/// CPUs this process may run on (its affinity mask): one syscall, where std and tokio also read
/// the cgroup files to find a CPU quota.
fn cpus_available() -> usize {
    use nix::sched::{sched_getaffinity, CpuSet};
    sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// Raises the soft open-files limit to the hard limit: each connection needs a descriptor, and
/// the default soft limit (1024) is below what `max_connections` usually asks for.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The certificates of `config` for `ondemand check` (empty when there are none).
pub fn certificate_table(config: &config::Config) -> String {
    let rows: Vec<[String; 2]> = config
        .tls
        .entries
        .iter()
        .map(|c| {
            let (names, file) = c.describe();
            [names, file]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(5);
    let mut out = format!("\n{:<width$}  CERTIFICATE\n", "NAMES");
    for [names, file] in rows {
        out.push_str(&format!("{names:<width$}  {file}\n"));
    }
    out
}

/// Prints the route table of `config` for `ondemand check`.
pub fn route_table(config: &config::Config) -> String {
    let rows: Vec<[String; 4]> = config
        .apps
        .iter()
        .map(|app| {
            let hosts = if app.hosts.is_empty() {
                "*".to_string()
            } else {
                app.hosts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            [
                app.name.to_string(),
                hosts,
                app.path.clone(),
                app.handler.kind().to_string(),
            ]
        })
        .collect();
    let header = ["APP", "HOSTS", "PATH", "HANDLER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
