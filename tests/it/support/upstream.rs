//! The project's test upstream (`tests/apps/upstream.py`, run with Debian's python3) as a
//! process a test owns: started on a free port or a unix socket, ready once it prints `listening`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{free_port, ChildGuard};

/// Debian's python3, which has python3-websockets; the pyenv python3 on PATH may not.
pub const PYTHON: &str = "/usr/bin/python3";

/// Path of a program under tests/apps.
pub fn app_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

/// A running test upstream.
pub struct TestUpstream {
    pub child: ChildGuard,
    /// `http://127.0.0.1:PORT` or `unix:/path`, as the config writes it.
    pub address: String,
    pub port: Option<u16>,
}

impl TestUpstream {
    /// Starts one named `name` on a free loopback port.
    pub fn tcp(name: &str) -> TestUpstream {
        let port = free_port();
        let mut up = TestUpstream::start(name, &["--port", &port.to_string()]);
        up.address = format!("http://127.0.0.1:{port}");
        up.port = Some(port);
        up
    }

    /// Starts one named `name` on the unix socket `path`.
    pub fn unix(name: &str, path: &Path) -> TestUpstream {
        let mut up = TestUpstream::start(name, &["--unix", path.to_str().unwrap()]);
        up.address = format!("unix:{}", path.display());
        up
    }

    fn start(name: &str, listen: &[&str]) -> TestUpstream {
        let mut child = Command::new(PYTHON)
            .arg(app_path("upstream.py"))
            .args(["--name", name])
            .args(listen)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/apps/upstream.py");
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard::new(child);
        wait_for_line(stdout, "listening", Duration::from_secs(10));
        TestUpstream {
            child: guard,
            address: String::new(),
            port: None,
        }
    }

    /// Kills it (SIGKILL, by pid) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.child().kill();
        let _ = self.child.child().wait();
    }
}

/// Waits until `stdout` yields a line containing `needle`; keeps draining it afterwards in a
/// thread so the program never blocks on a full pipe.
pub fn wait_for_line(stdout: impl std::io::Read + Send + 'static, needle: &str, timeout: Duration) {
    let (tx, rx) = mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&needle) {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("no {:?} line within {timeout:?}", "listening"));
}
