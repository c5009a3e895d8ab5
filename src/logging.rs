//! Where log lines go, per mode: the journal under systemd (natively, one journal field per event
//! field: see [`journald`]), syslog under xinetd (where fds 0-2 are the socket), stderr in a
//! terminal, or a file named in the config. The level filter comes from `log_level` (overridden by
//! `ONDEMAND_LOG`) and is swapped on reload.

pub mod journald;

use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use anyhow::{Context, Result};
use nix::syslog::{Facility, LogFlags, Severity};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogTarget;
use crate::listen::Origin;

/// Environment variable that overrides `log_level` (same syntax).
pub const LOG_ENV: &str = "ONDEMAND_LOG";

/// Lets a reload change the level filter.
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    /// Applies a new `log_level` (ignored while `ONDEMAND_LOG` is set).
    pub fn set_level(&self, level: &str) {
        if std::env::var_os(LOG_ENV).is_some() {
            return;
        }
        if let Ok(filter) = EnvFilter::builder().parse(scoped(level)) {
            let _ = self.0.reload(filter);
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    let directives = std::env::var(LOG_ENV).unwrap_or_else(|_| level.to_string());
    EnvFilter::builder().parse_lossy(scoped(&directives))
}

/// A bare level ("debug") means ondemand's own messages at that level; the libraries below it
/// (hyper, h2) stay at warn unless named explicitly ("debug,h2=trace").
///
/// The access log (target `ondemand::access`) is let through at info whatever the level, unless
/// named explicitly: whether it is written is decided by `access_log`, not by `log_level`.
fn scoped(directives: &str) -> String {
    let mut all: Vec<String> = directives
        .split(',')
        .map(|d| {
            let d = d.trim();
            if d.parse::<tracing_subscriber::filter::LevelFilter>().is_ok() {
                format!("warn,ondemand={d}")
            } else {
                d.to_string()
            }
        })
        .collect();
    if !directives.contains(crate::access::TARGET) {
        all.push(format!("{}=info", crate::access::TARGET));
    }
    all.join(",")
}

/// Installs the global subscriber. A log file that cannot be opened is reported and syslog (under
/// xinetd) or stderr is used instead, so messages are never lost silently.
pub fn init(target: &LogTarget, level: &str, origin: Origin) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(level));
    let registry = tracing_subscriber::registry().with(filter);
    let fallback = if origin == Origin::Xinetd {
        LogTarget::Syslog
    } else {
        LogTarget::Stderr
    };
    let target = match target {
        LogTarget::Auto => fallback.clone(),
        other => other.clone(),
    };
    let mut file_error = None;
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    match target {
        LogTarget::File(ref path) => match open_log_file(path) {
            Ok(file) => registry
                .with(
                    fmt.with_ansi(false)
                        // LogFile reports its own write errors, once, not once per line.
                        .log_internal_errors(false)
                        .with_writer(Mutex::new(LogFile {
                            file,
                            path: path.clone(),
                            report_to: fallback.clone(),
                            lost: None,
                        })),
                )
                .init(),
            Err(e) => {
                file_error = Some(format!("{e:#}"));
                init_without_file(registry, &fallback);
            }
        },
        ref t => init_without_file(registry, t),
    }
    if let Some(e) = file_error {
        tracing::error!(
            "{e}; logging to {} instead",
            if fallback == LogTarget::Syslog {
                "syslog"
            } else {
                "stderr"
            }
        );
    }
    LogHandle(handle)
}

fn init_without_file<S>(registry: S, target: &LogTarget)
where
    S: tracing::Subscriber
        + for<'a> tracing_subscriber::registry::LookupSpan<'a>
        + Send
        + Sync
        + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    if *target == LogTarget::Syslog {
        let _ = nix::syslog::openlog(Some(c"ondemand"), LogFlags::LOG_PID, Facility::LOG_DAEMON);
        registry
            .with(fmt.without_time().with_ansi(false).with_writer(Syslog))
            .init();
    } else if let Some(journal) = journald::JournalLayer::for_journal_stderr() {
        registry.with(journal).init();
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        // The journal adds its own timestamps.
        registry
            .with(fmt.without_time().with_ansi(false).with_writer(io::stderr))
            .init();
    } else {
        registry
            .with(
                fmt.with_ansi(io::stderr().is_terminal())
                    .with_writer(io::stderr),
            )
            .init();
    }
}

fn open_log_file(path: &std::path::Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

/// The log file. When a write fails (a full disk, a quota, an I/O error) the line is lost, and the
/// failure is reported once on `report_to` (stderr: the journal under systemd; syslog under
/// xinetd) instead of once per line; when writing works again, that is reported there and in the
/// file, with the number of lines lost. Serving goes on either way: a log is never a reason to
/// stop answering.
struct LogFile {
    file: std::fs::File,
    path: std::path::PathBuf,
    report_to: LogTarget,
    /// While writes fail: how many lines were lost so far.
    lost: Option<u64>,
}

impl LogFile {
    fn report(&self, message: &str) {
        if self.report_to == LogTarget::Syslog {
            let _ =
                nix::syslog::openlog(Some(c"ondemand"), LogFlags::LOG_PID, Facility::LOG_DAEMON);
            let _ = nix::syslog::syslog(Severity::LOG_ERR, message);
        } else {
            let _ = writeln!(io::stderr(), "ondemand: {message}");
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.file.write_all(data) {
            Ok(()) => {
                if let Some(lost) = self.lost.take() {
                    let message = format!(
                        "the log file {} can be written again; {lost} log line(s) were lost",
                        self.path.display()
                    );
                    self.report(&message);
                    let _ = writeln!(self.file, "ondemand: {message}");
                }
            }
            Err(e) => match &mut self.lost {
                Some(lost) => *lost += 1,
                None => {
                    self.lost = Some(1);
                    self.report(&format!(
                        "cannot write to the log file {}: {e}; serving goes on, and log lines \
                         are lost until it can be written again (free space, or set [server] \
                         log to another file)",
                        self.path.display()
                    ));
                }
            },
        }
        // Never an error: the formatter would report it again for every line.
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends each formatted event to syslog(3) at the severity of its level.
struct Syslog;

/// One event's text, sent to syslog when the formatter is done with it.
struct SyslogLine {
    severity: Severity,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end().replace('\0', "\\0");
        if !text.is_empty() {
            let _ = nix::syslog::syslog(self.severity, text.as_str());
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;
    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            severity: Severity::LOG_INFO,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        let severity = match *meta.level() {
            Level::ERROR => Severity::LOG_ERR,
            Level::WARN => Severity::LOG_WARNING,
            Level::INFO => Severity::LOG_INFO,
            Level::DEBUG | Level::TRACE => Severity::LOG_DEBUG,
        };
        SyslogLine {
            severity,
            buf: Vec::new(),
        }
    }
}
