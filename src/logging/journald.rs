//! Logging straight to the journal under systemd, in its native protocol: each event is one
//! datagram to `/run/systemd/journal/socket` holding
//! - `MESSAGE`: the same text the stderr log would show (the message, then `key=value` fields),
//!   so `journalctl -u ondemand` reads as before;
//! - `PRIORITY` from the level, `SYSLOG_IDENTIFIER=ondemand`, `TARGET` (the tracing target);
//! - one journal field per event field: `app` → `APP=`, `status` → `STATUS=`, `duration_ms` →
//!   `DURATION_MS=` — so `journalctl -u ondemand APP=shop` or `-o json` select and read them.
//!
//! Used only when stderr *is* the journal (`JOURNAL_STREAM` names stderr's device and inode, as
//! systemd sets it), so a program started from a unit but redirected elsewhere keeps plain text.
//! A datagram that cannot be sent (journald restarting) is written to stderr instead: no message
//! is lost silently.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Field values longer than this are cut, so one datagram stays well under the socket's send
/// buffer (journald also accepts a memfd for larger entries; log lines never need one).
const MAX_VALUE: usize = 16 * 1024;

/// The journal fields journald or this layer set themselves: an event field of the same name is
/// sent as `F_NAME` instead, so it can neither spoof nor clobber them.
const RESERVED: &[&str] = &[
    "MESSAGE",
    "MESSAGE_ID",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_FACILITY",
    "SYSLOG_PID",
    "TARGET",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_FUNC",
    "ERRNO",
];

/// A [`Layer`] that sends every event to the journal.
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
    identifier: String,
}

impl JournalLayer {
    /// A layer sending to `path` (the journal's socket, or a test's).
    pub fn new(path: impl Into<PathBuf>, identifier: &str) -> io::Result<JournalLayer> {
        Ok(JournalLayer {
            socket: UnixDatagram::unbound()?,
            path: path.into(),
            identifier: identifier.to_string(),
        })
    }

    /// The layer for a process whose stderr is the journal (see the module docs); `None` when it
    /// is not, or the journal's socket is missing.
    pub fn for_journal_stderr() -> Option<JournalLayer> {
        if !stderr_is_journal() || !std::path::Path::new(SOCKET).exists() {
            return None;
        }
        JournalLayer::new(SOCKET, "ondemand").ok()
    }

