//! The security promises of the README's Security section that no other topic proves: the
//! shipped systemd unit runs the launcher unprivileged and the drop-in grants exactly what apps
//! as other users need (a real systemd in nspawn); the control socket refuses other users; a
//! configuration that tries to inject a header with CR/LF is refused, at check and at serve.
//!
//! Covered elsewhere: fds an app gets (run.rs,
//! `the_app_gets_its_socket_and_nothing_of_the_launcher_or_its_supervisor`), apps as their own
//! user (run.rs, `apps_run_as_their_own_user`), static path traversal (static_files.rs,
//! `TRAVERSALS`), X-Forwarded-For from trusted and untrusted peers (proxy.rs,
//! `hop_by_hop_headers_are_removed_and_forwarding_headers_set`,
//! `a_trusted_proxy_keeps_its_forwarding_headers`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::nspawn::{Container, BIN_IN_CONTAINER, CONFIG_IN_CONTAINER, PAYLOAD};
use crate::support::server::Ondemand;
use crate::support::upstream::PYTHON;
use crate::support::{free_port, get, tempdir, wait_until, write_file, Response};

/// CAP_CHOWN (0), CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7): the drop-in's set.
const DROP_IN_CAPS: u64 = 1 | 1 << 5 | 1 << 6 | 1 << 7;

fn json(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", resp.status, resp.text()))
}

/// The `Uid:` (real) and `Cap*:` lines of /proc/PID/status inside the container.
struct ProcStatus {
    uid: u32,
    eff: u64,
    prm: u64,
    amb: u64,
    bnd: u64,
}

fn proc_status(ct: &Container, pid: &str) -> ProcStatus {
    let text = ct.check(&["cat", &format!("/proc/{pid}/status")]);
    let field = |name: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
    };
    let cap = |name: &str| u64::from_str_radix(field(name), 16).unwrap();
    ProcStatus {
        uid: field("Uid:")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        eff: cap("CapEff:"),
        prm: cap("CapPrm:"),
        amb: cap("CapAmb:"),
        bnd: cap("CapBnd:"),
    }
}

fn journal(ct: &Container) -> String {
    ct.journal("ondemand.service", None)
}

/// GET on the socket; panics with the journal if there is no response.
fn request(ct: &Container, port: u16, path: &str) -> Response {
    get(port, "localhost", path)
        .unwrap_or_else(|e| panic!("GET {path}: no response: {e}\n{}", journal(ct)))
}

