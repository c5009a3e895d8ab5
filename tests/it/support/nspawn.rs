//! A real systemd for tests, in a throwaway `systemd-nspawn` container on a volatile copy of this
//! machine, exactly as ../shared/SUPERVISORS.md prescribes (never a systemd started any other way:
//! its boot once wiped a host's /tmp).
//!
//! The container's root is a tmpfs with the host's /usr mounted read-only; /etc starts empty and
//! writable; the network is the host's, so a socket unit listening on 127.0.0.1:PORT inside is
//! reachable from the test. A per-container payload directory holds the `ondemand` binary under
//! test and its config, bind-mounted read-only at /opt/payload.
//!
//! Every wait is bounded, and the whole container is bounded by `timeout 300`. When the
//! [`Container`] drops it powers the container off and, if that does not finish in time, SIGKILLs
//! the systemd-nspawn process and the container's PID 1 by pid.
//!
//! Needs root and systemd-nspawn (package systemd-container); a test that boots a container fails
//! loudly without them rather than skipping.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where the payload directory appears inside the container.
pub const PAYLOAD: &str = "/opt/payload";
/// The ondemand binary and its config, as seen from inside the container.
pub const BIN_IN_CONTAINER: &str = "/opt/payload/ondemand";
pub const CONFIG_IN_CONTAINER: &str = "/opt/payload/ondemand.toml";

/// Hard cap on the container's life, enforced by timeout(1) even if the test process dies.
const CONTAINER_LIFETIME: &str = "300";
/// How long to wait for the container to reach running/degraded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for `systemctl poweroff` to end the container before SIGKILL.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for one command run inside the container.
const EXEC_TIMEOUT: &str = "60";

/// A booted systemd container. Dropping it shuts the container down.
pub struct Container {
    /// The `timeout 300 systemd-nspawn ...` process we spawned (a session leader via setsid).
    timeout: Child,
    /// The systemd-nspawn process, child of `timeout`.
    nspawn: Option<i32>,
    /// The container's PID 1 (systemd), child of systemd-nspawn, as a host pid.
    leader: Option<i32>,
    /// Holds `payload/` (bind-mounted at /opt/payload) and `console.log` (nspawn's output).
    /// Declared last so it is removed only after the container is gone.
    dir: tempfile::TempDir,
}

impl Container {
    /// Boots a container whose payload holds the ondemand binary under test and `config` as
    /// ondemand.toml, and waits until its systemd says `running` (or `degraded`).
    pub fn boot(config: &str) -> Container {
        Container::boot_with(config, &[])
    }

    /// Like [`boot`](Self::boot), with /usr, /var and /etc writable inside (each an overlay of
    /// the host's directory with a tmpfs on top, so the host's files stay untouched) and /etc
    /// the host's, as dpkg needs to install a package (../shared/SUPERVISORS.md).
    pub fn boot_for_packages(config: &str) -> Container {
        Container::boot_with(
            config,
            &[
                "--overlay=/usr::/usr",
                "--overlay=/var::/var",
                "--overlay=/etc::/etc",
            ],
        )
    }

