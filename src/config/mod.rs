//! Configuration: where the file is, how it is read, and the checked [`Config`] the server runs on.
//!
//! Loading is two-stage: `file.rs` mirrors the TOML with serde (unknown keys are errors), then
//! `validate.rs` checks what serde cannot (unique names, unique routes, valid hosts, paths and
//! headers) and builds the route table. Every error names the file, line and column.
//! `keys.rs` is the reference of every key, from which `ondemand.toml(5)` is generated.

mod file;
pub use file::{CertificateFile, ProxyFile, RespondFile, RunFile, StaticFile, UpstreamFile};
mod control_chars;
pub(crate) mod validate;

/// The reference of every key: what `ondemand.toml(5)` is generated from.
pub mod keys;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::handlers::proxy::Proxy;
use crate::handlers::respond::Respond;
use crate::handlers::run::Run;
use crate::handlers::static_files::StaticFiles;
use crate::routing::{HostPattern, Router};
use crate::tls::Certificates;

pub use validate::validate;

/// Where the config is read from when neither `--config` nor `ONDEMAND_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/ondemand/ondemand.toml";

/// A checked configuration, ready to serve.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub path: PathBuf,
    pub server: ServerSettings,
    pub apps: Vec<Arc<App>>,
    pub router: Router,
    /// The `[[certificate]]` entries for the sockets that speak TLS; their files are read on the
    /// first handshake that needs them.
    pub tls: Certificates,
    /// Set when the file could not be loaded at start under a supervisor: the launcher then
    /// answers every request with 503 (see [`Config::unusable`]) instead of exiting at once.
    pub load_error: Option<String>,
}

impl Config {
    /// A stand-in for a configuration that failed to load when a supervisor started us.
    ///
    /// Exiting at once would leave the triggering connection queued, so the supervisor would start
    /// us again at once: xinetd closes the socket for 10 s after 50 starts a second, systemd fails
    /// the socket at its trigger limit, and clients see resets. Instead the launcher serves 503
    /// with the default settings, exits when idle as usual, and a reload (SIGHUP) with a fixed
    /// file takes effect at once.
    pub fn unusable(path: &Path, error: &ConfigError) -> Config {
        Config {
            path: path.to_path_buf(),
            server: salvage_log_settings(path),
            apps: Vec::new(),
            router: Router::default(),
            tls: Certificates::default(),
            load_error: Some(error.to_string()),
        }
    }
}

/// Default settings, except `log`, `log_level` and the directories taken from the file if it is
/// at least valid TOML and those are valid: the error that made the file unusable should reach
/// the log the administrator configured, and `ondemand status` should find the launcher.
fn salvage_log_settings(path: &Path) -> ServerSettings {
    let mut settings = ServerSettings::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(server) = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("server").cloned())
    else {
        return settings;
    };
    // Re-parse just these two keys through the normal path, so they are checked the same way.
    let mut only = toml::Table::new();
    for key in [
        "log",
        "log_level",
        "state_dir",
        "control_socket",
        "runtime_dir",
    ] {
        if let Some(value) = server.get(key) {
            only.insert(key.to_string(), value.clone());
        }
    }
    let wrapped = toml::Table::from_iter([("server".to_string(), toml::Value::Table(only))]);
    if let Ok(valid) = parse(path, &wrapped.to_string()) {
        settings.log = valid.server.log;
        settings.log_level = valid.server.log_level;
        settings.state_dir = valid.server.state_dir;
        settings.control_socket = valid.server.control_socket;
        settings.runtime_dir = valid.server.runtime_dir;
    }
    settings
}

impl Default for ServerSettings {
    /// The defaults documented in the README's `[server]` table.
    fn default() -> Self {
        ServerSettings {
            idle_timeout: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_header_size: 32 * 1024,
            max_headers: 100,
            threads: Some(1),
            log: LogTarget::Auto,
            log_level: "info".to_string(),
            trusted_proxies: Vec::new(),
            control_socket: default_runtime_dir().join("control.sock"),
            state_dir: default_state_dir(),
            metrics_file: None,
            metrics_interval: Duration::from_secs(10),
            access_log: AccessLog::Off,
            health_path: None,
            proxy_protocol: ProxyProtocol::Off,
            runtime_dir: default_runtime_dir(),
        }
    }
}

/// `[server]` with defaults applied.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Exit after no activity for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// On exit, how long in-flight work may take to finish.
    pub drain_timeout: Duration,
    /// How long a new connection may take to send its first complete request head.
    pub first_request_timeout: Duration,
    /// How long a started request head may take to complete (slowloris bound) → 408.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub keepalive_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's listen queue.
    pub max_connections: usize,
    /// Largest request head in bytes → 431 beyond it.
    pub max_header_size: usize,
    /// Most header fields in one request → 431 beyond it.
    pub max_headers: usize,
    /// Threads serving requests: 1 (the default) starts fastest; more suit a launcher that also
    /// proxies heavy traffic. `None` = one per CPU.
    pub threads: Option<usize>,
    pub log: LogTarget,
    /// A tracing filter such as "info" or "info,ondemand=debug".
    pub log_level: String,
    /// Peers whose X-Forwarded-* and Forwarded fields are kept and appended to.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where the sockets ondemand binds for its apps live.
    pub runtime_dir: PathBuf,
    /// The control socket (`ondemand status` and friends).
    pub control_socket: PathBuf,
    /// Where the counters of earlier activations are kept (state.json).
    pub state_dir: PathBuf,
    /// Prometheus text file written periodically and at exit, if set.
    pub metrics_file: Option<PathBuf>,
    /// How often the state and metrics files are written while running.
    pub metrics_interval: Duration,
    pub access_log: AccessLog,
    /// Answered 200 by the launcher itself, never activity (load balancer probes).
    pub health_path: Option<String>,
    /// Sockets whose connections begin with a PROXY protocol header (from a load balancer).
    pub proxy_protocol: ProxyProtocol,
}