#[test]
fn under_systemd_the_launcher_is_unprivileged_and_the_drop_in_grants_apps_as_other_users() {
    let app = |name: &str, path: &str, args: &str, extra: &str| {
        format!(
            "[[app]]\nname = \"{name}\"\npath = \"{path}\"\n[app.run]\n\
             command = [\"/usr/bin/python3\", \"{PAYLOAD}/upstream.py\", {args}]\n\
             user = \"nobody\"\nstrip_prefix = true\n{extra}\n"
        )
    };
    let config = format!(
        "[server]\nidle_timeout = \"60s\"\n\n[[app]]\nname = \"hello\"\npath = \"/\"\n\
         respond = {{ body = \"hi\\n\" }}\n\n{}{}",
        app(
            "as-nobody",
            "/nobody",
            "\"--fd\"",
            "working_dir = \"/srv/nobody-only\""
        ),
        app(
            "notify-nobody",
            "/notify",
            "\"--port-env\", \"--notify\"",
            "listen = \"port\"\nready = \"notify\""
        ),
    );
    let ct = Container::boot(&config);
    let upstream = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/upstream.py");
    std::fs::copy(&upstream, ct.payload().join("upstream.py")).unwrap();
    let port = free_port();
    ct.install_units(port);
    ct.check(&["systemctl", "enable", "--now", "ondemand.socket"]);
    // A working directory only the app's user may enter: ondemand (without CAP_DAC_OVERRIDE)
    // must enter it as the app's user.
    ct.check(&[
        "install",
        "-d",
        "-m",
        "0700",
        "-o",
        "nobody",
        "/srv/nobody-only",
    ]);
    let ondemand_uid: u32 = ct.check(&["id", "-u", "ondemand"]).trim().parse().unwrap();
    let nobody_uid: u64 = ct.check(&["id", "-u", "nobody"]).trim().parse().unwrap();

    // --- The shipped unit: the launcher is `ondemand`, with no capability at all.
    let resp = request(&ct, port, "/");
    assert_eq!((resp.status, resp.text().as_str()), (200, "hi\n"));
    let launcher = ct.property("ondemand.service", "MainPID");
    let status = proc_status(&ct, &launcher);
    assert_eq!(status.uid, ondemand_uid, "the launcher runs as ondemand");
    assert_eq!(
        (status.eff, status.prm, status.amb, status.bnd),
        (0, 0, 0, 0),
        "no capabilities, and none it could gain"
    );
    // Its control socket: the launcher's user and group only.
    let stat = ct.check(&["stat", "-c", "%U:%G %a", "/run/ondemand/control.sock"]);
    assert_eq!(stat.trim(), "ondemand:ondemand 660");
    let stat = ct.check(&["stat", "-c", "%U %a", "/run/ondemand"]);
    assert_eq!(stat.trim(), "ondemand 755", "not writable by others");

    // An app that wants another user is refused, clearly, and the others are served.
    let resp = request(&ct, port, "/nobody/fds");
    let body = resp.text();
    eprintln!("without the drop-in: {} {body}", resp.status);
    assert_eq!(resp.status, 500, "{body}");
    for needle in [
        "app \"as-nobody\"",
        "user \"nobody\"",
        "CAP_SETUID, CAP_SETGID, CAP_KILL",
        "apps-as-other-users.conf",
        "Security",
    ] {
        assert!(body.contains(needle), "{needle:?} in {body:?}");
    }
    wait_until(
        "the refusal in the journal",
        Duration::from_secs(10),
        || journal(&ct).contains("cannot run it as user \"nobody\""),
    );
    assert_eq!(request(&ct, port, "/").status, 200);

    // --- With the drop-in: exactly its four capabilities, effective in the launcher only.
    ct.install_apps_as_other_users();
    ct.check(&["systemctl", "stop", "ondemand.service"]);
    let resp = request(&ct, port, "/");
    assert_eq!(resp.status, 200);
    let launcher = ct.property("ondemand.service", "MainPID");
    let status = proc_status(&ct, &launcher);
    assert_eq!(status.uid, ondemand_uid, "still ondemand");
    assert_eq!(
        (status.eff, status.prm, status.bnd),
        (DROP_IN_CAPS, DROP_IN_CAPS, DROP_IN_CAPS),
        "CAP_CHOWN, CAP_KILL, CAP_SETGID, CAP_SETUID"
    );
    assert_eq!(
        status.amb, 0,
        "ondemand cleared its ambient set: no program inherits them"
    );

    let started = Instant::now();
    let resp = request(&ct, port, "/nobody/fds");
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), journal(&ct));
    let fds = json(&resp);
    assert_eq!(fds["uid"], nobody_uid);
    assert_eq!(fds["cwd"], "/srv/nobody-only");
    let app_pid = fds["pid"].to_string();
    let app = proc_status(&ct, &app_pid);
    assert_eq!(
        (app.eff, app.prm, app.amb),
        (0, 0, 0),
        "the app gets none of the launcher's capabilities"
    );
    eprintln!("app as nobody ready in {:?}", started.elapsed());
    // The notify socket was handed to the app's user (CAP_CHOWN).
    let resp = request(&ct, port, "/notify/fds");
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), journal(&ct));
    assert_eq!(json(&resp)["uid"], nobody_uid);

    // Stopping an app of another user needs CAP_KILL.
    let out = ct.check(&[
        BIN_IN_CONTAINER,
        "stop",
        "--config",
        CONFIG_IN_CONTAINER,
        "as-nobody",
    ]);
    eprintln!("ondemand stop: {out}");
    wait_until("the app as nobody stopped", Duration::from_secs(15), || {
        !ct.exec(&["test", "-d", &format!("/proc/{app_pid}")])
            .status
            .success()
    });
}

