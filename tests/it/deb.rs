//! The Debian package, as a sysadmin meets it: `dpkg -i` in a throwaway systemd container (the
//! nspawn recipe with /usr, /var and /etc overlaid: see support::nspawn), nothing enabled or
//! started by the install, `systemctl enable --now ondemand.socket` and a request through it,
//! journal fields, man pages and completions as installed, then `dpkg -r` (socket stopped,
//! configuration kept) and `dpkg -P` (nothing of the package left but the system user).
//!
//! The package is scripts/deb's: the path in `ONDEMAND_DEB` (scripts/test builds it first), or
//! this test runs scripts/deb itself. Needs root and systemd-container, like the systemd tests.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::nspawn::{Container, PAYLOAD};
use crate::support::{free_port, get, wait_until};

/// The whole test must finish within this (boot, dpkg three times, a request, journal waits).
const TEST_BUDGET: Duration = Duration::from_secs(300);

/// Where a file of the package could be left behind. /opt is not searched (the payload with the
/// .deb is mounted there), nor /proc and /sys.
const SEARCHED: &[&str] = &[
    "/etc", "/usr", "/lib", "/var", "/run", "/srv", "/home", "/root",
];

/// The package to test: `ONDEMAND_DEB`, else what scripts/deb builds now.
fn package() -> PathBuf {
    if let Some(deb) = std::env::var_os("ONDEMAND_DEB") {
        let deb = PathBuf::from(deb);
        assert!(
            deb.is_file(),
            "ONDEMAND_DEB={} is not a file",
            deb.display()
        );
        return deb;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deb");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/deb failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("scripts/deb prints the .deb's path")
            .trim(),
    )
}

