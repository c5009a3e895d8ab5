//! From the serde mirror to a checked [`Config`]: defaults applied, names and routes unique, host
//! patterns and path prefixes valid, handler settings built. Errors carry the span of the value
//! they are about.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{AppFile, FileConfig, HttpsRedirect, IdleTimeout, ProxyProtocolFile, ServerFile};
use super::{AccessLog, App, Config, Handler, Located, LogTarget, ProxyProtocol, ServerSettings};
use crate::handlers::proxy::Proxy;
use crate::handlers::respond::Respond;
use crate::handlers::run::Run;
use crate::handlers::static_files::StaticFiles;
use crate::routing::{path, HostPattern, Router};
use crate::tls::Certificates;

/// Checks `file` (read from `path`) and builds the [`Config`].
pub fn validate(path: &Path, file: FileConfig) -> Result<Config, Located> {
    let server = server_settings(file.server)?;
    let mut apps = Vec::with_capacity(file.apps.len());
    let mut router = Router::default();
    let mut names: HashMap<String, usize> = HashMap::new();
    for spanned in file.apps {
        let span = spanned.span();
        let app = app(
            spanned.into_inner(),
            span.clone(),
            &server.runtime_dir,
            &mut names,
            apps.len(),
        )?;
        add_routes(&mut router, &app, &apps, span)?;
        apps.push(Arc::new(app));
    }
    let tls = Certificates::from_config(file.certificates, &apps)?;
    Ok(Config {
        path: path.to_path_buf(),
        server,
        apps,
        router,
        tls,
        load_error: None,
    })
}

fn server_settings(s: ServerFile) -> Result<ServerSettings, Located> {
    let d = ServerSettings::default();
    let duration =
        |v: Option<super::file::HumanDuration>, default: Duration| v.map_or(default, |v| v.0);
    let max_header_size = match s.max_header_size {
        Some(size) if size.get_ref().0 < 8192 => {
            return Err(Located::new(
                size.span(),
                "max_header_size must be at least 8KiB (8192 bytes)",
            ))
        }
        Some(size) => usize::try_from(size.get_ref().0).unwrap_or(usize::MAX),
        None => d.max_header_size,
    };
    Ok(ServerSettings {
        idle_timeout: match s.idle_timeout {
            None => d.idle_timeout,
            Some(IdleTimeout::After(t)) => Some(t),
            Some(IdleTimeout::Never) => None,
        },
        drain_timeout: duration(s.drain_timeout, d.drain_timeout),
        first_request_timeout: duration(s.first_request_timeout, d.first_request_timeout),
        header_read_timeout: duration(s.header_read_timeout, d.header_read_timeout),
        keepalive_timeout: duration(s.keepalive_timeout, d.keepalive_timeout),
        max_connections: positive(s.max_connections, "max_connections", d.max_connections)?,
        max_header_size,
        max_headers: positive(s.max_headers, "max_headers", d.max_headers)?,
        threads: match s.threads.map(Spanned::into_inner) {
            None => d.threads,
            Some(super::file::Threads::Auto) => None,
            Some(super::file::Threads::Count(n)) => {
                Some(usize::try_from(n).unwrap_or(usize::MAX).min(1024))
            }
        },
        log: s.log.map(log_target).transpose()?.unwrap_or(d.log),
        log_level: match s.log_level {
            Some(level) => log_level(level)?,
            None => d.log_level,
        },
        trusted_proxies: match s.trusted_proxies {
            Some(list) => trusted_proxies(list)?,
            None => d.trusted_proxies,
        },
        control_socket: match s.control_socket {
            Some(p) => absolute(p, "control_socket")?,
            None => match &s.runtime_dir {
                Some(dir) => PathBuf::from(dir.get_ref()).join("control.sock"),
                None => d.control_socket,
            },
        },
        state_dir: match s.state_dir {
            Some(p) => absolute(p, "state_dir")?,
            None => d.state_dir,
        },
        metrics_file: s
            .metrics_file
            .map(|p| absolute(p, "metrics_file"))
            .transpose()?,
        metrics_interval: match s.metrics_interval {
            Some(t) if t.0 >= Duration::from_secs(1) => t.0,
            Some(_) => d.metrics_interval.max(Duration::from_secs(1)),
            None => d.metrics_interval,
        },
        access_log: match s.access_log {
            None => d.access_log,
            Some(v) => match v.get_ref().as_str() {
                "off" => AccessLog::Off,
                "common" => AccessLog::Common,
                "json" => AccessLog::Json,
                other => {
                    return Err(Located::new(
                        v.span(),
                        format!("access_log = {other:?}: use \"off\", \"common\" or \"json\""),
                    ))
                }
            },
        },
        health_path: match s.health_path {
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#']) => {
                Some(p.into_inner())
            }
            Some(p) => {
                return Err(Located::new(
                    p.span(),
                    "health_path must be a path starting with / (like \"/healthz\"), without query",
                ))
            }
            None => None,
        },
        runtime_dir: match s.runtime_dir {
            Some(dir) if dir.get_ref().starts_with('/') => PathBuf::from(dir.into_inner()),
            Some(dir) => {
                return Err(Located::new(
                    dir.span(),
                    "runtime_dir must be an absolute path (like \"/run/ondemand\")",
                ))
            }
            None => d.runtime_dir,
        },
        proxy_protocol: match s.proxy_protocol {
            Some(v) => proxy_protocol(v)?,
            None => d.proxy_protocol,
        },
    })
}

