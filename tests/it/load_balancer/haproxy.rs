//! Two hosts behind a real HAProxy, all on this machine as network namespaces:
//!
//! ```text
//!   client 10.77.3.2 ──► lb 10.77.3.1:80 (HAProxy, send-proxy-v2, httpchk /healthz)
//!                         ├─► host a 10.77.1.2 (xinetd → ondemand, proxy_protocol = true)
//!                         └─► host b 10.77.2.2 (xinetd → ondemand, proxy_protocol = true)
//! ```
//!
//! Checked end to end: the client's address reaches the apps and the access log through PROXY v2;
//! HAProxy's health probes do not keep a host's launcher up (the host sleeps between them); and
//! host a going down (its xinetd stopped, its launcher stopped) is drained by HAProxy with no
//! failed request, host b serving everything.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::netns::{link, Netns};
use crate::support::upstream::{app_path, PYTHON};
use crate::support::xinetd::{pid_alive, service_block_on, Xinetd};
use crate::support::{bin, read_response, tempdir, wait_until, write_file, ChildGuard, Response};

const FRONT: &str = "10.77.3.1:80";
const CLIENT: &str = "10.77.3.2";
/// HAProxy probes every host this often; the launchers' idle_timeout is shorter, so a host
/// sleeps between probes.
const PROBE_INTERVAL: &str = "1s";
const IDLE_TIMEOUT: &str = "400ms";

/// One host: ondemand under a real xinetd, in its namespace, on `address`.
fn start_host(ns: &Netns, name: &str, address: &str) -> Xinetd {
    Xinetd::start_service_in(Some(&ns.name), |dir, port| {
        let config = format!(
            "[server]\n\
             idle_timeout = \"{IDLE_TIMEOUT}\"\n\
             log = \"{dir}/ondemand.log\"\n\
             access_log = \"json\"\n\
             health_path = \"/healthz\"\n\
             proxy_protocol = true\n\
             state_dir = \"{dir}/state\"\n\
             runtime_dir = \"{dir}/run\"\n\
             control_socket = \"{dir}/control.sock\"\n\n\
             [[app]]\nname = \"hello\"\npath = \"/\"\nrespond = {{ body = \"hello from {name}\\n\" }}\n\n\
             [[app]]\nname = \"echo\"\npath = \"/echo\"\n\
             [app.run]\ncommand = [\"{PYTHON}\", \"{app}\", \"--name\", \"echo-{name}\", \"--fd\"]\n",
            dir = dir.display(),
            app = app_path("upstream.py").display(),
        );
        let config = write_file(dir, "ondemand.toml", &config);
        service_block_on(
            &bin(),
            &format!("serve --config {}", config.display()),
            address,
            port,
        )
    })
}

