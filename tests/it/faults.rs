//! Faults (issue 9), one test each: an app SIGKILLed mid-response, an app that closes mid-body,
//! an upstream that closes together with its first body bytes, an upstream that accepts and
//! never answers, the log file's disk full, an unwritable control socket path, the config file
//! deleted before a reload. Each asserts the clear error the user
//! gets (the HTTP answer and/or the log line naming the app or file and the reason), and that
//! another app of the same launcher is served during and after.
//!
//! Already covered elsewhere, and not repeated here: a crash with requests in flight (run.rs
//! `a_crash_fails_in_flight_requests_and_the_next_request_restarts_it`), refused, hanging and
//! failing proxy upstreams (proxy.rs `refused_hanging_and_failing_upstreams_get_clear_answers`),
//! an invalid config on reload (idle.rs `sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::server::Ondemand;
use crate::support::upstream::{app_path, PYTHON};
use crate::support::{
    bin, free_port, get, run_ondemand, tempdir, wait_for_port, wait_until, write_file, ChildGuard,
    Response,
};

const SLOW: Duration = Duration::from_secs(10);

/// The bystander: a respond app on Host hello.test that must keep answering.
const HELLO: &str = r#"
[[app]]
name = "hello"
host = "hello.test"
respond = { body = "hello\n" }
"#;

fn assert_hello_served(port: u16, when: &str) {
    let r = get(port, "hello.test", "/").unwrap_or_else(|e| panic!("{when}: hello: {e}"));
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"), "{when}");
}

/// `[server]` for a launcher that never idles, with a private runtime_dir.
fn server(dir: &tempfile::TempDir) -> String {
    format!(
        "[server]\nidle_timeout = \"never\"\nruntime_dir = \"{}\"\n",
        dir.path().display()
    )
}

/// A run app on Host wiki.test: tests/apps/upstream.py on its socket.
fn wiki() -> String {
    format!(
        "[[app]]\nname = \"wiki\"\nhost = \"wiki.test\"\n[app.run]\ncommand = [\"{PYTHON}\", \"{}\", \"--fd\", \"--name\", \"wiki\"]\n",
        app_path("upstream.py").display()
    )
}

/// Sends a GET for `path` on Host `host` and reads the response head only; returns the stream
/// (positioned at the body) and the head's Content-Length.
fn start_download(port: u16, host: &str, path: &str) -> (TcpStream, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(SLOW)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "head cut: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    (s, length)
}

/// Reads the rest of a body to EOF; returns how many bytes came (an error counts as the end).
fn read_to_end_counting(s: &mut TcpStream) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return n,
            Ok(k) => n += k,
        }
    }
}

fn json_pid(resp: &Response) -> i32 {
    let v: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", resp.status, resp.text()));
    v["pid"].as_i64().unwrap() as i32
}

#[test]
fn an_app_sigkilled_mid_response_cuts_that_response_and_the_next_request_restarts_it() {
    let dir = tempdir();
    let od = Ondemand::start(&format!("{}{HELLO}{}", server(&dir), wiki()));
    let pid = json_pid(&get(od.port, "wiki.test", "/pid").unwrap());

    // A 200 MB download the test does not read: the app blocks mid-body on a full socket.
    let (mut s, length) = start_download(od.port, "wiki.test", "/download?bytes=200000000");
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    assert_hello_served(od.port, "while the download is in flight");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();

    let got = first.len() + read_to_end_counting(&mut s);
    assert!(
        got < length,
        "the client must see the body cut ({got} of {length} bytes), not a complete response"
    );
    od.wait_log("crashed: killed by signal", SLOW);
    let log = od.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("crashed:"))
        .expect("crash line");
    assert!(
        line.contains("wiki") && line.contains("SIGKILL"),
        "the crash line names the app and the signal: {line}"
    );
    assert!(
        log.contains("the upstream broke off the response after"),
        "the cut response is logged:\n{log}"
    );

    assert_hello_served(od.port, "after the crash");
    let again = get(od.port, "wiki.test", "/pid").unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_ne!(json_pid(&again), pid, "a new process");
}