    fn boot_with(config: &str, extra_args: &[&str]) -> Container {
        check_prerequisites();
        let dir = super::tempdir();
        let payload = dir.path().join("payload");
        std::fs::create_dir(&payload).expect("create payload dir");
        std::fs::copy(super::bin(), payload.join("ondemand")).expect("copy ondemand into payload");
        let console = std::fs::File::create(dir.path().join("console.log")).expect("console.log");

        let started = Instant::now();
        let timeout = Command::new("setsid")
            .args([
                "timeout",
                CONTAINER_LIFETIME,
                "systemd-nspawn",
                "-D",
                "/",
                "--volatile=yes",
            ])
            .args(["--register=no", "--keep-unit", "-q"])
            .args(extra_args)
            .arg(format!("--bind-ro={}:{PAYLOAD}", payload.display()))
            .args([
                "-b",
                "--",
                "systemd.unit=basic.target",
                "systemd.firstboot=off",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console.log"))
            .stderr(console)
            .spawn()
            .expect("spawn setsid timeout systemd-nspawn");
        // setsid(1) execs in place here (the forked child is never a process-group leader), so
        // this pid is timeout's.
        let mut ct = Container {
            timeout,
            nspawn: None,
            leader: None,
            dir,
        };
        ct.write_config(config);

        let deadline = Instant::now() + BOOT_TIMEOUT;
        let nspawn = ct.wait_for_child_named(ct.timeout.id() as i32, "systemd-nspawn", deadline);
        ct.nspawn = Some(nspawn);
        // Not just any child of nspawn: it forks short-lived helpers while setting up.
        let leader = ct.wait_for_child_named(nspawn, "systemd", deadline);
        ct.leader = Some(leader);

        let state = loop {
            ct.assert_alive();
            // is-system-running exits non-zero for every state but "running": read its answer.
            let state = ct.answer(&["systemctl", "is-system-running"]);
            if state == "running" || state == "degraded" {
                break state;
            }
            if Instant::now() > deadline {
                panic!(
                    "container did not boot within {BOOT_TIMEOUT:?} (is-system-running: \
                     {state:?})\n--- console ---\n{}",
                    ct.console()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!(
            "nspawn: container booted in {:?} ({state}; nspawn pid {nspawn}, its PID 1 is host \
             pid {leader})",
            started.elapsed()
        );
        ct
    }

    /// The container's PID 1 as a host pid.
    pub fn leader(&self) -> i32 {
        self.leader.expect("container PID 1 known once booted")
    }

    /// The host path of the payload directory (bind-mounted read-only at /opt/payload).
    pub fn payload(&self) -> PathBuf {
        self.dir.path().join("payload")
    }

    /// Replaces /opt/payload/ondemand.toml atomically (write then rename), so a reload never
    /// reads half a file.
    pub fn write_config(&self, text: &str) {
        let tmp = self.payload().join(".ondemand.toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.payload().join("ondemand.toml")).expect("rename config");
    }

    /// Runs `argv` inside the container (all its namespaces, via nsenter on PID 1), bounded by
    /// timeout(1), and returns its output whatever the exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("timeout")
            .args([
                EXEC_TIMEOUT,
                "nsenter",
                "-t",
                &self.leader().to_string(),
                "-a",
                "--",
            ])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run nsenter {argv:?}: {e}"))
    }

    /// Runs `argv` inside the container; panics with its output unless it succeeds. Returns
    /// stdout.
    pub fn check(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        if !out.status.success() {
            panic!(
                "in container: {argv:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Trimmed stdout of `argv` inside the container, whatever its exit status (for
    /// `systemctl is-active` and friends, which answer through both).
    pub fn answer(&self, argv: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(argv).stdout)
            .trim()
            .to_string()
    }

    /// `systemctl is-active UNIT`: active, activating, deactivating, inactive, failed, ...
    pub fn is_active(&self, unit: &str) -> String {
        self.answer(&["systemctl", "is-active", unit])
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.answer(&["systemctl", "show", "-p", property, "--value", unit])
    }

    /// The unit's journal, message text only (`-o cat`), optionally only lines logged under
    /// `identifier` (`-t`: "ondemand" for the binary's own lines, "systemd" for PID 1's).
    pub fn journal(&self, unit: &str, identifier: Option<&str>) -> String {
        let mut argv = vec!["journalctl", "--no-pager", "-o", "cat", "-u", unit];
        if let Some(id) = identifier {
            argv.extend(["-t", id]);
        }
        String::from_utf8_lossy(&self.exec(&argv).stdout).into_owned()
    }

    /// Installs the repository's systemd/ondemand.socket and ondemand.service unchanged in
    /// /etc/systemd/system, plus drop-ins that point ExecStart at the payload's binary and
    /// config and move ListenStream to 127.0.0.1:`port` on the host's loopback, and the system
    /// user `ondemand` the unit runs as (packaging/deb/sysusers.conf); then daemon-reload.
    /// Nothing is enabled or started.
    pub fn install_units(&self, port: u16) {
        self.install_units_with(port, "");
    }

    /// Like [`install_units`](Self::install_units), with `service_extra` (lines for the
    /// service's [Service] section, e.g. `Environment=RUST_LOG=debug`) added to its drop-in.
    /// Installs the project's systemd/ondemand-https.socket with a drop-in that makes it listen
    /// on 127.0.0.1:`port` (after [`install_units`](Self::install_units)), and reloads systemd.
    pub fn install_https_socket(&self, port: u16) {
        let staged = self.payload().join("units");
        std::fs::create_dir_all(&staged).expect("create payload/units");
        let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ondemand-https.socket");
        std::fs::copy(&unit, staged.join("ondemand-https.socket"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", unit.display()));
        std::fs::write(
            staged.join("https-socket-test.conf"),
            format!("[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"),
        )
        .expect("write https socket drop-in");
        let etc = "/etc/systemd/system";
        let from = format!("{PAYLOAD}/units");
        self.check(&["mkdir", "-p", &format!("{etc}/ondemand-https.socket.d")]);
        for (src, dst) in [
            ("ondemand-https.socket", "ondemand-https.socket"),
            (
                "https-socket-test.conf",
                "ondemand-https.socket.d/test.conf",
            ),
        ] {
            self.check(&["cp", &format!("{from}/{src}"), &format!("{etc}/{dst}")]);
        }
        self.check(&["systemctl", "daemon-reload"]);
    }

    pub fn install_units_with(&self, port: u16, service_extra: &str) {
        let repo_units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
        let staged = self.payload().join("units");
        std::fs::create_dir_all(&staged).expect("create payload/units");
        for unit in ["ondemand.socket", "ondemand.service"] {
            std::fs::copy(repo_units.join(unit), staged.join(unit))
                .unwrap_or_else(|e| panic!("copy systemd/{unit}: {e}"));
        }
        // A drop-in adds to list settings: an empty assignment first resets ExecStart= and
        // ListenStream= (otherwise the socket would also try port 80, the service would have
        // two ExecStart lines and be rejected).
        std::fs::write(
            staged.join("service-test.conf"),
            format!(
                "[Service]\nExecStart=\nExecStart={BIN_IN_CONTAINER} serve --config \
                 {CONFIG_IN_CONTAINER}\n{service_extra}\n"
            ),
        )
        .expect("write service drop-in");
        std::fs::write(
            staged.join("socket-test.conf"),
            format!("[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"),
        )
        .expect("write socket drop-in");

        // The unit runs ondemand as the system user `ondemand`, which the Debian package creates
        // with this same sysusers.d file; the container's /etc starts empty.
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb/sysusers.conf"),
            staged.join("sysusers.conf"),
        )
        .expect("copy packaging/deb/sysusers.conf");
        self.check(&["mkdir", "-p", "/etc/sysusers.d"]);
        self.check(&[
            "cp",
            &format!("{PAYLOAD}/units/sysusers.conf"),
            "/etc/sysusers.d/ondemand.conf",
        ]);
        self.check(&["systemd-sysusers", "ondemand.conf"]);

        let etc = "/etc/systemd/system";
        let from = format!("{PAYLOAD}/units");
        self.check(&["mkdir", "-p", &format!("{etc}/ondemand.service.d")]);
        self.check(&["mkdir", "-p", &format!("{etc}/ondemand.socket.d")]);
        for (src, dst) in [
            ("ondemand.socket", "ondemand.socket"),
            ("ondemand.service", "ondemand.service"),
            ("service-test.conf", "ondemand.service.d/test.conf"),
            ("socket-test.conf", "ondemand.socket.d/test.conf"),
        ] {
            self.check(&["cp", &format!("{from}/{src}"), &format!("{etc}/{dst}")]);
        }
        self.check(&["systemctl", "daemon-reload"]);
    }

    /// Installs the repository's systemd/apps-as-other-users.conf as a drop-in of
    /// ondemand.service (after [`install_units`](Self::install_units)), and reloads systemd.
    pub fn install_apps_as_other_users(&self) {
        let staged = self.payload().join("units");
        std::fs::create_dir_all(&staged).expect("create payload/units");
        let dropin = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/apps-as-other-users.conf");
        std::fs::copy(&dropin, staged.join("apps-as-other-users.conf"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", dropin.display()));
        self.check(&[
            "cp",
            &format!("{PAYLOAD}/units/apps-as-other-users.conf"),
            "/etc/systemd/system/ondemand.service.d/apps-as-other-users.conf",
        ]);
        self.check(&["systemctl", "daemon-reload"]);
    }

    /// nspawn's console output so far (boot messages; useful in failure messages).
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Panics with the console log if the container has already gone.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.timeout.try_wait() {
            panic!(
                "systemd-nspawn ended early ({status})\n--- console ---\n{}",
                self.console()
            );
        }
    }

    /// Waits until `parent` has a child whose command name is exactly `name`; returns its pid.
    fn wait_for_child_named(&mut self, parent: i32, name: &str, deadline: Instant) -> i32 {
        loop {
            self.assert_alive();
            if let Some(pid) = child_named(parent, name) {
                return pid;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {name} process under pid {parent} after {BOOT_TIMEOUT:?}\n--- console ---\n{}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    /// Powers the container off, waits (bounded), then SIGKILLs whatever is left, by pid:
    /// systemd-nspawn, the container's PID 1 (killing only nspawn would leave it running), and
    /// our timeout process. Never panics (it may run while a test is already panicking).
    fn drop(&mut self) {
        if matches!(self.timeout.try_wait(), Ok(None)) {
            if self.leader.is_some() {
                let _ = Command::new("timeout")
                    .args([
                        "10",
                        "nsenter",
                        "-t",
                        &self.leader().to_string(),
                        "-a",
                        "--",
                    ])
                    .args(["systemctl", "poweroff", "--no-block"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let deadline = Instant::now() + POWEROFF_TIMEOUT;
            while matches!(self.timeout.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if matches!(self.timeout.try_wait(), Ok(None)) {
            let _ = writeln!(
                std::io::stderr(),
                "nspawn: poweroff timed out; SIGKILL by pid"
            );
            // Boot may have failed before these were found.
            let nspawn = self
                .nspawn
                .or_else(|| child_named(self.timeout.id() as i32, "systemd-nspawn"));
            let leader = self
                .leader
                .or_else(|| nspawn.and_then(|n| child_named(n, "systemd")));
            for (pid, name) in [(nspawn, "systemd-nspawn"), (leader, "systemd")] {
                // Guard against pid reuse: only a process that still has the expected name.
                if let Some(pid) = pid.filter(|&p| comm(p).as_deref() == Some(name)) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let _ = self.timeout.kill();
        }
        let _ = self.timeout.wait();
    }
}

/// Panics with instructions unless this process can run systemd-nspawn.
fn check_prerequisites() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    let missing: Vec<&str> = ["systemd-nspawn", "nsenter", "pgrep", "timeout", "setsid"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    if euid != "0" || !missing.is_empty() {
        panic!(
            "the systemd tests boot a throwaway container with systemd-nspawn: run as root; \
             apt-get install systemd-container (euid {euid}, missing tools: {missing:?})"
        );
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// The pid of `parent`'s child whose command name is exactly `name` (pgrep -P, by parent pid
/// only — never a match by name across the system).
fn child_named(parent: i32, name: &str) -> Option<i32> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string(), "-x", name])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The command name of `pid`, if it still exists.
fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}
