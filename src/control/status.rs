//! What `ondemand status` shows: the launcher's header line and one row per app, built live by
//! the running launcher or, when none runs, from the configuration and the state file — so
//! looking never starts anything. Also the filters that pick apps (by name, host, tag or state),
//! shared with `start`/`stop`/`restart`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::config::{App, Config};
use crate::metrics::saved::SavedState;

/// The whole status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub running: bool,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<f64>,
    pub activations: u64,
    pub connections_open: i64,
    pub connections_total: u64,
    pub apps: Vec<AppStatus>,
}

/// One app's row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub handler: String,
    pub hosts: Vec<String>,
    pub path: String,
    pub tags: Vec<String>,
    pub state: String,
    pub pids: Vec<u32>,
    pub uptime_seconds: Option<f64>,
    pub requests: u64,
    pub rps: f64,
    pub in_flight: i64,
    pub queued: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub starts: u64,
    pub crashes: u64,
    pub last_exit: Option<String>,
}

impl AppStatus {
    /// The configured part of a row (name, route, handler, tags), counters from `saved`.
    pub fn configured(app: &App, saved: &SavedState) -> AppStatus {
        let totals = saved.apps.get(&*app.name).cloned().unwrap_or_default();
        AppStatus {
            name: app.name.to_string(),
            handler: app.handler.kind().to_string(),
            hosts: app.hosts.iter().map(ToString::to_string).collect(),
            path: app.path.clone(),
            tags: app.tags.clone(),
            state: if app.runs().is_empty() {
                "-".into()
            } else {
                "idle".into()
            },
            requests: totals.total_requests(),
            starts: totals.starts,
            crashes: totals.crashes,
            last_exit: totals.last_exit,
            ..AppStatus::default()
        }
    }

    /// True when `word` names this app: its name, one of its tags, its state, or a host it
    /// answers for (a configured pattern, or a name that pattern matches).
    pub fn matches(&self, word: &str) -> bool {
        let word_lower = word.to_ascii_lowercase();
        self.name == word
            || self.tags.iter().any(|t| t == word)
            || self.state == word
            || self.hosts.iter().any(|h| {
                *h == word_lower
                    || h.strip_prefix('*')
                        .is_some_and(|suffix| word_lower.ends_with(suffix))
            })
    }
}

/// The status when no launcher runs: every configured app idle, with its last known counters.
pub fn offline(config: &Config, saved: &SavedState) -> Status {
    Status {
        running: false,
        pid: None,
        uptime_seconds: None,
        activations: saved.launcher.activations,
        connections_open: 0,
        connections_total: saved.launcher.connections,
        apps: config
            .apps
            .iter()
            .map(|app| AppStatus::configured(app, saved))
            .collect(),
    }
}

/// Keeps the apps any of `filters` matches (all of them when there is no filter).
pub fn filter(status: &mut Status, filters: &[String]) {
    if !filters.is_empty() {
        status
            .apps
            .retain(|app| filters.iter().any(|f| app.matches(f)));
    }
}

/// The human form: a header line, then the table.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    if status.running {
        let _ = writeln!(
            out,
            "launcher: running, pid {}, up {}, {} activations, {} connections open ({} total)",
            status.pid.unwrap_or(0),
            duration(status.uptime_seconds),
            status.activations,
            status.connections_open,
            status.connections_total
        );
    } else {
        let _ = writeln!(
            out,
            "launcher: not running (it starts with the next connection); {} activations so far, {} connections",
            status.activations, status.connections_total
        );
    }
    let header = [
        "APP",
        "STATE",
        "PID",
        "UPTIME",
        "REQS",
        "RPS",
        "INFL",
        "QUEUE",
        "P50",
        "P99",
        "RSS",
        "CPU",
        "STARTS",
        "CRASH",
        "LAST EXIT",
        "ROUTE",
    ];
    let rows: Vec<Vec<String>> = status.apps.iter().map(row).collect();
    out.push_str(&table(&header, &rows));
    out
}

fn row(a: &AppStatus) -> Vec<String> {
    let dash = || "-".to_string();
    let hosts = if a.hosts.is_empty() {
        "*".to_string()
    } else {
        a.hosts.join(",")
    };
    vec![
        a.name.clone(),
        a.state.clone(),
        if a.pids.is_empty() {
            dash()
        } else {
            a.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
        duration(a.uptime_seconds),
        a.requests.to_string(),
        format!("{:.1}", a.rps),
        a.in_flight.to_string(),
        a.queued.to_string(),
        a.p50_ms.map_or_else(dash, |v| format!("{v:.1}ms")),
        a.p99_ms.map_or_else(dash, |v| format!("{v:.1}ms")),
        if a.rss_bytes == 0 {
            dash()
        } else {
            format!("{:.1}M", a.rss_bytes as f64 / (1024.0 * 1024.0))
        },
        if a.pids.is_empty() {
            dash()
        } else {
            format!("{:.1}s", a.cpu_seconds)
        },
        a.starts.to_string(),
        a.crashes.to_string(),
        a.last_exit.clone().unwrap_or_else(dash),
        format!("{hosts}{} ({})", a.path, a.handler),
    ]
}

fn duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, hosts: &[&str], tags: &[&str], state: &str) -> AppStatus {
        AppStatus {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            state: state.into(),
            ..AppStatus::default()
        }
    }

    #[test]
    fn filters_by_name_host_tag_and_state() {
        let mut s = Status {
            apps: vec![
                app("wiki", &["wiki.example"], &["team-a"], "ready"),
                app("blog", &["*.blog.example"], &["team-b"], "idle"),
                app("api", &[], &["team-a"], "backoff"),
            ],
            ..Status::default()
        };
        let names = |s: &Status| s.apps.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        let mut t = s.clone();
        filter(&mut t, &["team-a".into()]);
        assert_eq!(names(&t), ["wiki", "api"]);
        let mut t = s.clone();
        filter(&mut t, &["WWW.blog.example".into(), "backoff".into()]);
        assert_eq!(names(&t), ["blog", "api"]);
        let mut t = s.clone();
        filter(&mut t, &["wiki.example".into()]);
        assert_eq!(names(&t), ["wiki"]);
        filter(&mut s, &[]);
        assert_eq!(s.apps.len(), 3);
    }

    #[test]
    fn renders_a_table() {
        let s = Status {
            running: true,
            pid: Some(42),
            uptime_seconds: Some(75.0),
            apps: vec![app("wiki", &["wiki.example"], &[], "ready")],
            ..Status::default()
        };
        let text = render(&s);
        assert!(
            text.starts_with("launcher: running, pid 42, up 1m15s"),
            "{text}"
        );
        assert!(text.contains("APP   STATE  PID"), "{text}");
        assert!(text.contains("wiki  ready  -"), "{text}");
    }
}
