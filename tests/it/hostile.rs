//! Hostile HTTP/1.1 against a proxied app whose upstream records the raw bytes it receives: every
//! malformed or ambiguous request (smuggling with Content-Length and Transfer-Encoding, duplicate
//! lengths, obs-fold, bare CR/LF, NUL, oversized heads, bad methods and targets, absolute- and
//! authority-form) is either refused with a 4xx and a closed connection, with nothing forwarded,
//! or forwarded as exactly one unambiguous request. Then the slow clients (slowloris heads, slow
//! bodies) are cut off by the deadlines, and 10,000 connections at once stay within
//! `max_connections` without the launcher running out of descriptors.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::server::Ondemand;
use crate::support::{read_response, wait_until};

/// One request as the upstream received it, checked by a strict HTTP/1.1 parser.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    /// Header fields as sent, names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What was wrong with its framing, if anything (an ambiguous or broken message).
    framing_error: Option<String>,
    /// The connection closed before the request was complete (an aborted body).
    truncated: bool,
}

impl Received {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An upstream on a raw socket that parses what it receives strictly, records every request (and
/// every framing error, and every byte left unparsed when a connection closes), and answers each
/// request `200 upstream`.
struct RecordingUpstream {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Connections>,
}

/// The upstream's open connections, to tell when nothing is left to record: each one's socket
/// (to peek at bytes not read yet) and whether a request is being read from it.
type Connections = Mutex<HashMap<u64, (TcpStream, bool)>>;

/// Requests for targets starting with this are answered as soon as their head is read, before
/// their body.
const EARLY: &str = "/early";

const UPSTREAM_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nupstream\n";

impl RecordingUpstream {
    fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recording upstream");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Connections::default());
        let (rec, stop2, conns2) = (received.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            let ids = AtomicU64::new(0);
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let Ok(watched) = stream.try_clone() else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::SeqCst);
                conns2.lock().unwrap().insert(id, (watched, false));
                let (rec, conns) = (rec.clone(), conns2.clone());
                std::thread::spawn(move || {
                    serve_recorded(stream, &rec, &conns, id);
                    conns.lock().unwrap().remove(&id);
                });
            }
        });
        RecordingUpstream {
            port,
            received,
            stop,
            conns,
        }
    }

    /// Nothing left to record: no request half read, and no connection with bytes (or its end)
    /// that its thread has not read yet. Idle keep-alive connections may stay open.
    fn settled(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        let mut byte = [0u8; 1];
        self.conns
            .lock()
            .unwrap()
            .values()
            .all(|(stream, reading)| {
                !reading
                    && recv(
                        stream.as_raw_fd(),
                        &mut byte,
                        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                    ) == Err(nix::errno::Errno::EAGAIN)
            })
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }

    fn snapshot(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Bytes of one upstream connection, read on demand.
struct Incoming {
    stream: TcpStream,
    buf: VecDeque<u8>,
    /// The stream ended.
    ended: bool,
}

impl Incoming {
    /// Ensures at least `n` bytes are buffered; false at end of stream.
    fn fill(&mut self, n: usize) -> bool {
        let mut chunk = [0u8; 8192];
        while self.buf.len() < n {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    self.ended = true;
                    return false;
                }
                Ok(k) => self.buf.extend(&chunk[..k]),
            }
        }
        true
    }

    /// A line ending in CRLF (a bare LF is a framing error in what a proxy sends).
    fn line(&mut self, limit: usize) -> Result<String, String> {
        let mut line = Vec::new();
        loop {
            if !self.fill(1) {
                return Err(format!("connection closed inside a line: {line:?}"));
            }
            let b = self.buf.pop_front().unwrap();
            if b == b'\n' {
                if line.last() != Some(&b'\r') {
                    return Err("bare LF".into());
                }
                line.pop();
                break;
            }
            line.push(b);
            if line.len() > limit {
                return Err("line too long".into());
            }
        }
        if line.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(format!("CR or NUL inside a line: {line:?}"));
        }
        String::from_utf8(line).map_err(|_| "a line is not UTF-8".to_string())
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        if !self.fill(n) {
            return Err(format!(
                "connection closed {} bytes into a {n}-byte body",
                self.buf.len()
            ));
        }
        Ok(self.buf.drain(..n).collect())
    }
}