/// `proxy_protocol`: which sockets expect a PROXY protocol header (v1 or v2) on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    /// Every socket (`proxy_protocol = true`).
    All,
    /// The sockets with these names (`FileDescriptorName=`, `--xinetd-socket-name`).
    Sockets(Vec<String>),
}

impl ProxyProtocol {
    /// True when connections on the socket called `name` must begin with a PROXY header.
    pub fn applies_to(&self, name: &str) -> bool {
        match self {
            ProxyProtocol::Off => false,
            ProxyProtocol::All => true,
            ProxyProtocol::Sockets(names) => names.iter().any(|n| n == name),
        }
    }
}

/// `access_log`: one line per request, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// Common Log Format plus app, duration and upstream time.
    Common,
    Json,
}

/// systemd's `StateDirectory=` (in `$STATE_DIRECTORY`), else /var/lib/ondemand.
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/var/lib/ondemand"))
}

/// systemd's `RuntimeDirectory=` (in `$RUNTIME_DIRECTORY`), else /run/ondemand.
fn default_runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/run/ondemand"))
}

impl ServerSettings {
    /// True when `peer` is one of the configured trusted proxies.
    pub fn is_trusted(&self, peer: Option<std::net::IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_proxies.iter().any(|net| net.contains(&ip)))
    }
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// syslog when started by xinetd (stderr is the socket there), stderr otherwise.
    Auto,
    Stderr,
    Syslog,
    File(PathBuf),
}

/// One `[[app]]`.
#[derive(Debug)]
pub struct App {
    /// Shared, not copied, by what outlives the request that routed to it (a response body).
    pub name: Arc<str>,
    /// Free-form labels to pick apps by in `ondemand status`/`start`/`stop`.
    pub tags: Vec<String>,
    /// The app's counters, attached when the server takes the config.
    pub stats: std::sync::OnceLock<Arc<crate::metrics::AppStats>>,
    /// Empty: the app answers for any host (within the no-host group).
    pub hosts: Vec<HostPattern>,
    /// Normalized path prefix, without trailing slash (except "/").
    pub path: String,
    pub handler: Handler,
    /// `https_redirect`: plain-HTTP requests are redirected to HTTPS on this port.
    pub https_redirect: Option<u16>,
}

/// What answers an app's requests: exactly one per app.
#[derive(Debug)]
pub enum Handler {
    Respond(Respond),
    Static(StaticFiles),
    Proxy(Proxy),
    Run(Run),
    Versions(crate::handlers::versions::Versions),
}

impl Handler {
    /// The handler's kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Handler::Respond(_) => "respond",
            Handler::Static(_) => "static",
            Handler::Proxy(_) => "proxy",
            Handler::Run(_) => "run",
            Handler::Versions(_) => "versions",
        }
    }
}

impl App {
    /// The app's on-demand processes: its `run` handler, or those of its versions, each with the
    /// name its runner logs under (`app` or `app@version`).
    pub fn runs(&self) -> Vec<(String, &Run)> {
        match &self.handler {
            Handler::Run(run) => vec![(self.name.to_string(), run)],
            Handler::Versions(versions) => versions
                .list
                .iter()
                .filter_map(|v| match &v.handler {
                    Handler::Run(run) => Some((format!("{}@{}", self.name, v.name), run)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A configuration that could not be loaded. Display gives `file:line:column: message`.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(
                f,
                "cannot read the configuration {}: {source} (choose another file with --config or ONDEMAND_CONFIG)",
                path.display()
            ),
            ConfigError::Invalid { path, line, column, message } => {
                write!(f, "{}:{line}:{column}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A message tied to a byte range of the source; turned into a [`ConfigError`] with line/column.
#[derive(Debug)]
pub struct Located {
    pub span: std::ops::Range<usize>,
    pub message: String,
}

impl Located {
    pub fn new(span: std::ops::Range<usize>, message: impl Into<String>) -> Self {
        Located {
            span,
            message: message.into(),
        }
    }

    fn into_error(self, path: &Path, source: &str) -> ConfigError {
        let (line, column) = line_column(source, self.span.start);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: self.message,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The config path: `--config`, else `ONDEMAND_CONFIG` (clap reads both), else the default.
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| PathBuf::from(DEFAULT_PATH), Path::to_path_buf)
}

/// Reads and checks the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &source)
}

/// Reads and checks the configuration at `path` as `ondemand check` does: like [`load`], and
/// also reads every certificate and key file and checks them (parse, key match, validity dates,
/// host names), which `serve` leaves to the first TLS handshake that needs each one.
pub fn load_and_check_files(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = parse(path, &source)?;
    config
        .tls
        .check(std::time::SystemTime::now())
        .map_err(|e| e.into_error(path, &source))?;
    Ok(config)
}

/// Parses and checks `source` as if read from `path`.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    let toml_error = |e: toml::de::Error| {
        Located::new(e.span().unwrap_or(0..0), e.message().trim_end().to_string())
            .into_error(path, source)
    };
    // One parse serves both the line-break check and deserialization. The check walks the table
    // before deserialization consumes it, and its finding is reported after the others.
    let table = toml::de::DeTable::parse(source).map_err(toml_error)?;
    let line_breaks = control_chars::check(source, table.get_ref());
    let file =
        <file::FileConfig as serde::Deserialize>::deserialize(toml::de::Deserializer::from(table))
            .map_err(toml_error)?;
    let config = validate(path, file).map_err(|e| e.into_error(path, source))?;
    line_breaks.map_err(|e| e.into_error(path, source))?;
    Ok(config)
}

#[cfg(test)]
mod tests;
