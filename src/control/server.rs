//! The control socket, served by the running launcher: HTTP/1.1 on a unix socket that only users
//! with access to its path can reach (mode 0660). Nothing on it counts as activity, so looking at
//! a launcher never keeps it up.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /status` | the [`Status`] as JSON |
//! | `GET /metrics` | Prometheus text |
//! | `POST /start`, `/stop`, `/restart` with `{"filters": [...], "all": bool}` | the apps acted on |
//! | `POST /reload` | what SIGHUP does, and its outcome |

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::status::{AppStatus, Status};
use crate::apps::usage;
use crate::handlers::{full, Body};
use crate::metrics::LiveApp;
use crate::server::Shared;

/// A reload asked for on the control socket, with where to send its outcome.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What `start`/`stop`/`restart` send.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActRequest {
    pub filters: Vec<String>,
    pub all: bool,
}

/// What they get back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ActResponse {
    /// Apps the command was carried out on.
    pub acted: Vec<String>,
    /// Apps that matched but have no process to act on (respond, static, proxy).
    pub skipped: Vec<String>,
}

/// The control socket and what it needs.
pub struct Control {
    pub shared: Arc<Shared>,
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// A bound control socket; the file is removed when dropped (if we made it).
pub struct ControlSocket {
    listener: UnixListener,
    path: Option<PathBuf>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The control socket: systemd's (named `control`), or one bound at `path`. None, with a warning,
/// when it cannot be had: the launcher serves on without it.
pub fn open(
    inherited: Option<std::os::unix::net::UnixListener>,
    path: &Path,
) -> Option<ControlSocket> {
    if let Some(listener) = inherited {
        let registered = listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(listener));
        return match registered {
            Ok(listener) => Some(ControlSocket {
                listener,
                path: None,
            }),
            Err(e) => {
                tracing::warn!("cannot use the control socket from systemd: {e}");
                None
            }
        };
    }
    match bind(path) {
        Ok(listener) => Some(ControlSocket {
            listener,
            path: Some(path.to_path_buf()),
        }),
        Err(e) => {
            tracing::warn!(
                "no control socket at {}: {e}; `ondemand status` and friends cannot reach \
                 this launcher (it serves on without them); set [server] control_socket to a \
                 path its user may create, in a directory others may not write",
                path.display()
            );
            None
        }
    }
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    // Each error says which step failed; the caller names the path.
    let with = |what: String| {
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
            // mkdir on a file that is in the way: "File exists" would mislead.
            std::io::ErrorKind::AlreadyExists => std::io::Error::new(
                e.kind(),
                format!("{} exists and is not a directory", dir.display()),
            ),
            _ => with(format!("cannot create its directory {}", dir.display()))(e),
        })?;
        refuse_world_writable(dir)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "it is in use by another launcher",
        ));
    }
    // Left by a launcher that did not exit cleanly: nobody answers on it.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(with("cannot bind it".into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(with("cannot set its mode to 0660".into()))?;
    Ok(listener)
}

