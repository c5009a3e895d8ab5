//! Running `ondemand serve` directly in a test: with `--listen` on a free port, or on a listening
//! socket the test itself owns and passes in with the systemd protocol (so the test plays the
//! supervisor and can start a second instance on the same socket).

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{bin, free_port, tempdir, wait_for_port, wait_until, write_file, ChildGuard};

/// A running `ondemand serve` and its files.
pub struct Ondemand {
    pub child: ChildGuard,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Ondemand {
    /// Starts `ondemand serve --listen 127.0.0.1:PORT` with `config` (TOML without `log`; the log
    /// goes to a file in the test's directory) and waits until it logs that it is ready: the port
    /// accepts before that, but the control socket is opened after the accept loops start.
    pub fn start(config: &str) -> Ondemand {
        Ondemand::start_with_args(config, &[])
    }

    /// Like [`start`](Self::start), with more arguments after `--listen 127.0.0.1:PORT` (another
    /// `--listen`, e.g. `https://127.0.0.1:PORT2`; the caller waits for its port).
    pub fn start_with_args(config: &str, extra: &[&str]) -> Ondemand {
        let dir = tempdir();
        let port = free_port();
        let (config, log) = write_config(&dir, config);
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("start ondemand");
        let od = Ondemand {
            child: ChildGuard::new(child),
            port,
            config,
            log,
            dir,
        };
        wait_for_port(port, Duration::from_secs(10));
        od.wait_ready();
        od
    }

    /// Starts `ondemand serve` on `listener` passed as fd 3 with LISTEN_FDS=1, the way systemd
    /// does (LISTEN_PID is set by a shell to its own pid, which exec keeps).
    pub fn start_on(listener: &TcpListener, config: &str) -> Ondemand {
        Ondemand::start_on_with_env(listener, config, &[])
    }

    /// Like [`start_on`](Self::start_on), with extra environment variables (NOTIFY_SOCKET...).
    pub fn start_on_with_env(
        listener: &TcpListener,
        config: &str,
        env: &[(&str, &str)],
    ) -> Ondemand {
        let dir = tempdir();
        let port = listener.local_addr().unwrap().port();
        let (config, log) = write_config(&dir, config);
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "LISTEN_PID=$$ exec \"$0\" \"$@\"",
            bin().to_str().unwrap(),
            "serve",
            "--config",
        ])
        .arg(&config)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
        // SAFETY: only dup2 and fcntl (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep FD_CLOEXEC, so clear it explicitly in that case.
                let ok = if fd == 3 {
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0) >= 0
                } else {
                    nix::libc::dup2(fd, 3) >= 0
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start ondemand");
        let od = Ondemand {
            child: ChildGuard::new(child),
            port,
            config,
            log,
            dir,
        };
        od.wait_ready();
        od
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    /// Waits for the "ready: ..." line, logged once every socket (the control socket included)
    /// is open.
    fn wait_ready(&self) {
        self.wait_log("ready: ", Duration::from_secs(10));
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_until(&format!("{needle:?} in the log"), timeout, || {
            self.log_text().contains(needle)
        });
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        match self.child.wait_timeout(timeout) {
            Some(status) => status.code().unwrap_or(-1),
            None => panic!(
                "ondemand did not exit within {timeout:?}; log:\n{}",
                self.log_text()
            ),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.child().try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Ondemand {
    /// Stops ondemand with SIGTERM first, so it stops the app processes it started (a SIGKILL
    /// would leave them to the parent-death signal alone); SIGKILL after 10 s.
    fn drop(&mut self) {
        if self.is_running() {
            self.child.signal(nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait_timeout(Duration::from_secs(10));
        }
    }
}

fn write_config(dir: &tempfile::TempDir, config: &str) -> (PathBuf, PathBuf) {
    let log = dir.path().join("ondemand.log");
    let text = add_log_settings(config, &log);
    (write_file(dir.path(), "ondemand.toml", &text), log)
}

/// Puts `log` and a debug `log_level` into the [server] table (adding the table if missing), and
/// keeps the state file and the control socket in the test's directory unless the test sets them.
fn add_log_settings(config: &str, log: &std::path::Path) -> String {
    let dir = log.parent().unwrap();
    let mut settings = format!("log = \"{}\"\nlog_level = \"debug\"\n", log.display());
    if !config.contains("state_dir") {
        settings.push_str(&format!(
            "state_dir = \"{}\"\n",
            dir.join("state").display()
        ));
    }
    if !config.contains("control_socket") {
        settings.push_str(&format!(
            "control_socket = \"{}\"\n",
            dir.join("control.sock").display()
        ));
    }
    if config.contains("[server]") {
        config.replacen("[server]\n", &format!("[server]\n{settings}"), 1)
    } else {
        format!("[server]\n{settings}\n{config}")
    }
}
