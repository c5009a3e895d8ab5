//! Operating a launcher: `ondemand status|start|stop|restart|reload` against a running launcher
//! and against none, metrics that continue across activations, the access log, reload under
//! load, and traffic switching between versions by weight.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::server::Ondemand;
use crate::support::upstream::{app_path, TestUpstream, PYTHON};
use crate::support::{bin, get, tempdir, wait_until, write_file};

fn run_app(name: &str, host: &str, tags: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nhost = \"{host}\"\ntags = {tags}\n[app.run]\n\
         command = [\"{PYTHON}\", \"{}\", \"--fd\", \"--name\", \"{name}\"]\n\n",
        app_path("upstream.py").display()
    )
}

fn cli(od_config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(od_config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(config: &std::path::Path, filters: &[&str]) -> Value {
    let mut args = vec!["status", "--json"];
    args.extend(filters);
    let (code, out, err) = cli(config, &args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn app<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no app {name} in {status}"))
}

fn apps_config(dir: &tempfile::TempDir, idle: &str) -> String {
    format!(
        "[server]\nidle_timeout = \"{idle}\"\nruntime_dir = \"{d}\"\naccess_log = \"json\"\n\n{}{}\
         [[app]]\nname = \"hello\"\ntags = [\"static-ish\"]\nrespond = {{ body = \"hi\\n\" }}\n",
        run_app("wiki", "wiki.example", "[\"team-a\"]"),
        run_app("blog", "*.blog.example", "[\"team-b\"]"),
        d = dir.path().display(),
    )
}

#[test]
fn status_without_a_launcher_lists_the_configured_apps_and_starts_nothing() {
    let dir = tempdir();
    let config = write_file(
        dir.path(),
        "c.toml",
        &format!(
            "[server]\nstate_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\nruntime_dir = \"{d}\"\n\n{}",
            run_app("wiki", "wiki.example", "[]"),
            d = dir.path().display()
        ),
    );
    let (code, out, err) = cli(&config, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("launcher: not running"), "{out}");
    let row: Vec<&str> = out.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["wiki", "idle"], "{out}");
    let json = status_json(&config, &[]);
    assert_eq!(json["running"], false);
    assert_eq!(app(&json, "wiki")["state"], "idle");
    // Nothing was started: no socket, no app directory, no control socket.
    assert!(!dir.path().join("apps").exists());
    assert!(!dir.path().join("control.sock").exists());
    // stop and restart have nothing to do; reload checks the file.
    let (code, out, _) = cli(&config, &["stop", "wiki"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("not running") && out.contains("0 apps stopped"),
        "{out}"
    );
    let (code, out, _) = cli(&config, &["reload"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("is valid; the launcher is not running"),
        "{out}"
    );
}

#[test]
fn status_start_stop_restart_on_a_running_launcher() {
    let dir = tempdir();
    let od = Ondemand::start(&apps_config(&dir, "never"));
    for _ in 0..3 {
        assert_eq!(get(od.port, "wiki.example", "/pid").unwrap().status, 200);
        assert_eq!(get(od.port, "x", "/").unwrap().status, 200);
    }
    let status = status_json(&od.config, &[]);
    assert_eq!(status["running"], true);
    assert_eq!(status["pid"], od.child.pid());
    let wiki = app(&status, "wiki");
    assert_eq!(wiki["state"], "ready");
    assert_eq!(wiki["requests"], 3);
    assert_eq!(wiki["starts"], 1);
    assert!(wiki["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(wiki["rss_bytes"].as_u64().unwrap() > 1_000_000);
    let wiki_pid = wiki["pids"][0].as_u64().unwrap();
    assert_eq!(app(&status, "blog")["state"], "idle");
    assert_eq!(app(&status, "hello")["requests"], 3);

    // The table, and filters by tag, host, state and name.
    let (_, table, _) = cli(&od.config, &["status"]);
    assert!(
        table.starts_with(&format!("launcher: running, pid {}", od.child.pid())),
        "{table}"
    );
    assert!(table.contains("APP") && table.contains("P99") && table.contains("LAST EXIT"));
    let names = |v: &Value| -> Vec<String> {
        v["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&status_json(&od.config, &["team-b"])), ["blog"]);
    assert_eq!(
        names(&status_json(&od.config, &["www.blog.example"])),
        ["blog"]
    );
    assert_eq!(
        names(&status_json(&od.config, &["ready"])),
        ["wiki", "hello"]
    );

    // An action on everything needs --all.
    let (code, _, err) = cli(&od.config, &["stop"]);
    assert_eq!(code, 1);
    assert!(err.contains("--all"), "{err}");

    let (code, out, _) = cli(&od.config, &["stop", "team-a"]);
    assert_eq!((code, out.as_str()), (0, "stopped 1 app: wiki\n"));
    wait_until("wiki to stop", Duration::from_secs(10), || {
        app(&status_json(&od.config, &["wiki"]), "wiki")["state"] == "idle"
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{wiki_pid}")).exists() || {
            let stat =
                std::fs::read_to_string(format!("/proc/{wiki_pid}/stat")).unwrap_or_default();
            stat.contains(") Z")
        }
    );

    // start is a pre-warm: the app runs before any request.
    let (code, out, _) = cli(&od.config, &["start", "blog", "wiki"]);
    assert_eq!((code, out.as_str()), (0, "started 2 apps: wiki, blog\n"));
    wait_until("both apps ready", Duration::from_secs(10), || {
        status_json(&od.config, &["ready"])["apps"]
            .as_array()
            .unwrap()
            .len()
            == 3
    });
    let before = app(&status_json(&od.config, &[]), "blog")["pids"][0].clone();
    let (code, out, _) = cli(&od.config, &["restart", "blog"]);
    assert_eq!((code, out.as_str()), (0, "restarted 1 app: blog\n"));
    wait_until("blog restarted", Duration::from_secs(10), || {
        let s = status_json(&od.config, &["blog"]);
        let b = app(&s, "blog");
        b["state"] == "ready" && b["pids"][0] != before
    });
    let (code, out, _) = cli(&od.config, &["stop", "--all"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("stopped 2 apps: wiki, blog\nnot stopped (no process of their own): hello"),
        "{out}"
    );
    let (code, out, _) = cli(&od.config, &["start", "nothing-like-this"]);
    assert_eq!(code, 1);
    assert!(out.contains("no app matched"), "{out}");
}

#[test]
fn looking_never_keeps_the_launcher_up() {
    let dir = tempdir();
    let mut od = Ondemand::start(&apps_config(&dir, "1500ms"));
    let started = Instant::now();
    while od.is_running() && started.elapsed() < Duration::from_secs(10) {
        let _ = cli(&od.config, &["status"]);
        let _ = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--unix-socket"])
            .arg(od.dir.path().join("control.sock"))
            .arg("http://x/metrics")
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(od.wait_exit(Duration::from_secs(5)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the launcher stayed up {:?} while being looked at",
        started.elapsed()
    );
}

#[test]
fn reload_command_prints_the_outcome_and_keeps_a_valid_config() {
    let dir = tempdir();
    let od = Ondemand::start(&apps_config(&dir, "never"));
    let (code, out, _) = cli(&od.config, &["reload"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("configuration reloaded from") && out.contains("3 apps"),
        "{out}"
    );
    let good = std::fs::read_to_string(&od.config).unwrap();
    std::fs::write(
        &od.config,
        good.replace("idle_timeout = \"never\"", "idle_timeout = \"soon\""),
    )
    .unwrap();
    // The CLI itself refuses to work from a broken file: it says where it is broken.
    let (code, _, err) = cli(&od.config, &["reload"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid duration \"soon\""), "{err}");
    // Through the control socket directly, the launcher answers with the error and keeps going.
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(od.dir.path().join("control.sock"))
        .arg("http://x/reload")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("the running configuration is kept") && text.ends_with("422"),
        "{text}"
    );
    assert_eq!(get(od.port, "x", "/").unwrap().text(), "hi\n");
}

/// The state and metrics files: written at exit, read back by the next activation, so counters
/// only grow across activations.
#[test]
fn metrics_counters_continue_across_three_activations() {
    let dir = tempdir();
    let state = dir.path().join("state");
    let prom = dir.path().join("ondemand.prom");
    let config = format!(
        "[server]\nidle_timeout = \"300ms\"\nstate_dir = \"{}\"\nmetrics_file = \"{}\"\n\
         control_socket = \"{}\"\n\n\
         [[app]]\nname = \"hello\"\nrespond = {{ body = \"hi\\n\" }}\n",
        state.display(),
        prom.display(),
        dir.path().join("control.sock").display()
    );
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let mut last = (0, 0);
    for activation in 1..=3u64 {
        let mut od = Ondemand::start(&config);
        for _ in 0..activation {
            assert_eq!(get(od.port, "x", "/").unwrap().status, 200);
        }
        assert_eq!(od.wait_exit(Duration::from_secs(10)), 0);
        let text = std::fs::read_to_string(&prom).unwrap();
        let activations = value(&text, "ondemand_activations_total");
        let requests = value(
            &text,
            "ondemand_app_requests_total{app=\"hello\",class=\"2xx\"}",
        );
        assert_eq!(activations, activation);
        assert_eq!(value(&text, "ondemand_idle_exits_total"), activation);
        assert!(
            requests > last.1,
            "requests went from {} to {requests}",
            last.1
        );
        assert_eq!(requests, activation * (activation + 1) / 2);
        last = (activations, requests);
        // Live gauges are 0 in the file a stopped launcher leaves.
        assert!(text.contains("\nondemand_uptime_seconds 0.000\n"), "{text}");
    }
    // `status` without a launcher shows the saved counters.
    let (_, out, _) = cli(
        &write_file(dir.path(), "again.toml", &config),
        &["status", "--json"],
    );
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["activations"], 3);
    assert_eq!(app(&s, "hello")["requests"], 6);
}

#[test]
fn metrics_live_on_the_control_socket_and_the_access_log() {
    let dir = tempdir();
    let od = Ondemand::start(&apps_config(&dir, "never"));
    assert_eq!(get(od.port, "wiki.example", "/pid").unwrap().status, 200);
    assert_eq!(get(od.port, "x", "/").unwrap().status, 200);
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(od.dir.path().join("control.sock"))
        .arg("http://x/metrics")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ondemand_app_requests_total{app=\"wiki\",class=\"2xx\"} 1",
        "ondemand_app_starts_total{app=\"wiki\"} 1",
        "ondemand_app_cold_start_seconds_count{app=\"wiki\"} 1",
        "ondemand_app_request_duration_seconds_count{app=\"hello\"} 1",
        "ondemand_activations_total 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(text.contains("ondemand_app_memory_bytes{app=\"wiki\"} "));
    // One JSON access log line per request, with app, status, bytes, duration, upstream time.
    od.wait_log("\"app\":\"wiki\"", Duration::from_secs(5));
    let log = od.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("\"app\":\"wiki\""))
        .unwrap();
    let json: Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    assert_eq!(json["status"], 200);
    assert_eq!(json["target"], "/pid");
    assert!(json["bytes"].as_u64().unwrap() > 0);
    assert!(json["upstream_ms"].as_f64().is_some());
    assert_eq!(json["complete"], true);
}

/// Constant load on a run app and a proxy app while the configuration is reloaded ten times:
/// not one request fails, and the unchanged app keeps its process.
#[test]
fn reload_under_load_fails_no_request() {
    let dir = tempdir();
    let up = TestUpstream::tcp("up");
    let config = format!(
        "{}[[app]]\nname = \"api\"\npath = \"/api\"\nproxy = {{ upstream = \"{}\", strip_prefix = true }}\n",
        apps_config(&dir, "never"),
        up.address
    );
    let od = Ondemand::start(&config);
    // Edits start from the file as written (the harness adds its settings to it).
    let config = std::fs::read_to_string(&od.config).unwrap();
    let wiki_pid = get(od.port, "wiki.example", "/pid").unwrap().text();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, done, port) = (stop.clone(), done.clone(), od.port);
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (host, path) = if i % 2 == 0 {
                        ("wiki.example", "/pid")
                    } else {
                        ("x", "/api/pid")
                    };
                    match get(port, host, path) {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                        Err(e) => failures.push(e.to_string()),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    let mut last_requests = 0;
    for i in 0..10 {
        let text = config.replace(
            "respond = { body = \"hi\\n\" }",
            &format!("respond = {{ body = \"hi {i}\\n\" }}"),
        );
        std::fs::write(&od.config, text).unwrap();
        let (code, out, err) = cli(&od.config, &["reload"]);
        assert_eq!(code, 0, "{out}{err}");
        // Status under load answers, with counters that only grow.
        let t = Instant::now();
        let status = status_json(&od.config, &[]);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "status took {:?}",
            t.elapsed()
        );
        let requests = app(&status, "wiki")["requests"].as_u64().unwrap();
        assert!(requests >= last_requests, "{requests} < {last_requests}");
        last_requests = requests;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "too little load to mean anything"
    );
    assert_eq!(
        get(od.port, "wiki.example", "/pid").unwrap().text(),
        wiki_pid
    );
    assert_eq!(get(od.port, "x", "/").unwrap().text(), "hi 9\n");
}

/// Versions with weights: a weight change under load moves the split atomically (within ±5%
/// over 2,000 requests), a version with weight 0 is reachable by header only, and setting the
/// weights back rolls back.
#[test]
fn weights_switch_traffic_between_versions() {
    let blue = TestUpstream::tcp("blue");
    let green = TestUpstream::tcp("green");
    let shop = |blue_weight: u32, green_weight: u32| {
        format!(
            "[server]\nidle_timeout = \"never\"\n\n[[app]]\nname = \"shop\"\n\
             [[app.version]]\nname = \"blue\"\nweight = {blue_weight}\nproxy = {{ upstream = \"{}\" }}\n\
             [[app.version]]\nname = \"green\"\nweight = {green_weight}\nproxy = {{ upstream = \"{}\" }}\n",
            blue.address, green.address
        )
    };
    let od = Ondemand::start(&shop(100, 0));
    let split = |n: usize| {
        let greens: Vec<_> = (0..4)
            .map(|_| {
                let port = od.port;
                std::thread::spawn(move || {
                    (0..n / 4)
                        .filter(|_| {
                            let r = get(port, "shop", "/pid").unwrap();
                            assert_eq!(r.status, 200);
                            r.header("x-upstream") == Some("green")
                        })
                        .count()
                })
            })
            .collect();
        greens.into_iter().map(|t| t.join().unwrap()).sum::<usize>()
    };
    assert_eq!(split(200), 0, "weight 0 takes no traffic");
    let direct = crate::support::raw_request(
        od.port,
        b"GET /pid HTTP/1.1\r\nHost: shop\r\nX-Ondemand-Version: green\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(direct.header("x-upstream"), Some("green"));

    // 70/30 under load: the reload happens while requests flow.
    let during = {
        let port = od.port;
        std::thread::spawn(move || {
            (0..300).all(|_| get(port, "shop", "/pid").unwrap().status == 200)
        })
    };
    std::fs::write(&od.config, {
        let text = std::fs::read_to_string(&od.config).unwrap();
        text.replace("weight = 100", "weight = 70")
            .replace("weight = 0", "weight = 30")
    })
    .unwrap();
    assert_eq!(cli(&od.config, &["reload"]).0, 0);
    assert!(during.join().unwrap(), "a request failed during the switch");
    let greens = split(2000);
    let share = greens as f64 / 2000.0;
    assert!(
        (share - 0.30).abs() <= 0.05,
        "green got {share:.3} of the traffic, not 0.30 ± 0.05"
    );

    // Roll back.
    std::fs::write(&od.config, {
        let text = std::fs::read_to_string(&od.config).unwrap();
        text.replace("weight = 70", "weight = 100")
            .replace("weight = 30", "weight = 0")
    })
    .unwrap();
    assert_eq!(cli(&od.config, &["reload"]).0, 0);
    assert_eq!(split(200), 0);
}
