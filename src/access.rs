//! The access log: one line per finished request (`access_log = "common"` or `"json"`), through
//! tracing under the target `ondemand::access`, so it goes wherever the log goes (journal, syslog,
//! file). Written when the response has been sent (or the client went away), with the bytes of
//! body actually sent.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::config::AccessLog;

/// The tracing target of access log lines.
pub const TARGET: &str = "ondemand::access";

/// What is known of a request when its response ends.
pub struct Entry<'a> {
    pub peer: Option<IpAddr>,
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
    pub host: &'a str,
    pub app: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    /// Time the upstream took to start its response (proxy and run apps).
    pub upstream: Option<Duration>,
    /// False when the client went away before the response was complete.
    pub complete: bool,
}

/// Writes `entry` in `format`.
pub fn log(format: AccessLog, entry: &Entry<'_>) {
    match format {
        AccessLog::Off => {}
        // The fields become journal fields under systemd (APP=, STATUS=, DURATION_MS=); in text
        // logs they follow the line, which leaves them out.
        AccessLog::Common => tracing::info!(
            target: TARGET,
            app = entry.app,
            status = entry.status,
            duration_ms = millis(entry.duration),
            "{}",
            common(entry, SystemTime::now())
        ),
        AccessLog::Json => tracing::info!(target: TARGET, "{}", json(entry)),
    }
}

/// Common Log Format, then `host=... upstream=...ms` (and `incomplete`); app, status and
/// duration follow as the event's fields.
fn common(e: &Entry<'_>, now: SystemTime) -> String {
    let peer = e.peer.map_or_else(|| "-".to_string(), |p| p.to_string());
    let time = humantime::format_rfc3339_seconds(now);
    let upstream = e
        .upstream
        .map_or_else(|| "-".to_string(), |u| format!("{:.3}ms", millis(u)));
    format!(
        "{peer} - - [{time}] \"{} {} {}\" {} {} host={} upstream={upstream}{}",
        e.method,
        e.target,
        e.version,
        e.status,
        e.bytes,
        if e.host.is_empty() { "-" } else { e.host },
        if e.complete { "" } else { " incomplete" }
    )
}

fn json(e: &Entry<'_>) -> String {
    serde_json::json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "peer": e.peer.map(|p| p.to_string()),
        "method": e.method,
        "target": e.target,
        "version": e.version,
        "host": e.host,
        "app": e.app,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": millis(e.duration),
        "upstream_ms": e.upstream.map(millis),
        "complete": e.complete,
    })
    .to_string()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            peer: Some("192.0.2.1".parse().unwrap()),
            method: "GET",
            target: "/a?b=1",
            version: "HTTP/1.1",
            host: "wiki.example",
            app: "wiki",
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(2500),
            upstream: Some(Duration::from_millis(2)),
            complete: true,
        }
    }

    #[test]
    fn common_format() {
        let line = common(&entry(), SystemTime::UNIX_EPOCH);
        assert_eq!(
            line,
            "192.0.2.1 - - [1970-01-01T00:00:00Z] \"GET /a?b=1 HTTP/1.1\" 200 1234 \
             host=wiki.example upstream=2.000ms"
        );
    }

    #[test]
    fn json_format() {
        let v: serde_json::Value = serde_json::from_str(&json(&entry())).unwrap();
        assert_eq!(v["app"], "wiki");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["upstream_ms"], 2.0);
    }
}