/// Whoever may write the socket's directory may replace the socket with their own, and then
/// answer `ondemand status` and receive `ondemand reload` in the launcher's place. (/tmp's sticky
/// bit stops the replacing, not the squatting of the name before the launcher comes.)
fn refuse_world_writable(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by every user (mode {:o}), who could replace the control socket",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

impl Control {
    /// Serves `socket` until `stop` is cancelled.
    pub async fn serve(self: Arc<Self>, socket: ControlSocket, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = socket.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let control = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let control = control.clone();
                    async move { Ok::<_, Infallible>(control.answer(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/status") => json(&live_status(&self.shared)),
            (Method::GET, "/metrics") => {
                let text = self.shared.metrics.render(&live_apps(&self.shared));
                let mut resp = Response::new(full(text));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                resp
            }
            (Method::POST, "/start" | "/stop" | "/restart") => {
                let body = match read_json::<ActRequest>(req).await {
                    Ok(b) => b,
                    Err(e) => return text(StatusCode::BAD_REQUEST, e),
                };
                json(&act(&self.shared, &path[1..], &body))
            }
            (Method::POST, "/reload") => {
                let (reply, outcome) = oneshot::channel();
                if self.reload.send(reply).await.is_err() {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "the launcher is stopping".into());
                }
                match outcome.await {
                    Ok(Ok(message)) => text(StatusCode::OK, message),
                    Ok(Err(message)) => text(StatusCode::UNPROCESSABLE_ENTITY, message),
                    Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the launcher is stopping".into()),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                format!("no {} {path} here: use GET /status, GET /metrics, POST /start, /stop, /restart or /reload", req.method()),
            ),
        }
    }
}

/// The status of the running launcher.
pub fn live_status(shared: &Shared) -> Status {
    let config = shared.config.load();
    let totals = shared.metrics.totals(false);
    let launcher = &shared.metrics.launcher;
    let apps = config
        .apps
        .iter()
        .map(|app| {
            let mut row = AppStatus::configured(app, &totals);
            if let Some(stats) = app.stats.get() {
                let (rps, p50, p99) = stats.recent();
                row.rps = rps;
                row.p50_ms = p50.map(|s| s * 1000.0);
                row.p99_ms = p99.map(|s| s * 1000.0);
                row.in_flight = stats.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            }
            with_processes(app, &mut row);
            if !row.pids.is_empty() {
                (row.rss_bytes, row.cpu_seconds) = usage::of_groups(&row.pids);
            }
            row
        })
        .collect();
    Status {
        running: true,
        pid: Some(std::process::id()),
        uptime_seconds: Some(launcher.started.elapsed().as_secs_f64()),
        activations: totals.launcher.activations,
        connections_open: launcher
            .open_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        connections_total: totals.launcher.connections,
        apps,
    }
}

/// Fills in what `app`'s runners know now: state, pids, uptime, queued. Cheap (no /proc).
fn with_processes(app: &crate::config::App, row: &mut AppStatus) {
    let runs = app.runs();
    if runs.is_empty() {
        row.state = "ready".into();
        return;
    }
    let mut states = Vec::new();
    for (name, run) in &runs {
        let runner = run.runner();
        let (state, running) = runner.view();
        states.push(if runs.len() == 1 {
            state.to_string()
        } else {
            format!("{}:{state}", name.rsplit('@').next().unwrap_or(name))
        });
        row.pids.extend(running.iter().map(|r| r.pid));
        let uptime = running.iter().map(|r| r.since.elapsed().as_secs_f64());
        row.uptime_seconds = row
            .uptime_seconds
            .into_iter()
            .chain(uptime)
            .reduce(f64::max);
        row.queued += runner.bulkhead.queued();
    }
    row.state = states.join(",");
}

/// The live gauges of every app, for the metrics.
pub fn live_apps(shared: &Shared) -> Vec<LiveApp> {
    live_status(shared)
        .apps
        .into_iter()
        .map(|a| LiveApp {
            name: a.name,
            state: a.state,
            in_flight: a.in_flight,
            queued: a.queued,
            memory_bytes: a.rss_bytes,
        })
        .collect()
}

/// Carries out `command` on the apps the request picks (a filter may also name one version of
/// an app as `app@version`).
fn act(shared: &Shared, command: &str, req: &ActRequest) -> ActResponse {
    let config = shared.config.load();
    let mut response = ActResponse::default();
    for app in config.apps.iter() {
        // Only what filters look at: name, hosts, tags, state (no counters, no /proc).
        let mut row = AppStatus::configured(app, &Default::default());
        with_processes(app, &mut row);
        let whole_app = req.all || req.filters.iter().any(|f| row.matches(f));
        let runs: Vec<_> = app
            .runs()
            .into_iter()
            .filter(|(name, _)| whole_app || req.filters.iter().any(|f| f == name))
            .collect();
        if runs.is_empty() {
            if whole_app {
                response.skipped.push(app.name.to_string());
            }
            continue;
        }
        for (name, run) in runs {
            let runner = run.runner();
            match command {
                "start" => runner.start(),
                "stop" => runner.stop(),
                _ => runner.restart(),
            }
            tracing::info!(app = %name, "{command} asked on the control socket");
            response.acted.push(name);
        }
    }
    response
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, String> {
    let body = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not a valid request: {e}"))
}

fn json<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut resp = Response::new(full(Bytes::from(bytes)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut resp = Response::new(full(message + "\n"));
    *resp.status_mut() = status;
    resp
}