    /// The datagram for one event.
    fn entry(&self, event: &Event<'_>) -> Vec<u8> {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut message = fields.message;
        for (name, value) in &fields.text {
            let _ = write!(message, " {name}={value}");
        }
        let mut out = Vec::with_capacity(256);
        put(&mut out, "MESSAGE", &message);
        put(&mut out, "PRIORITY", priority(meta.level()));
        put(&mut out, "SYSLOG_IDENTIFIER", &self.identifier);
        put(&mut out, "TARGET", meta.target());
        for (name, value) in &fields.journal {
            put(&mut out, name, value);
        }
        out
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let entry = self.entry(event);
        if self.socket.send_to(&entry, &self.path).is_err() {
            // Not eprintln!: a closed stderr must not turn logging into a panic.
            let text = String::from_utf8_lossy(&entry);
            let message = text
                .lines()
                .find_map(|l| l.strip_prefix("MESSAGE="))
                .unwrap_or("(unprintable log message)");
            let _ = writeln!(io::stderr(), "{message}");
        }
    }
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM=DEVICE:INODE` matches fd 2.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// syslog priorities, as journald expects them.
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        Level::DEBUG | Level::TRACE => "7",
    }
}

/// A tracing field name as a journal field name: upper case, `[A-Z0-9_]`, not starting with `_`
/// (those are journald's trusted fields) or a digit, and not one of [`RESERVED`].
fn journal_name(field: &str) -> String {
    let mut name: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = name.trim_start_matches('_');
    if trimmed.len() != name.len() {
        name = trimmed.to_string();
    }
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || RESERVED.contains(&name.as_str())
    {
        name = format!("F_{name}");
    }
    name.truncate(64);
    name
}

/// Appends one field in the native protocol: `NAME=value\n`, or for a value with a newline,
/// `NAME\n`, its length as 64-bit little endian, the value and `\n`.
fn put(out: &mut Vec<u8>, name: &str, value: &str) {
    let value = cut(value);
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

fn cut(value: &str) -> &str {
    if value.len() <= MAX_VALUE {
        return value;
    }
    let mut end = MAX_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// An event's fields: the message, the rest as the stderr log shows them (`text`), and the same
/// as journal fields (`journal`).
#[derive(Default)]
struct Fields {
    message: String,
    text: Vec<(&'static str, String)>,
    journal: Vec<(String, String)>,
}

impl Fields {
    fn add(&mut self, field: &Field, text: String, raw: String) {
        self.text.push((field.name(), text));
        self.journal.push((journal_name(field.name()), raw));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.add(field, format!("{value:?}"), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.add(field, text.clone(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Parses datagrams in the native protocol (both field forms).
    fn parse(mut data: &[u8]) -> BTreeMap<String, String> {
        let mut fields = BTreeMap::new();
        while !data.is_empty() {
            let line_end = data.iter().position(|&b| b == b'\n').unwrap();
            let line = std::str::from_utf8(&data[..line_end]).unwrap();
            data = &data[line_end + 1..];
            if let Some((name, value)) = line.split_once('=') {
                fields.insert(name.to_string(), value.to_string());
            } else {
                let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
                let value = std::str::from_utf8(&data[8..8 + len]).unwrap();
                assert_eq!(data[8 + len], b'\n');
                fields.insert(line.to_string(), value.to_string());
                data = &data[8 + len + 1..];
            }
        }
        fields
    }

    /// Logs with `log` through a layer whose journal is a socket of this test; returns the
    /// datagrams it received.
    fn capture(log: impl FnOnce()) -> Vec<BTreeMap<String, String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let journal = UnixDatagram::bind(&path).unwrap();
        journal.set_nonblocking(true).unwrap();
        let layer = JournalLayer::new(&path, "ondemand").unwrap();
        let subscriber = Arc::new(tracing_subscriber::registry().with(layer));
        tracing::subscriber::with_default(subscriber, log);
        let mut all = Vec::new();
        let mut buf = vec![0; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            all.push(parse(&buf[..n]));
        }
        all
    }

    #[test]
    fn event_fields_become_journal_fields_and_the_message_reads_as_on_stderr() {
        let entries = capture(|| {
            tracing::info!(
                app = "shop",
                status = 200u16,
                duration_ms = 1.5,
                "request done"
            );
        });
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e["APP"], "shop");
        assert_eq!(e["STATUS"], "200");
        assert_eq!(e["DURATION_MS"], "1.5");
        assert_eq!(e["PRIORITY"], "6");
        assert_eq!(e["SYSLOG_IDENTIFIER"], "ondemand");
        assert_eq!(
            e["MESSAGE"],
            "request done app=\"shop\" status=200 duration_ms=1.5"
        );
        assert!(e["TARGET"].starts_with("ondemand"), "{e:?}");
    }

    #[test]
    fn multi_line_values_levels_and_reserved_names() {
        let entries = capture(|| {
            tracing::warn!(priority = 1, "two\nlines");
            tracing::debug!(name = %"x", "d");
        });
        assert_eq!(entries[0]["MESSAGE"], "two\nlines priority=1");
        assert_eq!(entries[0]["PRIORITY"], "4");
        assert_eq!(entries[0]["F_PRIORITY"], "1", "cannot clobber PRIORITY");
        assert_eq!(entries[1]["PRIORITY"], "7");
        assert_eq!(entries[1]["NAME"], "x", "Display values unquoted");
    }

    #[test]
    fn journal_names() {
        assert_eq!(journal_name("app"), "APP");
        assert_eq!(journal_name("bytes.up"), "BYTES_UP");
        assert_eq!(journal_name("_pid"), "PID");
        assert_eq!(journal_name("2xx"), "F_2XX");
        assert_eq!(journal_name("message_id"), "F_MESSAGE_ID");
    }
}