/// HAProxy in the foreground in `ns`, its log in `dir/haproxy.log`.
struct Haproxy {
    _child: ChildGuard,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(ns: &Netns, servers: &[(&str, &str, u16)]) -> Haproxy {
        let dir = tempdir();
        let mut config = format!(
            "global\n  log stderr format raw local0 info\n\n\
             defaults\n  mode http\n  log global\n  option httplog\n\
             \x20 timeout connect 2s\n  timeout client 20s\n  timeout server 20s\n\
             \x20 retries 3\n  option redispatch 1\n  retry-on all-retryable-errors\n\n\
             frontend web\n  bind {FRONT}\n  default_backend hosts\n\n\
             backend hosts\n  balance roundrobin\n\
             \x20 option httpchk GET /healthz\n  http-check expect status 200\n"
        );
        for (name, address, port) in servers {
            config.push_str(&format!(
                "  server {name} {address}:{port} send-proxy-v2 check inter {PROBE_INTERVAL} \
                 fall 2 rise 1\n"
            ));
        }
        let path = write_file(dir.path(), "haproxy.cfg", &config);
        let log = dir.path().join("haproxy.log");
        let out = fs::File::create(&log).expect("create haproxy.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "haproxy", "-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start haproxy (apt-get install haproxy)");
        Haproxy {
            _child: ChildGuard::new(child),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// GET `path` through the load balancer (from the calling thread's namespace).
fn get(path: &str) -> std::io::Result<Response> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(FRONT)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    read_response(&mut s)
}

/// Which host answered a `/` request ("a" or "b").
fn host_of(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .trim()
        .trim_start_matches("hello from ")
        .to_string()
}

/// Requests host a's launchers served for the `hello` app so far.
fn served_by_a(host: &Xinetd) -> usize {
    ondemand_log(host).matches("\"app\":\"hello\"").count()
}

fn ondemand_log(host: &Xinetd) -> String {
    host.file("ondemand.log")
}

fn report(hosts: &[&Xinetd], lb: &Haproxy) -> String {
    let mut out = format!("--- haproxy.log ---\n{}", lb.log());
    for h in hosts {
        out.push_str(&h.report());
    }
    out
}

/// Waits until `host` runs no launcher (every START in svc.log has its EXIT).
fn wait_asleep(host: &Xinetd, within: Duration, what: &str, lb: &Haproxy) {
    let deadline = Instant::now() + within;
    while !host.running_pids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: a launcher still runs after {within:?}\n{}",
            report(&[host], lb)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_hosts_behind_haproxy_with_proxy_protocol_v2() {
    let lb_ns = Netns::new("lb");
    let a_ns = Netns::new("a");
    let b_ns = Netns::new("b");
    let client = Netns::new("client");
    link(
        &lb_ns,
        "to-a",
        "10.77.1.1/24",
        &a_ns,
        "eth0",
        "10.77.1.2/24",
    );
    link(
        &lb_ns,
        "to-b",
        "10.77.2.1/24",
        &b_ns,
        "eth0",
        "10.77.2.2/24",
    );
    link(
        &lb_ns,
        "to-client",
        "10.77.3.1/24",
        &client,
        "eth0",
        "10.77.3.2/24",
    );

    let mut host_a = start_host(&a_ns, "a", "10.77.1.2");
    let host_b = start_host(&b_ns, "b", "10.77.2.2");
    let lb = Haproxy::start(
        &lb_ns,
        &[
            ("a", "10.77.1.2", host_a.port()),
            ("b", "10.77.2.2", host_b.port()),
        ],
    );

    // 1. Both hosts serve, each through its own activation.
    let seen = client.run(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while !(seen.contains(&"a".to_string()) && seen.contains(&"b".to_string())) {
            assert!(
                Instant::now() < deadline,
                "both hosts never answered: {seen:?}"
            );
            match get("/") {
                Ok(r) => seen.push(host_of(&r)),
                // HAProxy still starting up.
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        seen
    });
    assert!(
        !host_a.started_pids().is_empty() && !host_b.started_pids().is_empty(),
        "{seen:?}"
    );

    // 2. The client's address, through HAProxy's PROXY v2 header, reaches the app (as
    //    X-Forwarded-For) and the access log, on both hosts (round robin alternates).
    let echoes = client.run(|| (0..4).map(|_| get("/echo").unwrap()).collect::<Vec<_>>());
    for r in &echoes {
        assert_eq!(
            r.status,
            200,
            "{}\n{}",
            r.text(),
            report(&[&host_a, &host_b], &lb)
        );
        let echo: Value = serde_json::from_slice(&r.body).unwrap();
        let xff: Vec<&str> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| {
                h[0].as_str()
                    .unwrap()
                    .eq_ignore_ascii_case("x-forwarded-for")
            })
            .map(|h| h[1].as_str().unwrap())
            .collect();
        assert_eq!(xff, [CLIENT], "{echo}");
    }
    // Every request for an app was the client's; only the load balancer's own health probes
    // (PROXY v2 LOCAL) show the load balancer's address.
    for host in [&host_a, &host_b] {
        let log = ondemand_log(host);
        let requests: Vec<Value> = log
            .lines()
            .filter_map(|l| l.find("{\"app\"").map(|at| &l[at..]))
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        let (probes, apps): (Vec<&Value>, Vec<&Value>) =
            requests.iter().partition(|r| r["target"] == "/healthz");
        assert!(
            apps.iter().any(|r| r["app"] == "echo") && apps.iter().all(|r| r["peer"] == CLIENT),
            "{}",
            report(&[host], &lb)
        );
        assert!(probes
            .iter()
            .all(|r| r["peer"].as_str().unwrap().starts_with("10.77.")));
    }

    // 3. With traffic gone, HAProxy keeps probing /healthz every second, and each host's launcher
    //    still exits: the probes never keep it up. The host sleeps between probes (no launcher
    //    at all), and a probe that finds it asleep costs one activation, which exits again.
    let probes_before = host_a.started_pids().len();
    wait_asleep(&host_a, Duration::from_secs(10), "after the traffic", &lb);
    wait_until("a probe to wake host a", Duration::from_secs(10), || {
        host_a.started_pids().len() > probes_before
    });
    wait_asleep(&host_a, Duration::from_secs(10), "after a probe", &lb);
    wait_asleep(&host_b, Duration::from_secs(10), "after the traffic", &lb);
    assert!(
        !lb.log().contains("is DOWN"),
        "the probes must find the hosts up\n{}",
        report(&[&host_a, &host_b], &lb)
    );

    // 4. Host a goes down under load: its xinetd is stopped, then its launcher, the way a
    //    shutdown stops them. HAProxy marks it down and retries elsewhere; no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_clients = stop.clone();
    let load = client.spawn(move || {
        let (mut ok, mut failed, mut from_b_last) = (0u32, Vec::new(), 0u32);
        while !stop_clients.load(Ordering::SeqCst) {
            match get("/") {
                Ok(r) if r.status == 200 => {
                    ok += 1;
                    from_b_last = if host_of(&r) == "b" {
                        from_b_last + 1
                    } else {
                        0
                    };
                }
                Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed, from_b_last)
    });
    let a_before = served_by_a(&host_a);
    wait_until(
        "host a to serve some of the load",
        Duration::from_secs(20),
        || served_by_a(&host_a) >= a_before + 200,
    );
    host_a.stop_xinetd();
    for pid in host_a.running_pids() {
        if pid_alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    wait_until(
        "HAProxy to mark host a down",
        Duration::from_secs(15),
        || lb.log().contains("hosts/a is DOWN"),
    );
    // Keep the load on for a moment after, then stop it.
    let after_down = Instant::now();
    while after_down.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed, from_b_last) = load.join().unwrap();
    eprintln!(
        "host a went down after serving {} of the load's requests: {ok} served, {} failed; \
         b served the last {from_b_last}",
        served_by_a(&host_a) - a_before,
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while host a went down: {failed:?}\n{}",
        failed.len(),
        ok as usize + failed.len(),
        report(&[&host_a, &host_b], &lb)
    );
    assert!(
        ok >= 20 && from_b_last >= 10,
        "ok={ok}, b answered the last {from_b_last}"
    );
}