fn serve_recorded(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    conns: &Connections,
    id: u64,
) {
    let mut conn = Incoming {
        stream,
        buf: VecDeque::new(),
        ended: false,
    };
    let reading = |now: bool| {
        if let Some(c) = conns.lock().unwrap().get_mut(&id) {
            c.1 = now;
        }
    };
    loop {
        if !conn.fill(1) {
            return; // closed between requests: clean
        }
        reading(true);
        let request = read_request(&mut conn);
        let broken = request.framing_error.is_some() || request.truncated;
        let answered = request.target.starts_with(EARLY);
        received.lock().unwrap().push(request);
        reading(false);
        if broken || !answered && conn.stream.write_all(UPSTREAM_ANSWER).is_err() {
            return;
        }
    }
}

/// Reads one request; whatever does not parse strictly is recorded as its framing error.
fn read_request(conn: &mut Incoming) -> Received {
    let mut req = Received {
        method: String::new(),
        target: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        framing_error: None,
        truncated: false,
    };
    if let Err(e) = read_head_and_body(conn, &mut req) {
        if conn.ended {
            req.truncated = true;
        } else {
            req.framing_error = Some(e);
        }
    }
    req
}

fn read_head_and_body(conn: &mut Incoming, req: &mut Received) -> Result<(), String> {
    let request_line = conn.line(16 * 1024)?;
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, "HTTP/1.1"] = parts[..] else {
        return Err(format!("bad request line {request_line:?}"));
    };
    req.method = method.to_string();
    req.target = target.to_string();
    loop {
        let line = conn.line(64 * 1024)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("header line without a colon: {line:?}"));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(format!("bad header name in {line:?}"));
        }
        req.headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    if req.target.starts_with(EARLY) {
        conn.stream
            .write_all(UPSTREAM_ANSWER)
            .map_err(|e| e.to_string())?;
    }
    let lengths = req.values("content-length");
    let encodings = req.values("transfer-encoding");
    match (&lengths[..], &encodings[..]) {
        ([], []) => Ok(()),
        ([len], []) => {
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("Content-Length {len:?} is not a plain number"));
            }
            let n: usize = len.parse().map_err(|_| format!("Content-Length {len:?}"))?;
            req.body = conn.take(n)?;
            Ok(())
        }
        ([], ["chunked"]) => read_chunked(conn, &mut req.body),
        _ => Err(format!(
            "ambiguous framing: Content-Length {lengths:?}, Transfer-Encoding {encodings:?}"
        )),
    }
}

fn read_chunked(conn: &mut Incoming, body: &mut Vec<u8>) -> Result<(), String> {
    loop {
        let size_line = conn.line(1024)?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            while !conn.line(64 * 1024)?.is_empty() {}
            return Ok(());
        }
        body.extend(conn.take(size)?);
        if !conn.line(2)?.is_empty() {
            return Err("chunk data longer than its size".into());
        }
    }
}

/// What ondemand must do with a corpus entry.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answer with this 4xx, close the connection, and forward nothing.
    Refused(u16),
    /// Answer with this 4xx and close: the request's head may have been forwarded before its
    /// body turned out broken, but then the upstream connection is closed before that request is
    /// complete, so the upstream never sees a complete request.
    Aborted(u16),
    /// Forward exactly these requests (target, body), each framed unambiguously, in this order.
    Forwarded(&'static [(&'static str, &'static [u8])]),
}

use Expect::{Aborted, Forwarded, Refused};

/// A request that must never reach the upstream: every smuggling attempt carries one.
const SMUGGLED: &str = "/smuggled";