/// `proxy_protocol = true | false | ["socket", ...]`.
fn proxy_protocol(v: Spanned<ProxyProtocolFile>) -> Result<ProxyProtocol, Located> {
    let span = v.span();
    Ok(match v.into_inner() {
        ProxyProtocolFile::All(true) => ProxyProtocol::All,
        ProxyProtocolFile::All(false) => ProxyProtocol::Off,
        ProxyProtocolFile::Sockets(names) if names.is_empty() => ProxyProtocol::Off,
        ProxyProtocolFile::Sockets(names) => {
            if let Some(bad) = names.iter().find(|n| !valid_socket_name(n)) {
                return Err(Located::new(
                    span,
                    format!(
                        "proxy_protocol: {bad:?} is not a socket name; use the names the sockets \
                         are given (systemd's FileDescriptorName=, xinetd's \
                         --xinetd-socket-name), like \"http\" or \"https\""
                    ),
                ));
            }
            ProxyProtocol::Sockets(names)
        }
    })
}

/// systemd allows up to 255 printable ASCII characters other than ':' in FileDescriptorName=.
fn valid_socket_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn positive(value: Option<Spanned<usize>>, key: &str, default: usize) -> Result<usize, Located> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => {
            Err(Located::new(v.span(), format!("{key} must be at least 1")))
        }
        Some(v) => Ok(v.into_inner()),
    }
}

fn log_target(value: Spanned<String>) -> Result<LogTarget, Located> {
    match value.get_ref().as_str() {
        "auto" => Ok(LogTarget::Auto),
        "stderr" => Ok(LogTarget::Stderr),
        "syslog" => Ok(LogTarget::Syslog),
        p if p.starts_with('/') => Ok(LogTarget::File(PathBuf::from(p))),
        other => Err(Located::new(
            value.span(),
            format!(
                "log = {other:?}: use \"auto\", \"stderr\", \"syslog\" or an absolute file path"
            ),
        )),
    }
}

fn log_level(value: Spanned<String>) -> Result<String, Located> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value.get_ref())
        .map_err(|e| {
            Located::new(
                value.span(),
                format!(
                    "log_level {:?}: {e} (examples: \"info\", \"debug\", \"info,ondemand=debug\")",
                    value.get_ref()
                ),
            )
        })?;
    Ok(value.into_inner())
}

fn absolute(value: Spanned<String>, key: &str) -> Result<PathBuf, Located> {
    if value.get_ref().starts_with('/') {
        Ok(PathBuf::from(value.into_inner()))
    } else {
        Err(Located::new(
            value.span(),
            format!("{key} must be an absolute path"),
        ))
    }
}

/// `trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]`: addresses or CIDR networks.
fn trusted_proxies(list: Spanned<Vec<String>>) -> Result<Vec<ipnet::IpNet>, Located> {
    list.get_ref()
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    Located::new(
                        list.span(),
                        format!(
                            "trusted_proxies: {text:?} is not an IP address or network \
                             (write it like \"192.0.2.10\" or \"10.0.0.0/8\")"
                        ),
                    )
                })
        })
        .collect()
}

