//! `[app.run]`: how an on-demand app is started, checked once when the config is loaded.
//!
//! Nothing here touches the system: users are looked up, sockets bound and processes started
//! only when the app gets its first request (start-up cost is paid per activation, so it is kept
//! to what every request needs).

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::process::{IoPriority, Limits as ProcessLimits};
use crate::config::{Located, RunFile};
use crate::proxy::Limits;

/// How the app gets its listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenMode {
    /// ondemand binds a unix socket and hands it over as fd 3 (systemd socket activation).
    Socket,
    /// ondemand picks a free loopback port: `PORT=<n>` and `{port}` in the command.
    Port,
}

/// When a started app counts as ready for requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// At once: the socket already listens (socket mode), the kernel queues connections.
    Listen,
    /// Once its port or socket accepts a connection.
    Connect,
    /// Once `GET <path>` answers 2xx.
    Http(String),
    /// Once it sends `READY=1` to the `NOTIFY_SOCKET` it is given.
    Notify,
}

/// A checked `[app.run]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub command: Vec<String>,
    pub listen: ListenMode,
    pub ready: ReadyCheck,
    pub start_timeout: Duration,
    pub idle_timeout: Duration,
    pub stop_timeout: Duration,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub nice: Option<i32>,
    pub io_priority: Option<IoPriority>,
    pub process_limits: ProcessLimits,
    /// Requests inside the app at once (the bulkhead).
    pub max_concurrency: usize,
    /// Requests waiting for a place beyond that; more get 503 at once.
    pub max_queue: usize,
    /// How long a request may wait for a place → 503.
    pub queue_timeout: Duration,
    /// Request timeout and body limit, as for `proxy`.
    pub limits: Limits,
    pub strip_prefix: bool,
    pub instances: usize,
}

pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
pub const DEFAULT_MAX_QUEUE: usize = 128;
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

impl RunSpec {
    /// Checks `[app.run]` of app `app`.
    pub fn from_config(app: &str, file: Spanned<RunFile>) -> Result<RunSpec, Located> {
        let span = file.span();
        let file = file.into_inner();
        let err = |span: std::ops::Range<usize>, why: String| {
            Located::new(span, format!("app {app:?}: run: {why}"))
        };
        let command = file.command.get_ref().clone();
        if command.is_empty() || command[0].is_empty() {
            return Err(err(
                file.command.span(),
                "command is empty: give the program and its arguments, like [\"/usr/bin/app\", \"--fd\", \"3\"]".into(),
            ));
        }
        let listen = match file.listen.as_ref().map(|l| l.get_ref().as_str()) {
            None | Some("socket") => ListenMode::Socket,
            Some("port") => ListenMode::Port,
            Some(other) => {
                return Err(err(
                    file.listen.as_ref().map_or(span.clone(), Spanned::span),
                    format!("listen = {other:?}: use \"socket\" or \"port\""),
                ))
            }
        };
        if listen == ListenMode::Socket && command.iter().any(|a| a.contains("{port}")) {
            return Err(err(
                file.command.span(),
                "{port} in command is replaced only with listen = \"port\"".into(),
            ));
        }
        let ready = ready_check(file.ready.as_ref(), listen)
            .map_err(|why| err(file.ready.as_ref().map_or(span.clone(), Spanned::span), why))?;
        for (key, value) in &file.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.get_ref().contains('\0') {
                return Err(err(
                    value.span(),
                    format!("env {key:?}: names cannot be empty or contain '=' or NUL, values cannot contain NUL"),
                ));
            }
        }
        if let Some(nice) = &file.nice {
            if !(-20..=19).contains(nice.get_ref()) {
                return Err(err(nice.span(), "nice must be between -20 and 19".into()));
            }
        }
        let io_priority = match &file.io_priority {
            None => None,
            Some(p) => Some(io_priority(p.get_ref()).map_err(|why| err(p.span(), why))?),
        };
        let instances = bounded(file.instances.as_ref(), 1, 1, 64, "instances", &err)?;
        let working_dir = match &file.working_dir {
            Some(dir) if !dir.get_ref().starts_with('/') => {
                return Err(err(
                    dir.span(),
                    "working_dir must be an absolute path".into(),
                ))
            }
            dir => dir.as_ref().map(|d| PathBuf::from(d.get_ref())),
        };
        Ok(RunSpec {
            command,
            listen,
            ready,
            start_timeout: file.start_timeout.map_or(DEFAULT_START_TIMEOUT, |d| d.0),
            idle_timeout: file.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
            stop_timeout: file.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0),
            user: file.user.map(Spanned::into_inner),
            group: file.group.map(Spanned::into_inner),
            working_dir,
            env: file
                .env
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect(),
            nice: file.nice.map(Spanned::into_inner),
            io_priority,
            process_limits: ProcessLimits {
                memory: file.memory_limit.map(|b| b.0),
                open_files: file.open_files_limit,
            },
            max_concurrency: bounded(
                file.max_concurrency.as_ref(),
                DEFAULT_MAX_CONCURRENCY,
                1,
                1 << 20,
                "max_concurrency",
                &err,
            )?,
            max_queue: bounded(
                file.max_queue.as_ref(),
                DEFAULT_MAX_QUEUE,
                0,
                1 << 20,
                "max_queue",
                &err,
            )?,
            queue_timeout: file.queue_timeout.map_or(DEFAULT_QUEUE_TIMEOUT, |d| d.0),
            limits: Limits {
                timeout: file
                    .timeout
                    .map_or(crate::handlers::proxy::DEFAULT_TIMEOUT, |d| d.0),
                max_body: file.max_body.map(|b| b.0),
            },
            strip_prefix: file.strip_prefix.unwrap_or(false),
            instances,
        })
    }
}