/// Runs `argv` as the user `nobody` with `groups` as its supplementary groups.
fn as_nobody(groups: &str, argv: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            &format!("--groups={groups}"),
            "--",
        ])
        .args(argv)
        .output()
        .expect("run setpriv")
}

#[test]
fn the_control_socket_refuses_users_outside_the_launchers_group() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let dir = tempdir();
    // Reachable by path for everyone, so that only the socket's own mode decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let od = Ondemand::start(&format!(
        "[server]\ncontrol_socket = \"{}/control.sock\"\n[[app]]\nname = \"a\"\nrespond = {{}}\n",
        dir.path().display()
    ));
    let socket = dir.path().join("control.sock");
    wait_until("the control socket", Duration::from_secs(10), || {
        socket.exists()
    });
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = nix::unistd::getegid().as_raw();
    let connect = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
                   s.sendall(b'GET /status HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'); \
                   print(s.recv(20).decode())";
    let socket = socket.to_str().unwrap();
    let outsider = as_nobody("nogroup", &[PYTHON, "-c", connect, socket]);
    let err = String::from_utf8_lossy(&outsider.stderr);
    assert!(!outsider.status.success(), "nobody got in");
    assert!(err.contains("PermissionError"), "{err}");
    // A member of the launcher's group may.
    let member = as_nobody(&gid.to_string(), &[PYTHON, "-c", connect, socket]);
    assert!(
        member.status.success() && String::from_utf8_lossy(&member.stdout).contains("200"),
        "{member:?}"
    );
    drop(od);
}

#[test]
fn a_control_socket_in_a_world_writable_directory_is_refused() {
    let dir = tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let od = Ondemand::start(&format!(
        "[server]\ncontrol_socket = \"{}/control.sock\"\n[[app]]\nname = \"a\"\nrespond = {{}}\n",
        open.display()
    ));
    od.wait_log("no control socket", Duration::from_secs(10));
    assert!(
        od.log_text().contains("writable by every user"),
        "{}",
        od.log_text()
    );
    assert!(!open.join("control.sock").exists());
    assert_eq!(
        get(od.port, "x", "/").unwrap().status,
        200,
        "it serves anyway"
    );
}

/// Values that would put a CR, LF or NUL into a header, a status line or a log line.
const INJECTIONS: [(&str, &str); 5] = [
    (
        "respond = { content_type = \"text/plain\\r\\nSet-Cookie: a=1\" }",
        "not allowed in an HTTP header",
    ),
    (
        "respond = { headers = { x-a = \"1\\r\\nSet-Cookie: a=1\" } }",
        "not allowed in an HTTP header",
    ),
    (
        "host = \"a.example\\r\\nSet-Cookie: a=1\"\nrespond = {}",
        "host",
    ),
    (
        "tags = [\"\"\"a\nSet-Cookie: a=1\"\"\"]\nrespond = {}",
        "app.tags contains a line feed (LF)",
    ),
    (
        "proxy = { upstream = \"http://127.0.0.1:1/\\r\\nX: y\" }",
        "upstream",
    ),
];

#[test]
fn config_values_cannot_inject_headers() {
    crate::support::assert_check_errors(
        &INJECTIONS.map(|(app, expected)| (format!("[[app]]\nname = \"a\"\n{app}\n"), expected)),
    );
    // Nothing the file says is injected at run time either: the launcher answers 503 with the
    // error, and no Set-Cookie.
    for (app, _) in INJECTIONS {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let od = Ondemand::start_on(&listener, &format!("[[app]]\nname = \"a\"\n{app}\n"));
        let resp = get(od.port, "a.example", "/").unwrap();
        assert_eq!(resp.status, 503, "{app}: {}", resp.text());
        assert!(resp.header("set-cookie").is_none(), "{app}");
        assert!(resp.header("x").is_none(), "{app}");
    }
}

#[test]
fn line_breaks_stay_allowed_where_they_are_content() {
    let dir = tempdir();
    let config = write_file(
        dir.path(),
        "c.toml",
        "[[app]]\nname = \"a\"\nrespond = { body = \"line 1\\r\\nline 2\\n\" }\n",
    );
    let (code, _, err) =
        crate::support::run_ondemand(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}