/// The corpus: (what it tests, the bytes sent, what must happen). `{S}` in the bytes is replaced
/// by a complete `GET /smuggled` request, the payload a desync would let through.
const CORPUS: &[(&str, &str, Expect)] = &[
    // Baselines: the harness itself.
    ("plain GET", "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n", Forwarded(&[("/ok", b"")])),
    (
        "POST with Content-Length",
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        Forwarded(&[("/p", b"hello")]),
    ),
    (
        "POST chunked",
        "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(&[("/p", b"hello")]),
    ),
    (
        "two pipelined GETs are two requests, in order",
        "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n",
        Forwarded(&[("/one", b""), ("/two", b"")]),
    ),
    // Smuggling: Content-Length and Transfer-Encoding together (RFC 9112 §6.3).
    // hyper reads such a message by its Transfer-Encoding, forwards it without the
    // Content-Length, and closes the connection after it (so `{S}` is never read).
    (
        "CL.TE: Content-Length then Transfer-Encoding chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
        Forwarded(&[("/", b"")]),
    ),
    (
        "TE.CL: Transfer-Encoding chunked then Content-Length",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n23\r\n{S}\r\n0\r\n\r\n{S}",
        Forwarded(&[("/", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")]),
    ),
    (
        "CL.TE with Content-Length 0",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
        Forwarded(&[("/", b"")]),
    ),
    (
        "Transfer-Encoding chunked twice with a Content-Length",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{S}",
        Forwarded(&[("/", b"")]),
    ),
    (
        "Transfer-Encoding identity",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "Transfer-Encoding chunked, identity (chunked not last)",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{S}",
        Refused(400),
    ),
    (
        "Transfer-Encoding xchunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "Transfer-Encoding with a space before the colon",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}",
        Refused(400),
    ),
    (
        "Transfer-Encoding upper-case CHUNKED is chunked",
        "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        Forwarded(&[("/p", b"hi")]),
    ),
    // Content-Length: duplicates, lists and numbers that are not numbers.
    (
        "two equal Content-Lengths are forwarded as one",
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        Forwarded(&[("/p", b"hello")]),
    ),
    (
        "a Content-Length list, even of equal values",
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "two different Content-Lengths",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "a Content-Length list of different values",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 50\r\n\r\nhello{S}",
        Refused(400),
    ),
    ("Content-Length +5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello{S}", Refused(400)),
    ("Content-Length -1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n{S}", Refused(400)),
    ("Content-Length 0x5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello{S}", Refused(400)),
    ("Content-Length 5.0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\nhello{S}", Refused(400)),
    ("empty Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n{S}", Refused(400)),
    (
        "Content-Length beyond 64 bits",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n{S}",
        Refused(400),
    ),
    // Broken chunked bodies: the client's error, not the upstream's.
    (
        "chunk size that is not hex",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{S}",
        Aborted(400),
    ),
    (
        "chunk size beyond 64 bits",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n{S}",
        Aborted(400),
    ),
    (
        "chunk longer than its size",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n{S}",
        Aborted(400),
    ),
    // Line endings, folding, control bytes.
    (
        "obs-fold continuation line",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n{S}",
        Refused(400),
    ),
    (
        "obs-fold folding Content-Length",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n 5\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "whitespace before the first header",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n{S}",
        Refused(400),
    ),
    ("bare CR ending the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n{S}", Refused(400)),
    ("bare CR inside a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n{S}", Refused(400)),
    (
        "bare CR smuggling a Content-Length",
        "POST / HTTP/1.1\r\nHost: a\r\nX-A: b\rContent-Length: 5\r\n\r\nhello{S}",
        Refused(400),
    ),
    (
        "bare LF line endings are read as line ends (RFC 9112 §2.2), forwarded with CRLF",
        "GET /lf HTTP/1.1\nHost: a\n\n",
        Forwarded(&[("/lf", b"")]),
    ),
    ("NUL in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n{S}", Refused(400)),
    ("NUL in the target", "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("NUL in a header name", "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n{S}", Refused(400)),
    ("DEL in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n{S}", Refused(400)),
    ("header line without a colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n{S}", Refused(400)),
    ("empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n{S}", Refused(400)),
    // Methods, versions and targets.
    ("method with @", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("two spaces after the method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("tab between method and target", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("HTTP/2.0 on an HTTP/1 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("space inside the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("target climbing above the root", "GET /../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("encoded dots above the root", "GET /%2e%2e/etc HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("encoded NUL in the target", "GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("broken escape in the target", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("asterisk-form with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    (
        "dot-segments are normalized before forwarding",
        "GET /a/./b/../c HTTP/1.1\r\nHost: a\r\n\r\n",
        Forwarded(&[("/a/c", b"")]),
    ),
    (
        "absolute-form target is forwarded in origin-form",
        "GET http://a/abs?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        Forwarded(&[("/abs?q=1", b"")]),
    ),
    (
        "absolute-form with another Host: the target's host wins (RFC 9112 §3.2.2)",
        "GET http://a/abs HTTP/1.1\r\nHost: other\r\n\r\n",
        Forwarded(&[("/abs", b"")]),
    ),
    ("absolute-form with a non-HTTP scheme", "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("authority-form with GET", "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(400)),
    ("authority-form CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n{S}", Refused(400)),
    // Host.
    ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n{S}", Refused(400)),
    ("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{S}", Refused(400)),
    ("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n{S}", Refused(400)),
    ("Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n{S}", Refused(400)),
    // Sizes (max_header_size 8KiB, max_headers 20 in this test's config).
    ("a 16 KiB header", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {BIG}\r\n\r\n{S}", Refused(431)),
    ("a 16 KiB target", "GET /{BIG} HTTP/1.1\r\nHost: a\r\n\r\n{S}", Refused(431)),
    ("50 headers", "GET / HTTP/1.1\r\nHost: a\r\n{MANY}\r\n{S}", Refused(431)),
];

/// The raw bytes of a corpus entry.
fn expand(raw: &str) -> Vec<u8> {
    raw.replace(
        "{S}",
        &format!("GET {SMUGGLED} HTTP/1.1\r\nHost: a\r\n\r\n"),
    )
    .replace("{BIG}", &"x".repeat(16 * 1024))
    .replace(
        "{MANY}",
        &(0..50)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>(),
    )
    .into_bytes()
}

const HOSTILE_CONFIG: &str = "[server]\n\
     idle_timeout = \"never\"\n\
     first_request_timeout = \"2s\"\n\
     header_read_timeout = \"1s\"\n\
     keepalive_timeout = \"300ms\"\n\
     max_header_size = \"8KiB\"\n\
     max_headers = 20\n\n";

fn hostile_launcher(upstream: &RecordingUpstream, extra: &str) -> Ondemand {
    Ondemand::start(&format!(
        "{HOSTILE_CONFIG}[[app]]\nname = \"recorded\"\npath = \"/\"\n\
         proxy = {{ upstream = \"http://127.0.0.1:{}\"{extra} }}\n",
        upstream.port
    ))
}

/// Sends `raw` on a new connection and reads everything until the launcher closes it. Returns
/// the bytes and whether the close came within `within` (else the read timed out).
fn send_and_read_to_close(port: u16, raw: &[u8], within: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to ondemand");
    s.set_read_timeout(Some(within)).unwrap();
    // A refusal may come (and the socket close) before everything is written.
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend(&chunk[..n]),
            // A reset after the launcher closed with unread bytes of ours: closed all the same.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The status codes of the responses in `bytes`, in order.
fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match read_response(&mut bytes) {
            Ok(r) => out.push(r.status),
            Err(_) => break,
        }
    }
    out
}

/// Sends a marker request and waits until the upstream has it: everything the corpus entry made
/// ondemand forward has then been received (the entry's connection is closed already).
fn flush(od: &Ondemand, upstream: &RecordingUpstream, n: usize) {
    let marker = format!("/marker-{n}");
    let (got, _) = send_and_read_to_close(
        od.port,
        format!("GET {marker} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(statuses(&got), [200], "the marker request after entry {n}");
    wait_until("the marker at the upstream", Duration::from_secs(5), || {
        upstream.snapshot().iter().any(|r| r.target == marker)
    });
    // A request of this entry that ondemand abandoned (a client body that turned out broken)
    // ends on a connection of its own, which the marker's need not wait for.
    wait_until(
        "the upstream to record all it got",
        Duration::from_secs(5),
        || upstream.settled(),
    );
}

/// Checks one corpus entry; returns what went wrong, if anything.
fn check_entry(
    od: &Ondemand,
    upstream: &RecordingUpstream,
    n: usize,
    (name, raw, expect): &(&str, &str, Expect),
) -> Result<(), String> {
    let (reply, closed) = send_and_read_to_close(od.port, &expand(raw), Duration::from_secs(5));
    flush(od, upstream, n);
    let received: Vec<Received> = upstream
        .take()
        .into_iter()
        .filter(|r| !r.target.starts_with("/marker-"))
        .collect();
    let codes = statuses(&reply);
    let reply_text = String::from_utf8_lossy(&reply);
    let fail = |why: String| {
        Err(format!(
            "{name}: {why}\n  reply: {reply_text:?}\n  upstream got: {received:#?}"
        ))
    };
    if let Some(bad) = received.iter().find(|r| r.framing_error.is_some()) {
        return fail(format!(
            "ambiguous or broken framing upstream: {:?}",
            bad.framing_error
        ));
    }
    if received.iter().any(|r| r.target.contains(SMUGGLED)) {
        return fail("the smuggled request reached the upstream".into());
    }
    if !closed {
        return fail("the connection was still open after 5 s".into());
    }
    match expect {
        Aborted(status) => {
            if codes.first() != Some(status) || codes.len() != 1 {
                return fail(format!("expected one {status}, got {codes:?}"));
            }
            if received.iter().any(|r| !r.truncated) {
                return fail("the upstream got a complete request".into());
            }
        }
        Refused(status) => {
            if codes.first() != Some(status) {
                return fail(format!("expected {status}, got {codes:?}"));
            }
            if codes.len() != 1 {
                return fail(format!("more than one response after a refusal: {codes:?}"));
            }
            if !received.is_empty() {
                return fail("a refused request was forwarded".into());
            }
        }
        Forwarded(expected) => {
            let got: Vec<(&str, &[u8])> = received
                .iter()
                .map(|r| (r.target.as_str(), &r.body[..]))
                .collect();
            if got != *expected {
                return fail(format!("expected upstream to get {expected:?}"));
            }
            if codes != vec![200; expected.len()] {
                return fail(format!("expected {} 200s, got {codes:?}", expected.len()));
            }
            for r in &received {
                if r.values("host") != ["a"] {
                    return fail(format!(
                        "Host upstream is {:?}, not [\"a\"]",
                        r.values("host")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The corpus, entry by entry, against one launcher; all failures are reported together.
#[test]
fn malformed_and_ambiguous_requests_are_refused_or_forwarded_once() {
    let upstream = RecordingUpstream::start();
    let od = hostile_launcher(&upstream, ", timeout = \"3s\"");
    let failures: Vec<String> = CORPUS
        .iter()
        .enumerate()
        .filter_map(|(n, entry)| check_entry(&od, &upstream, n, entry).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} corpus entries failed:\n{}\nlog:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n"),
        od.log_text()
    );
}

/// Connects, sends `head`, then `body` one byte every `pace`, then nothing, while reading what
/// the launcher answers. Returns the answer and when the launcher closed the connection (None
/// if it was still open after `cap`).
fn trickle(
    port: u16,
    head: &[u8],
    body: &[u8],
    pace: Duration,
    cap: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to ondemand");
    let mut reader = s.try_clone().unwrap();
    reader.set_read_timeout(Some(cap)).unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let closed2 = closed.clone();
    let read = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            match reader.read(&mut chunk) {
                Ok(0) => break Some(started.elapsed()),
                Ok(n) => got.extend(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break Some(started.elapsed()),
                Err(_) => break None,
            }
        };
        closed2.store(true, Ordering::SeqCst);
        (got, end)
    });
    let _ = s.write_all(head);
    for byte in body {
        // Pacing the client, not waiting for the server: the deadline under test is server-side.
        std::thread::sleep(pace);
        if closed.load(Ordering::SeqCst) || s.write_all(&[*byte]).is_err() {
            break;
        }
    }
    read.join().unwrap()
}

const SLOW_CONFIG_TIMEOUT: &str = ", timeout = \"1s\"";

/// Slowloris: a head trickled a byte every 100 ms (each byte is progress) is cut off by
/// `header_read_timeout` (1 s here), with a 408, and nothing reaches the upstream.
#[test]
fn a_head_trickled_byte_by_byte_gets_408_at_header_read_timeout() {
    let upstream = RecordingUpstream::start();
    let od = hostile_launcher(&upstream, SLOW_CONFIG_TIMEOUT);
    let (reply, closed) = trickle(
        od.port,
        b"GET /slow HTTP/1.1\r\nHost: a\r\n",
        &[b'X'; 200],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let closed = closed.expect("the connection was still open after 10 s");
    assert_eq!(
        statuses(&reply),
        [408],
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "closed after {closed:?}, header_read_timeout is 1 s"
    );
    flush(&od, &upstream, 0);
    let received = upstream.take();
    assert!(
        received.iter().all(|r| r.target.starts_with("/marker-")),
        "{received:#?}"
    );
}

/// A connection that never sends a byte is closed at `first_request_timeout` (2 s here), quietly.
#[test]
fn a_silent_connection_is_closed_at_first_request_timeout() {
    let upstream = RecordingUpstream::start();
    let od = hostile_launcher(&upstream, SLOW_CONFIG_TIMEOUT);
    let (reply, closed) = trickle(od.port, b"", b"", Duration::ZERO, Duration::from_secs(10));
    let closed = closed.expect("the connection was still open after 10 s");
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    assert!(
        closed >= Duration::from_millis(1900) && closed < Duration::from_millis(3500),
        "closed after {closed:?}, first_request_timeout is 2 s"
    );
}

/// A body trickled to an upstream that waits for all of it: the app's `timeout` (1 s here) runs
/// out, the client gets 504 and a closed connection, and the upstream never got a whole request.
#[test]
fn a_slow_body_to_a_waiting_upstream_is_cut_off_at_the_app_timeout() {
    body_cut_off_at_the_app_timeout("/wait", &[b'b'; 1000], Duration::from_millis(100), 504);
}

/// A body that stops halfway, to an upstream that answered at once: the answer reaches the
/// client, and the stalled body is given up after the app's `timeout` (1 s here), which closes
/// the client's connection and the upstream's.
#[test]
fn a_stalled_body_after_an_early_answer_is_given_up_at_the_app_timeout() {
    body_cut_off_at_the_app_timeout("/early", b"0123456789", Duration::from_millis(10), 200);
}

/// POSTs a 1000-byte body to `target`, sending `sent` a byte per `interval`: the client gets
/// `status` and a connection closed within 2.5 s, and the upstream only a truncated request.
fn body_cut_off_at_the_app_timeout(target: &str, sent: &[u8], interval: Duration, status: u16) {
    let upstream = RecordingUpstream::start();
    let od = hostile_launcher(&upstream, SLOW_CONFIG_TIMEOUT);
    let head = format!("POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    let (reply, closed) = trickle(
        od.port,
        head.as_bytes(),
        sent,
        interval,
        Duration::from_secs(10),
    );
    let closed = closed.expect("the connection was still open after 10 s");
    assert_eq!(
        statuses(&reply),
        [status],
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        closed < Duration::from_millis(2500),
        "closed after {closed:?}"
    );
    wait_until(
        "the upstream to see its connection close",
        Duration::from_secs(5),
        || upstream.snapshot().iter().any(|r| r.target == target),
    );
    let received = upstream.take();
    assert!(received.iter().all(|r| r.truncated), "{received:#?}");
}

/// Raises this process's soft open-files limit to at least `want` (up to the hard limit); panics
/// if the hard limit is lower, saying so.
fn raise_open_files(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= want,
        "this test needs {want} open files, the hard limit is {hard} (raise it with ulimit -Hn)"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
}

/// Starts a non-blocking connect to 127.0.0.1:`port`; the socket closes with a reset (SO_LINGER
/// 0) when dropped, so 10,000 of them leave no TIME_WAIT behind.
fn start_connect(port: u16) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    setsockopt(
        &fd,
        sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER");
    match connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, port),
    ) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => fd,
        Err(e) => panic!("connect: {e}"),
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// 10,000 connections opened at once against `max_connections = 200`: the launcher accepts 200
/// at a time (the rest wait in the kernel's queue), its descriptors stay near 200, it never hits
/// EMFILE, and once the flood is gone it serves a request as usual.
#[test]
fn ten_thousand_connections_at_once_stay_within_max_connections() {
    const FLOOD: usize = 10_000;
    const MAX_CONNECTIONS: usize = 200;
    raise_open_files(FLOOD as u64 + 1024);
    let mut od = Ondemand::start(&format!(
        "[server]\nidle_timeout = \"never\"\nmax_connections = {MAX_CONNECTIONS}\n\
         first_request_timeout = \"3s\"\n\n\
         [[app]]\nname = \"hello\"\npath = \"/\"\n\
         respond = {{ status = 200, body = \"hello\\n\" }}\n"
    ));
    let pid = od.child.pid();
    let baseline = open_fds(pid);
    let started = Instant::now();
    let flood: Vec<_> = (0..FLOOD).map(|_| start_connect(od.port)).collect();
    let bound = baseline + MAX_CONNECTIONS + 16;
    wait_until(
        "the launcher to reach max_connections",
        Duration::from_secs(10),
        || od.log_text().contains("max_connections (200) reached") || open_fds(pid) > bound,
    );
    // Sample the launcher's descriptors while the flood is held.
    let mut most = 0;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(500) {
        most = most.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        od.is_running(),
        "the launcher died under the flood:\n{}",
        od.log_text()
    );
    assert!(
        most <= bound,
        "the launcher had {most} descriptors open (baseline {baseline}, max_connections {MAX_CONNECTIONS})"
    );
    drop(flood);
    let log = od.log_text();
    assert!(
        !log.contains("Too many open files") && !log.contains("accept failed"),
        "accept errors under the flood:\n{log}"
    );
    // The reset connections still queued are accepted and dropped; then a request is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        match crate::support::get(od.port, "a", "/") {
            Ok(r) if r.status == 200 => break r,
            other if Instant::now() > deadline => panic!("no answer after the flood: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(response.text(), "hello\n");
    assert!(od.is_running());
    eprintln!(
        "10k flood: {most} launcher fds at most (baseline {baseline}), served again after {:?}",
        started.elapsed()
    );
}