#[test]
fn an_app_closing_mid_body_cuts_the_response_with_a_log_line_naming_the_app() {
    let dir = tempdir();
    let od = Ondemand::start(&format!("{}{HELLO}{}", server(&dir), wiki()));
    let (mut s, length) = start_download(od.port, "wiki.test", "/close-mid-body");
    assert_hello_served(od.port, "while the app closes mid-body");
    let got = read_to_end_counting(&mut s);
    assert!(got < length, "body cut: {got} of {length} bytes");
    od.wait_log("the upstream broke off the response after", SLOW);
    let log = od.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("broke off"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("wiki") && line.contains("1000 body bytes") && line.contains("closed"),
        "the line names the app, how far it got and what the client saw: {line}"
    );
    // The app itself is fine and keeps serving, and so is the other app.
    let r = get(od.port, "wiki.test", "/pid").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_hello_served(od.port, "after");
}

#[test]
fn an_upstream_that_accepts_and_never_answers_gets_504_while_other_apps_are_served() {
    // Accepts (the kernel does, into the backlog) and never reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", silent.local_addr().unwrap());
    let od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\n{HELLO}\n[[app]]\nname = \"mute\"\nhost = \
         \"mute.test\"\nproxy = {{ upstream = \"{upstream}\", timeout = \"1s\" }}\n"
    ));
    let port = od.port;
    let started = Instant::now();
    let hanging = std::thread::spawn(move || get(port, "mute.test", "/x").unwrap());
    // While it waits, the other app answers at once.
    for _ in 0..20 {
        let t = Instant::now();
        assert_hello_served(od.port, "while the upstream hangs");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    let r = hanging.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        r.text(),
        "ondemand: app \"mute\": the upstream did not answer within 1s\n"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    od.wait_log(&format!("upstream={upstream}"), SLOW);
    assert!(od.log_text().contains("did not answer within 1s (timeout)"));
    assert_hello_served(od.port, "after");
    drop(silent);
}

/// The launcher's CPU time (user + system) in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The log file on a full disk (/dev/full: every write fails with ENOSPC): the launcher serves
/// on, says so once on stderr (the journal under systemd) naming the file, and does not spin.
#[test]
fn a_full_disk_under_the_log_file_is_reported_once_and_serving_goes_on() {
    let dir = tempdir();
    let port = free_port();
    let config = write_file(
        dir.path(),
        "ondemand.toml",
        &format!(
            "[server]\nidle_timeout = \"never\"\nlog = \"/dev/full\"\nlog_level = \"debug\"\n\
             control_socket = \"{d}/control.sock\"\nstate_dir = \"{d}/state\"\n{HELLO}",
            d = dir.path().display()
        ),
    );
    let stderr_path = dir.path().join("stderr");
    let child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut od = ChildGuard::new(child);
    wait_for_port(port, SLOW);
    // Every request logs debug lines, and every one of them fails to be written.
    for i in 0..200 {
        assert_hello_served(port, &format!("request {i}"));
    }
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_until("the log failure on stderr", SLOW, || {
        stderr().contains("/dev/full")
    });
    let text = stderr();
    assert!(
        text.contains("cannot write to the log file /dev/full: No space left on device"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        1,
        "reported once, not once per line:\n{text}"
    );
    // Idle, it does not spin on the failing file.
    let before = cpu_ticks(od.pid());
    std::thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks(od.pid()) - before;
    assert!(spent <= 5, "{spent} ticks of CPU in 500 ms of idleness");
    assert!(od.wait_timeout(Duration::ZERO).is_none(), "still running");
    od.signal(Signal::SIGTERM);
    let status = od.wait_timeout(SLOW).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", stderr());
}

/// A control socket path the launcher cannot create: it serves HTTP anyway and logs why,
/// naming the path and what to do.
#[test]
fn an_unwritable_control_socket_path_is_logged_and_http_is_served() {
    let dir = tempdir();
    // A regular file where the socket's directory should be: no user, root included, can make it.
    let blocker = write_file(dir.path(), "not-a-dir", "");
    let socket = blocker.join("control.sock");
    let od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\ncontrol_socket = \"{}\"\n{HELLO}",
        socket.display()
    ));
    assert_hello_served(od.port, "without a control socket");
    od.wait_log("no control socket", SLOW);
    let log = od.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("no control socket"))
        .unwrap();
    assert!(
        line.contains(&blocker.display().to_string())
            && line.contains("control_socket")
            && line.contains("exists and is not a directory"),
        "the line names the path, the reason and the setting: {line}"
    );
    // The control commands say they cannot reach it, naming the socket.
    let (code, out, err) = run_ondemand(&["reload", "--config", od.config.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains(&socket.display().to_string()),
        "{out}{err}"
    );
    assert_hello_served(od.port, "after");
}

