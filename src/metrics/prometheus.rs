//! The Prometheus text exposition format (version 0.0.4) of the totals and live gauges.
//! Counters are totals over every activation, so they only grow; gauges that exist only while
//! the launcher runs (in flight, queued, memory, uptime) are 0 in the file written at exit.

use std::fmt::Write;

use super::saved::{SavedHistogram, SavedState};
use super::{LiveApp, LiveLauncher, COLD_START_BUCKETS, LATENCY_BUCKETS};

pub fn render(totals: &SavedState, launcher: &LiveLauncher, apps: &[LiveApp]) -> String {
    let mut out = String::with_capacity(4096);
    let l = &totals.launcher;
    let o = &mut out;
    single(
        o,
        "ondemand_activations_total",
        "counter",
        "Times the launcher was started by its supervisor.",
        l.activations,
    );
    single(
        o,
        "ondemand_idle_exits_total",
        "counter",
        "Times the launcher exited because it was idle.",
        l.idle_exits,
    );
    single(
        o,
        "ondemand_connections_total",
        "counter",
        "Connections accepted.",
        l.connections,
    );
    single(
        o,
        "ondemand_uptime_seconds_total",
        "counter",
        "Time the launcher has been running, over all activations.",
        format!("{:.3}", l.uptime_seconds),
    );
    single(
        o,
        "ondemand_uptime_seconds",
        "gauge",
        "Time this activation has been running (0 when not running).",
        format!("{:.3}", launcher.uptime.as_secs_f64()),
    );
    single(
        o,
        "ondemand_open_connections",
        "gauge",
        "Connections open now.",
        launcher.open_connections,
    );

    metric(
        o,
        "ondemand_app_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    for (name, app) in &totals.apps {
        for (class, n) in &app.requests {
            let _ = writeln!(
                o,
                "ondemand_app_requests_total{{app=\"{}\",class=\"{class}\"}} {n}",
                escape(name)
            );
        }
    }
    metric(
        o,
        "ondemand_app_request_duration_seconds",
        "histogram",
        "Time from request to the end of the response.",
    );
    for (name, app) in &totals.apps {
        histogram(
            o,
            "ondemand_app_request_duration_seconds",
            name,
            LATENCY_BUCKETS,
            &app.latency,
        );
    }
    let saved = || totals.apps.iter().map(|(name, app)| (name.as_str(), app));
    per_app(
        o,
        "ondemand_app_starts_total",
        "counter",
        "Starts of the app's process that became ready.",
        saved().map(|(n, a)| (n, a.starts)),
    );
    per_app(
        o,
        "ondemand_app_crashes_total",
        "counter",
        "Exits of the app's process that nobody asked for.",
        saved().map(|(n, a)| (n, a.crashes)),
    );
    metric(
        o,
        "ondemand_app_cold_start_seconds",
        "histogram",
        "Time from starting the app's process to its being ready.",
    );
    for (name, app) in &totals.apps {
        histogram(
            o,
            "ondemand_app_cold_start_seconds",
            name,
            COLD_START_BUCKETS,
            &app.cold_start,
        );
    }
    let live = || apps.iter().map(|a| (a.name.as_str(), a));
    per_app(
        o,
        "ondemand_app_in_flight",
        "gauge",
        "Requests being answered now.",
        live().map(|(n, a)| (n, a.in_flight)),
    );
    per_app(
        o,
        "ondemand_app_queued",
        "gauge",
        "Requests waiting for a place in the app (max_concurrency).",
        live().map(|(n, a)| (n, a.queued)),
    );
    per_app(
        o,
        "ondemand_app_memory_bytes",
        "gauge",
        "Resident memory of the app's processes.",
        live().map(|(n, a)| (n, a.memory_bytes)),
    );
    out
}

/// A metric with one value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    metric(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A metric with one value per app.
fn per_app<'a, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    values: impl Iterator<Item = (&'a str, V)>,
) {
    metric(out, name, kind, help);
    for (app, value) in values {
        let _ = writeln!(out, "{name}{{app=\"{}\"}} {value}", escape(app));
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, app: &str, bounds: &[f64], h: &SavedHistogram) {
    let app = escape(app);
    for (i, bound) in bounds.iter().enumerate() {
        let n = h.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{app=\"{app}\",le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{app=\"{app}\",le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "{name}_sum{{app=\"{app}\"}} {:.6}", h.sum);
    let _ = writeln!(out, "{name}_count{{app=\"{app}\"}} {}", h.count);
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = super::super::Metrics::new("/nonexistent/state.json".into(), None);
        let stats = m.app("wiki");
        stats.record(200, std::time::Duration::from_millis(2));
        let text = m.render(&[LiveApp {
            name: "wiki".into(),
            state: "ready".into(),
            in_flight: 1,
            queued: 0,
            memory_bytes: 4096,
        }]);
        assert!(text.contains("ondemand_activations_total 1\n"), "{text}");
        assert!(text.contains("ondemand_app_requests_total{app=\"wiki\",class=\"2xx\"} 1\n"));
        assert!(text.contains(
            "ondemand_app_request_duration_seconds_bucket{app=\"wiki\",le=\"0.0025\"} 1\n"
        ));
        assert!(text.contains(
            "ondemand_app_request_duration_seconds_bucket{app=\"wiki\",le=\"0.001\"} 0\n"
        ));
        assert!(text.contains("ondemand_app_request_duration_seconds_count{app=\"wiki\"} 1\n"));
        assert!(text.contains("ondemand_app_memory_bytes{app=\"wiki\"} 4096\n"));
        assert!(text.contains("# TYPE ondemand_app_cold_start_seconds histogram\n"));
    }
}