/// Every path under [`SEARCHED`] whose name contains "ondemand".
fn named_ondemand(ct: &Container) -> BTreeSet<String> {
    let mut argv = vec!["find"];
    argv.extend(SEARCHED);
    argv.extend(["-xdev", "-name", "*ondemand*"]);
    // find exits 1 for a missing start directory (/srv on some hosts); its output still counts.
    String::from_utf8_lossy(&ct.exec(&argv).stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_state(ct: &Container, unit: &str, want: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let state = ct.is_active(unit);
        if state == want {
            return;
        }
        if start.elapsed() > timeout {
            panic!(
                "{unit} is {state:?}, not {want:?}\n{}",
                ct.journal(unit, None)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dpkg-query -W -f '${db:Status-Abbrev}'` (e.g. "ii ", "rc ", or "" when unknown).
fn dpkg_status(ct: &Container) -> String {
    ct.answer(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "ondemand"])
}

#[test]
fn package_installs_quietly_serves_once_enabled_and_purges_cleanly() {
    // The budget is the container's: building the package (a static release build when the
    // sources changed, minutes on a busy machine) is not what this test times.
    let deb = package();
    let deadline = Instant::now() + TEST_BUDGET;
    // Any config: the payload's ondemand.toml is not used here, the package brings its own.
    let ct = Container::boot_for_packages("");
    std::fs::copy(&deb, ct.payload().join("ondemand.deb")).expect("copy the .deb into payload");
    // The host (a container image) has a policy-rc.d that forbids every service action in
    // maintainer scripts; a Debian system has none. Remove it in the container's /usr overlay,
    // so that the package's own stop on removal is what is tested.
    ct.check(&["rm", "-f", "/usr/sbin/policy-rc.d"]);
    let before = named_ondemand(&ct);
    assert_eq!(dpkg_status(&ct), "", "ondemand already known to dpkg");

    // --- install: nothing enabled, nothing started, nothing listening.
    let install = ct.check(&["dpkg", "-i", &format!("{PAYLOAD}/ondemand.deb")]);
    eprintln!("deb: installed {}\n{install}", deb.display());
    assert_eq!(dpkg_status(&ct), "ii");
    assert_eq!(
        ct.answer(&["systemctl", "is-enabled", "ondemand.socket"]),
        "disabled"
    );
    assert_eq!(
        ct.answer(&["systemctl", "is-enabled", "ondemand.service"]),
        "static"
    );
    assert_eq!(ct.is_active("ondemand.socket"), "inactive");
    assert_eq!(ct.is_active("ondemand.service"), "inactive");
    let xinetd = ct.check(&["cat", "/etc/xinetd.d/ondemand"]);
    assert!(
        xinetd
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["disable", "=", "yes"]),
        "the xinetd service is installed disabled:\n{xinetd}"
    );
    let user = ct.check(&["getent", "passwd", "ondemand"]);
    assert!(
        user.trim_end().ends_with(":/nonexistent:/usr/sbin/nologin"),
        "system user without home or shell: {user}"
    );
    ct.check(&["getent", "group", "ondemand"]);
    let files: Vec<String> = ct
        .check(&["dpkg", "-L", "ondemand"])
        .lines()
        .map(str::to_string)
        .collect();
    let check = ct.check(&["ondemand", "check"]);
    assert!(
        check.contains("/etc/ondemand/ondemand.toml: OK"),
        "the example configuration is valid: {check}"
    );

    // --- man pages render without a warning; completions are valid shell.
    for page in [
        "/usr/share/man/man1/ondemand.1.gz",
        "/usr/share/man/man1/ondemand-serve.1.gz",
        "/usr/share/man/man1/ondemand-check.1.gz",
        "/usr/share/man/man5/ondemand.toml.5.gz",
    ] {
        let out = ct.exec(&[
            "env",
            "MANWIDTH=80",
            "man",
            "--warnings",
            "-E",
            "UTF-8",
            "-l",
            page,
        ]);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "man -l {page}: {}\n{warnings}",
            out.status
        );
        assert!(!out.stdout.is_empty(), "{page} renders to nothing");
    }
    let toml5 = String::from_utf8_lossy(
        &ct.exec(&[
            "env",
            "MANWIDTH=100",
            "man",
            "-l",
            "/usr/share/man/man5/ondemand.toml.5.gz",
        ])
        .stdout,
    )
    .into_owned();
    for key in ["idle_timeout", "log_level", "upstream", "max_concurrency"] {
        assert!(toml5.contains(key), "ondemand.toml(5) documents {key}");
    }
    ct.check(&[
        "bash",
        "-n",
        "/usr/share/bash-completion/completions/ondemand",
    ]);

    // --- enable the socket (on a free loopback port instead of 80, through a runtime drop-in
    // that leaves /etc alone) and send a request through it.
    let port = free_port();
    ct.check(&["mkdir", "-p", "/run/systemd/system/ondemand.socket.d"]);
    ct.check(&["mkdir", "-p", "/run/systemd/system/ondemand.service.d"]);
    ct.check(&[
        "sh",
        "-c",
        &format!(
            "printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{port}\\n' \
             >/run/systemd/system/ondemand.socket.d/test.conf && \
             printf '[Service]\\nEnvironment=ONDEMAND_LOG=debug\\n' \
             >/run/systemd/system/ondemand.service.d/test.conf"
        ),
    ]);
    ct.check(&["systemctl", "daemon-reload"]);
    ct.check(&["systemctl", "enable", "--now", "ondemand.socket"]);
    assert_eq!(ct.is_active("ondemand.socket"), "active");
    let resp = get(port, "hello.localhost", "/").unwrap_or_else(|e| {
        panic!(
            "no response through the packaged socket: {e}\n{}",
            ct.journal("ondemand.service", None)
        )
    });
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "hello from ondemand\n")
    );

    // --- the journal has ondemand's fields as journal fields.
    let mut entry = None;
    wait_until(
        "a journal entry with APP=hello",
        deadline.saturating_duration_since(Instant::now()),
        || {
            let json = ct.answer(&[
                "journalctl",
                "--no-pager",
                "-o",
                "json",
                "-u",
                "ondemand.service",
                "APP=hello",
            ]);
            entry = json
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .next();
            entry.is_some()
        },
    );
    let entry = entry.unwrap();
    eprintln!("deb: journal entry {entry}");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "ondemand", "{entry}");
    assert_eq!(entry["_SYSTEMD_UNIT"], "ondemand.service", "{entry}");
    assert_eq!(entry["PRIORITY"], "7", "a debug line: {entry}");
    assert_eq!(entry["PATH"], "/", "{entry}");
    assert_eq!(entry["METHOD"], "GET", "{entry}");
    let message = entry["MESSAGE"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("request") && message.contains("app=hello"),
        "MESSAGE reads as on stderr: {entry}"
    );

    // --- upgrade (the same package again: dpkg runs the upgrade paths of the scripts): the
    // socket stays enabled and listening throughout, and a running instance is restarted onto
    // the new binary.
    wait_state(&ct, "ondemand.service", "active", Duration::from_secs(10));
    let old_pid = ct.property("ondemand.service", "MainPID");
    ct.check(&["dpkg", "-i", &format!("{PAYLOAD}/ondemand.deb")]);
    assert_eq!(
        ct.answer(&["systemctl", "is-enabled", "ondemand.socket"]),
        "enabled"
    );
    assert_eq!(ct.is_active("ondemand.socket"), "active");
    wait_state(&ct, "ondemand.service", "active", Duration::from_secs(10));
    assert_ne!(
        ct.property("ondemand.service", "MainPID"),
        old_pid,
        "the running instance was restarted by the upgrade"
    );
    let resp = get(port, "hello.localhost", "/").expect("a response after the upgrade");
    assert_eq!(resp.status, 200);

    // --- remove: the socket and the running instance are stopped, the configuration stays.
    ct.check(&["dpkg", "-r", "ondemand"]);
    assert_eq!(dpkg_status(&ct), "rc");
    for unit in ["ondemand.socket", "ondemand.service"] {
        wait_state(&ct, unit, "inactive", Duration::from_secs(10));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on port {port} after dpkg -r"
    );
    assert!(!ct
        .exec(&["test", "-e", "/usr/bin/ondemand"])
        .status
        .success());
    for conffile in ["/etc/ondemand/ondemand.toml", "/etc/xinetd.d/ondemand"] {
        assert!(
            ct.exec(&["test", "-f", conffile]).status.success(),
            "{conffile} kept by dpkg -r"
        );
    }

    // --- purge: nothing of the package is left but the system user (Debian leaves system
    // users: files they own may remain, and a reused uid would own them).
    ct.check(&["rm", "-r", "/run/systemd/system/ondemand.socket.d"]);
    ct.check(&["rm", "-r", "/run/systemd/system/ondemand.service.d"]);
    ct.check(&["dpkg", "-P", "ondemand"]);
    assert_eq!(dpkg_status(&ct), "", "dpkg forgot the package");
    let left: Vec<&String> = files
        .iter()
        .filter(|f| f.contains("ondemand"))
        .filter(|f| ct.exec(&["test", "-e", f]).status.success())
        .collect();
    assert!(
        left.is_empty(),
        "files of the package left after purge: {left:?}"
    );
    let after = named_ondemand(&ct);
    eprintln!(
        "deb: {} files installed; after purge, named *ondemand*: {} before, {} after; user: {}",
        files.len(),
        before.len(),
        after.len(),
        ct.answer(&["getent", "passwd", "ondemand"])
    );
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(
        new.is_empty(),
        "left after purge (anything named *ondemand* that was not there before): {new:?}"
    );
    assert_eq!(
        ct.answer(&["systemctl", "is-enabled", "ondemand.socket"]),
        "",
        "systemd forgot the unit"
    );
    ct.check(&["getent", "passwd", "ondemand"]);
    assert!(
        Instant::now() < deadline,
        "test exceeded its {TEST_BUDGET:?} budget"
    );
}

/// What `ExecStartPre=ondemand check` would cost every activation: the cold first response under
/// systemd with and without it (the project's units, a `respond` app), in alternating blocks.
/// A measurement, not a check (`cargo test --release -- --ignored --nocapture exec_start_pre`);
/// the numbers are in the README and ondemand.service's comment.
#[test]
#[ignore]
fn exec_start_pre_check_cost() {
    const CONFIG: &str = "[server]\nidle_timeout = \"300ms\"\n\n[[app]]\nname = \"hello\"\n\
                          respond = { body = \"hello\\n\" }\n";
    let ct = Container::boot(CONFIG);
    let port = free_port();
    let check = format!(
        "ExecStartPre={} check --config {}",
        crate::support::nspawn::BIN_IN_CONTAINER,
        crate::support::nspawn::CONFIG_IN_CONTAINER
    );
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for block in 0..6 {
        let with_check = block % 2 == 1;
        ct.install_units_with(port, if with_check { &check } else { "" });
        ct.check(&["systemctl", "restart", "ondemand.socket"]);
        for _ in 0..10 {
            wait_state(&ct, "ondemand.service", "inactive", Duration::from_secs(10));
            let sent = Instant::now();
            let resp = get(port, "localhost", "/").expect("response");
            samples[usize::from(with_check)].push(sent.elapsed());
            assert_eq!(resp.status, 200);
        }
    }
    for (name, mut s) in ["without", "with ExecStartPre=ondemand check"]
        .into_iter()
        .zip(samples)
    {
        s.sort();
        eprintln!(
            "cold first response under systemd, {name}: median {:?}, p90 {:?} ({} samples)",
            s[s.len() / 2],
            s[s.len() * 9 / 10],
            s.len()
        );
    }
}