/// The config file deleted, then a reload by SIGHUP and by `ondemand reload`: the running
/// configuration is kept, the error names the file, and every app keeps being served; putting
/// the file back and reloading works.
#[test]
fn a_deleted_config_file_on_reload_keeps_the_running_configuration() {
    let dir = tempdir();
    let mut od = Ondemand::start(&format!("{}{HELLO}{}", server(&dir), wiki()));
    let text = std::fs::read_to_string(&od.config).unwrap();
    let pid = json_pid(&get(od.port, "wiki.test", "/pid").unwrap());
    std::fs::remove_file(&od.config).unwrap();
    let config = od.config.display().to_string();

    od.child.signal(Signal::SIGHUP);
    od.wait_log("reload failed", SLOW);
    let log = od.log_text();
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(
        line.contains("keeping the running configuration")
            && line.contains(&format!("cannot read the configuration {config}"))
            && line.contains("No such file or directory"),
        "{line}"
    );
    assert_hello_served(od.port, "after SIGHUP");
    let r = get(od.port, "wiki.test", "/pid").unwrap();
    assert_eq!(json_pid(&r), pid, "the run app kept its process");

    // `ondemand reload` finds the launcher through the file: it says it cannot read it.
    let (code, out, err) = run_ondemand(&["reload", "--config", &config]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("cannot read the configuration {config}"))
            && err.contains("No such file or directory"),
        "{err}"
    );
    assert!(od.is_running());
    assert_hello_served(od.port, "after ondemand reload");

    // Put back (changed): both reloads work again.
    std::fs::write(&od.config, text.replace("hello\\n", "hello again\\n")).unwrap();
    let (code, out, err) = run_ondemand(&["reload", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration reloaded"), "{out}");
    let r = get(od.port, "hello.test", "/").unwrap();
    assert_eq!(r.text(), "hello again\n");
    let r = get(od.port, "wiki.test", "/pid").unwrap();
    assert_eq!(json_pid(&r), pid, "unchanged app kept across the reload");
}

/// An upstream that sends its response head and first bytes and closes, all at once: what it
/// sent reaches the client (head and bytes) before the client's connection is cut. The close
/// then comes in the same read as the bytes, and the error for it must not overtake them.
#[test]
fn an_upstream_closing_with_its_first_bytes_gets_them_to_the_client_before_the_cut() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
            answer.extend_from_slice(&[b'x'; 1000]);
            let _ = conn.write_all(&answer);
            // Dropped: closed right after the bytes.
        }
    });
    let config = format!(
        "{HELLO}\n[[app]]\nname = \"cut\"\nhost = \"cut.test\"\nproxy = {{ upstream = \"http://{upstream}\" }}\n"
    );
    let od = Ondemand::start(&config);
    for round in 0..20 {
        let (mut s, length) = start_download(od.port, "cut.test", "/");
        assert_eq!(length, 1_000_000);
        let got = read_to_end_counting(&mut s);
        assert_eq!(
            got, 1000,
            "round {round}: the bytes the upstream sent, then the cut"
        );
    }
    od.wait_log(
        "the upstream broke off the response after 1000 body bytes",
        SLOW,
    );
    assert_hello_served(od.port, "after");
}