fn bounded(
    value: Option<&Spanned<usize>>,
    default: usize,
    min: usize,
    max: usize,
    key: &str,
    err: &impl Fn(std::ops::Range<usize>, String) -> Located,
) -> Result<usize, Located> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(err(
            v.span(),
            format!("{key} must be between {min} and {max}"),
        )),
    }
}

fn ready_check(value: Option<&Spanned<String>>, listen: ListenMode) -> Result<ReadyCheck, String> {
    let Some(value) = value else {
        return Ok(match listen {
            ListenMode::Socket => ReadyCheck::Listen,
            ListenMode::Port => ReadyCheck::Connect,
        });
    };
    match value.get_ref().as_str() {
        "listen" if listen == ListenMode::Port => Err(
            "ready = \"listen\" needs listen = \"socket\" (ondemand must own the socket); use \"connect\", \"http:/path\" or \"notify\"".into(),
        ),
        "listen" => Ok(ReadyCheck::Listen),
        "connect" => Ok(ReadyCheck::Connect),
        "notify" => Ok(ReadyCheck::Notify),
        other => match other.strip_prefix("http:") {
            Some(path) if path.starts_with('/') && http::uri::PathAndQuery::try_from(path).is_ok() => {
                Ok(ReadyCheck::Http(path.to_string()))
            }
            _ => Err(format!(
                "ready = {other:?}: use \"listen\", \"connect\", \"http:/healthz\" (a path) or \"notify\""
            )),
        },
    }
}

/// `"idle"`, `"best-effort"`, `"best-effort:N"` or `"realtime:N"` (N from 0, highest, to 7).
fn io_priority(text: &str) -> Result<IoPriority, String> {
    let (class, level) = match text.split_once(':') {
        Some((c, l)) => (c, Some(l)),
        None => (text, None),
    };
    let level = match level.map(str::parse::<u8>) {
        None => 4,
        Some(Ok(l)) if l <= 7 => l,
        Some(_) => {
            return Err(format!(
                "io_priority {text:?}: the level is 0 (highest) to 7"
            ))
        }
    };
    match class {
        "idle" if level == 4 => Ok(IoPriority::Idle),
        "best-effort" => Ok(IoPriority::BestEffort(level)),
        "realtime" => Ok(IoPriority::Realtime(level)),
        _ => Err(format!(
            "io_priority {text:?}: use \"idle\", \"best-effort\", \"best-effort:N\" or \"realtime:N\" (N 0-7)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_priorities() {
        assert_eq!(io_priority("idle"), Ok(IoPriority::Idle));
        assert_eq!(io_priority("best-effort"), Ok(IoPriority::BestEffort(4)));
        assert_eq!(io_priority("realtime:0"), Ok(IoPriority::Realtime(0)));
        assert!(io_priority("best-effort:8").is_err());
        assert!(io_priority("fast").is_err());
    }
}
