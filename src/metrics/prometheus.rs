//! The Prometheus text exposition format (version 0.0.4) of the totals and live gauges.
//! Counters are totals over every activation, so they only grow; gauges that exist only while
//! the launcher runs (in flight, queued, memory, uptime) are 0 in the file written at exit.

use std::fmt::Write;

use super::saved::{SavedHistogram, SavedState};
use super::{LiveApp, LiveLauncher, COLD_START_BUCKETS, LATENCY_BUCKETS};

pub fn render(totals: &SavedState, launcher: &LiveLauncher, apps: &[LiveApp]) -> String {
    let mut out = String::with_capacity(4096);
    let l = &totals.launcher;
    metric(
        &mut out,
        "ondemand_activations_total",
        "counter",
        "Times the launcher was started by its supervisor.",
    );
    let _ = writeln!(out, "ondemand_activations_total {}", l.activations);
    metric(
        &mut out,
        "ondemand_idle_exits_total",
        "counter",
        "Times the launcher exited because it was idle.",
    );
    let _ = writeln!(out, "ondemand_idle_exits_total {}", l.idle_exits);
    metric(
        &mut out,
        "ondemand_connections_total",
        "counter",
        "Connections accepted.",
    );
    let _ = writeln!(out, "ondemand_connections_total {}", l.connections);
    metric(
        &mut out,
        "ondemand_uptime_seconds_total",
        "counter",
        "Time the launcher has been running, over all activations.",
    );
    let _ = writeln!(out, "ondemand_uptime_seconds_total {:.3}", l.uptime_seconds);
    metric(
        &mut out,
        "ondemand_uptime_seconds",
        "gauge",
        "Time this activation has been running (0 when not running).",
    );
    let _ = writeln!(
        out,
        "ondemand_uptime_seconds {:.3}",
        launcher.uptime.as_secs_f64()
    );
    metric(
        &mut out,
        "ondemand_open_connections",
        "gauge",
        "Connections open now.",
    );
    let _ = writeln!(
        out,
        "ondemand_open_connections {}",
        launcher.open_connections
    );

    metric(
        &mut out,
        "ondemand_app_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    for (name, app) in &totals.apps {
        for (class, n) in &app.requests {
            let _ = writeln!(
                out,
                "ondemand_app_requests_total{{app=\"{}\",class=\"{class}\"}} {n}",
                escape(name)
            );
        }
    }
    metric(
        &mut out,
        "ondemand_app_request_duration_seconds",
        "histogram",
        "Time from request to the end of the response.",
    );
    for (name, app) in &totals.apps {
        histogram(
            &mut out,
            "ondemand_app_request_duration_seconds",
            name,
            LATENCY_BUCKETS,
            &app.latency,
        );
    }
    metric(
        &mut out,
        "ondemand_app_starts_total",
        "counter",
        "Starts of the app's process that became ready.",
    );
    for (name, app) in &totals.apps {
        let _ = writeln!(
            out,
            "ondemand_app_starts_total{{app=\"{}\"}} {}",
            escape(name),
            app.starts
        );
    }
    metric(
        &mut out,
        "ondemand_app_crashes_total",
        "counter",
        "Exits of the app's process that nobody asked for.",
    );
    for (name, app) in &totals.apps {
        let _ = writeln!(
            out,
            "ondemand_app_crashes_total{{app=\"{}\"}} {}",
            escape(name),
            app.crashes
        );
    }
    metric(
        &mut out,
        "ondemand_app_cold_start_seconds",
        "histogram",
        "Time from starting the app's process to its being ready.",
    );
    for (name, app) in &totals.apps {
        histogram(
            &mut out,
            "ondemand_app_cold_start_seconds",
            name,
            COLD_START_BUCKETS,
            &app.cold_start,
        );
    }
    metric(
        &mut out,
        "ondemand_app_in_flight",
        "gauge",
        "Requests being answered now.",
    );
    for app in apps {
        let _ = writeln!(
            out,
            "ondemand_app_in_flight{{app=\"{}\"}} {}",
            escape(&app.name),
            app.in_flight
        );
    }
    metric(
        &mut out,
        "ondemand_app_queued",
        "gauge",
        "Requests waiting for a place in the app (max_concurrency).",
    );
    for app in apps {
        let _ = writeln!(
            out,
            "ondemand_app_queued{{app=\"{}\"}} {}",
            escape(&app.name),
            app.queued
        );
    }
    metric(
        &mut out,
        "ondemand_app_memory_bytes",
        "gauge",
        "Resident memory of the app's processes.",
    );
    for app in apps {
        let _ = writeln!(
            out,
            "ondemand_app_memory_bytes{{app=\"{}\"}} {}",
            escape(&app.name),
            app.memory_bytes
        );
    }
    out
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
