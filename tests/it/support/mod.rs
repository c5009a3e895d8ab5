//! Shared helpers for the integration tests: the binary under test, free loopback ports, temporary
//! directories, a tiny raw HTTP/1.1 client (so malformed requests can be sent byte for byte), and a
//! guard that ends the processes a test started, by pid, when the test ends.

#![allow(dead_code)]

pub mod netns;
pub mod nspawn;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod xinetd;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The `ondemand` binary cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ondemand"))
}

/// A loopback TCP port that was free a moment ago. The kernel hands out ephemeral ports in a
/// rotating sequence, so a port just released is not handed out again soon.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Polls `cond` every 10 ms until it is true or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until(&format!("port {port} to accept"), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// Whether a row of a socket table in /proc/net/tcp format (`table`) satisfies
/// `row(local, remote, state)`: addresses as the kernel prints them ("0100007F:1F90" is
/// 127.0.0.1:8080), the state in hex ("01" established, "0A" listening). A missing table has no rows.
pub fn socket_table_has(table: &Path, row: impl Fn(&str, &str, &str) -> bool) -> bool {
    std::fs::read_to_string(table)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let mut cols = line.split_whitespace().skip(1);
            match (cols.next(), cols.next(), cols.next()) {
                (Some(local), Some(remote), Some(state)) => row(local, remote, state),
                _ => false,
            }
        })
}

/// Whether some client holds an established TCP connection to 127.0.0.1:`port` (seen on the
/// client's side). The kernel completes a connection to a listening socket even while nobody
/// accepts it, so this tells that a client's connection waits in the backlog.
pub fn client_connected_to(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    socket_table_has(Path::new("/proc/net/tcp"), |_, remote, state| {
        remote == want && state == "01"
    })
}

/// A temporary directory removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ondemand-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// A child process that is killed (SIGKILL, by pid) and reaped when the guard drops, so a failing
/// test never leaves a process behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard(Some(child))
    }
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }
    /// The child itself, no longer guarded (for `wait_with_output`, which takes it by value).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child")
    }
    /// Waits up to `timeout` for the process to exit by itself; None if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A parsed HTTP/1.x response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` bytes on a new connection to 127.0.0.1:`port` and reads one response (the
/// connection is read to EOF, so send `Connection: close` or expect the server to close).
pub fn raw_request(port: u16, raw: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(raw)?;
    read_response(&mut s)
}

/// GET `path` with `Host: host` on a fresh connection.
pub fn get(port: u16, host: &str, path: &str) -> std::io::Result<Response> {
    raw_request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` on a kept-alive `conn` (connecting first if it is None, with `read_timeout`)
/// and reads one response. On error, also says how many response bytes had arrived.
pub fn exchange(
    port: u16,
    conn: &mut Option<TcpStream>,
    request: &[u8],
    read_timeout: Duration,
) -> Result<Response, (std::io::Error, usize)> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| (e, 0))?;
        s.set_read_timeout(Some(read_timeout)).map_err(|e| (e, 0))?;
        *conn = Some(s);
    }
    let s = conn.as_mut().unwrap();
    s.write_all(request).map_err(|e| (e, 0))?;
    let mut counted = Counting { inner: s, bytes: 0 };
    read_response(&mut counted).map_err(|e| (e, counted.bytes))
}

/// Whether the server has closed (or reset) a kept-alive connection: a non-blocking peek sees EOF
/// or an error. Unexpected bytes also make the connection unusable.
pub fn closed_by_peer(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).expect("set_nonblocking");
    let closed = !matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).expect("set_nonblocking");
    closed
}

/// A reader that counts the bytes it has passed on.
struct Counting<'a> {
    inner: &'a mut TcpStream,
    bytes: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n;
        Ok(n)
    }
}

/// Reads one response from `s`: headers, then a body by Content-Length, chunked, or to EOF.
pub fn read_response(s: &mut impl Read) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} bytes of response head",
                    buf.len()
                ),
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        resp.body.resize(len, 0);
        s.read_exact(&mut resp.body)?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        resp.body = read_chunked(s)?;
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        s.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

fn read_line(s: &mut impl Read) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn read_chunked(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(s)?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(std::io::Error::other)?;
        if size == 0 {
            while !read_line(s)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        s.read_exact(&mut body[start..])?;
        read_line(s)?;
    }
}

/// Runs `ondemand` with `args` to completion and returns (exit code, stdout, stderr).
pub fn run_ondemand(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run ondemand");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ondemand check` on each config `(text, expected)` and asserts it fails with exit 2, a
/// message containing `expected`, and a file:line:column location.
pub fn assert_check_errors(cases: &[(String, &str)]) {
    for (text, expected) in cases {
        let dir = tempdir();
        let config = write_file(dir.path(), "c.toml", text);
        let (code, _out, err) = run_ondemand(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
        assert!(err.contains("c.toml:"), "{text}: {err}");
    }
}