fn app(
    file: AppFile,
    span: std::ops::Range<usize>,
    runtime_dir: &Path,
    names: &mut HashMap<String, usize>,
    index: usize,
) -> Result<App, Located> {
    let name = app_name(&file.name, names, index)?;
    let hosts = match &file.host {
        None => Vec::new(),
        Some(hosts) => hosts
            .get_ref()
            .0
            .iter()
            .map(|h| {
                HostPattern::parse(h)
                    .map_err(|e| Located::new(hosts.span(), format!("app {name:?}: {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    if file.host.as_ref().is_some_and(|h| h.get_ref().0.is_empty()) {
        let h = file.host.as_ref().map(|h| h.span()).unwrap_or(span.clone());
        return Err(Located::new(
            h,
            format!("app {name:?}: host = [] matches nothing; omit `host` to match every host"),
        ));
    }
    let path = match &file.path {
        None => "/".to_string(),
        Some(p) => {
            path_prefix(p).map_err(|e| Located::new(p.span(), format!("app {name:?}: {e}")))?
        }
    };
    let tags = file.tags.clone();
    let https_redirect = match file.https_redirect.as_ref().map(|r| *r.get_ref()) {
        Some(HttpsRedirect::Port(port)) => Some(port),
        Some(HttpsRedirect::Off) | None => None,
    };
    let handler = handler(&name, &path, file, span, runtime_dir)?;
    Ok(App {
        name: name.into(),
        tags,
        stats: std::sync::OnceLock::new(),
        hosts,
        path,
        handler,
        https_redirect,
    })
}

fn app_name(
    name: &Spanned<String>,
    names: &mut HashMap<String, usize>,
    index: usize,
) -> Result<String, Located> {
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Located::new(
            name.span(),
            format!("app name {text:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
        ));
    }
    if let Some(first) = names.insert(text.clone(), index) {
        return Err(Located::new(
            name.span(),
            format!(
                "app name {text:?} is already used by app #{} (names must be unique)",
                first + 1
            ),
        ));
    }
    Ok(text.clone())
}

/// A config path prefix: normalized, no query, no trailing slash except for "/".
fn path_prefix(p: &Spanned<String>) -> Result<String, String> {
    path_prefix_of(p.get_ref())
}

/// [`path_prefix`] of the text itself.
pub(crate) fn path_prefix_of(raw: &str) -> Result<String, String> {
    if raw.contains(['?', '#']) {
        return Err(format!(
            "path {raw:?}: a path prefix cannot contain '?' or '#'"
        ));
    }
    let normalized = path::normalize(raw).map_err(|e| format!("path {raw:?}: {e}"))?;
    let trimmed = normalized.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// The handler fields of an `[[app]]` or an `[[app.version]]`.
struct HandlerFiles {
    respond: Option<Spanned<super::RespondFile>>,
    static_files: Option<Spanned<super::StaticFile>>,
    proxy: Option<Spanned<super::ProxyFile>>,
    run: Option<Spanned<super::RunFile>>,
}

fn handler(
    name: &str,
    prefix: &str,
    file: AppFile,
    span: std::ops::Range<usize>,
    runtime_dir: &Path,
) -> Result<Handler, Located> {
    let files = HandlerFiles {
        respond: file.respond,
        static_files: file.static_files,
        proxy: file.proxy,
        run: file.run,
    };
    if file.versions.is_empty() {
        return one_handler(name, prefix, files, span, runtime_dir);
    }
    if let Some(span) = first_given(&files) {
        return Err(Located::new(
            span,
            format!(
                "app {name:?} has versions ([[app.version]]): its handler goes in each version, \
                 not in the app"
            ),
        ));
    }
    versions(name, prefix, file.versions, span, runtime_dir)
}

fn versions(
    name: &str,
    prefix: &str,
    files: Vec<Spanned<super::file::VersionFile>>,
    span: std::ops::Range<usize>,
    runtime_dir: &Path,
) -> Result<Handler, Located> {
    use crate::handlers::versions::{Version, Versions};
    let mut list: Vec<Version> = Vec::with_capacity(files.len());
    for spanned in files {
        let version_span = spanned.span();
        let v = spanned.into_inner();
        let version = v.name.get_ref().clone();
        let valid = !version.is_empty()
            && version.len() <= 64
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Located::new(
                v.name.span(),
                format!("app {name:?}: version name {version:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if list.iter().any(|other| other.name == version) {
            return Err(Located::new(
                v.name.span(),
                format!("app {name:?}: version {version:?} is named twice"),
            ));
        }
        let files = HandlerFiles {
            respond: v.respond,
            static_files: v.static_files,
            proxy: v.proxy,
            run: v.run,
        };
        let label = format!("{name}@{version}");
        let handler = one_handler(&label, prefix, files, version_span, runtime_dir)?;
        list.push(Version {
            name: version,
            weight: v.weight.unwrap_or(1),
            handler,
        });
    }
    if list.iter().all(|v| v.weight == 0) {
        return Err(Located::new(
            span,
            format!("app {name:?}: every version has weight 0, so none would get traffic"),
        ));
    }
    Ok(Handler::Versions(Versions::new(list)))
}

fn first_given(files: &HandlerFiles) -> Option<std::ops::Range<usize>> {
    files
        .respond
        .as_ref()
        .map(Spanned::span)
        .or_else(|| files.static_files.as_ref().map(Spanned::span))
        .or_else(|| files.proxy.as_ref().map(Spanned::span))
        .or_else(|| files.run.as_ref().map(Spanned::span))
}

/// Exactly one handler of `files`, for `label` (the app, or `app@version`).
fn one_handler(
    label: &str,
    prefix: &str,
    files: HandlerFiles,
    span: std::ops::Range<usize>,
    runtime_dir: &Path,
) -> Result<Handler, Located> {
    let given: Vec<(&str, std::ops::Range<usize>)> = [
        ("respond", files.respond.as_ref().map(Spanned::span)),
        ("static", files.static_files.as_ref().map(Spanned::span)),
        ("proxy", files.proxy.as_ref().map(Spanned::span)),
        ("run", files.run.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(kind, span)| span.map(|s| (kind, s)))
    .collect();
    if let [(first, _), (second, second_span), ..] = given.as_slice() {
        return Err(Located::new(
            second_span.clone(),
            format!(
                "app {label:?} has more than one handler (`{first}` and `{second}`): keep exactly one, \
                 or split it into two apps with different hosts or paths"
            ),
        ));
    }
    if let Some(respond) = files.respond {
        return Ok(Handler::Respond(Respond::from_config(label, respond)?));
    }
    if let Some(static_files) = files.static_files {
        return Ok(Handler::Static(StaticFiles::from_config(
            label,
            prefix,
            static_files,
        )?));
    }
    if let Some(proxy) = files.proxy {
        return Ok(Handler::Proxy(Proxy::from_config(label, proxy)?));
    }
    if let Some(run) = files.run {
        return Ok(Handler::Run(Run::from_config(label, run, runtime_dir)?));
    }
    Err(Located::new(
        span,
        format!(
            "app {label:?} has no handler: add exactly one of `respond = {{ ... }}`, \
             `static = {{ root = \"/srv/site\" }}`, `proxy = {{ upstream = \"http://127.0.0.1:9000\" }}` \
             or `run = {{ command = [\"/usr/bin/app\"] }}`"
        ),
    ))
}

fn add_routes(
    router: &mut Router,
    app: &App,
    earlier: &[Arc<App>],
    span: std::ops::Range<usize>,
) -> Result<(), Located> {
    let index = earlier.len();
    let hosts: Vec<Option<&HostPattern>> = if app.hosts.is_empty() {
        vec![None]
    } else {
        app.hosts.iter().map(Some).collect()
    };
    for host in hosts {
        if let Err(other) = router.insert(host, &app.path, index) {
            let what = host.map_or_else(|| "any host".to_string(), |h| format!("host \"{h}\""));
            let why = match earlier.get(other) {
                Some(earlier) => format!(
                    "app {:?} has the same {what} and path {:?} as app {:?}: give one of them another host or path",
                    app.name, app.path, earlier.name
                ),
                // The app itself: it lists the same host twice.
                None => format!("app {:?} lists {what} twice: remove one", app.name),
            };
            return Err(Located::new(span, why));
        }
    }
    Ok(())
}
