//! `ondemand status|start|stop|restart|reload`: the commands that talk to a running launcher
//! over its control socket. Every command finds the socket from the configuration (`--config`,
//! as `serve`). When no launcher runs: `status` shows the configured apps as idle with their last
//! known counters (from the state file); `start` asks systemd to start the launcher (a pre-warm)
//! when it can; `stop` and `restart` have nothing to do; `reload` checks the file, which the
//! next activation reads anyway.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::server::{ActRequest, ActResponse};
use super::status::{self, Status};
use crate::config::Config;
use crate::metrics::saved;

/// What a command prints, and its exit code.
pub struct Outcome {
    pub text: String,
    pub code: u8,
}

impl Outcome {
    fn ok(text: String) -> Outcome {
        Outcome { text, code: 0 }
    }
}

/// `ondemand status [--json] [FILTER...]`.
pub fn status(config: &Config, json: bool, filters: &[String]) -> Result<Outcome> {
    let mut status = match request(config, Method::GET, "/status", None)? {
        Some((StatusCode::OK, body)) => serde_json::from_slice::<Status>(&body)
            .context("the launcher sent a status this ondemand cannot read")?,
        Some((code, body)) => bail!(
            "the launcher answered {code}: {}",
            String::from_utf8_lossy(&body)
        ),
        None => status::offline(
            config,
            &saved::read(&config.server.state_dir.join("state.json")),
        ),
    };
    status::filter(&mut status, filters);
    let text = if json {
        serde_json::to_string_pretty(&status)? + "\n"
    } else {
        status::render(&status)
    };
    Ok(Outcome::ok(text))
}

/// `ondemand start|stop|restart [--all] FILTER...`.
pub fn act(config: &Config, command: &str, filters: &[String], all: bool) -> Result<Outcome> {
    if filters.is_empty() && !all {
        bail!("`ondemand {command}` with no app named would act on every app: name apps (by name, host, tag or state), or add --all");
    }
    let body = serde_json::to_vec(&ActRequest {
        filters: filters.to_vec(),
        all,
    })?;
    let mut answer = request(
        config,
        Method::POST,
        &format!("/{command}"),
        Some(body.clone()),
    )?;
    if answer.is_none() && command == "start" {
        if !start_launcher(config)? {
            return Ok(Outcome {
                text: "the launcher is not running and cannot be started from here (under xinetd \
                       it starts with the next connection): 0 apps started\n"
                    .into(),
                code: 1,
            });
        }
        answer = request(config, Method::POST, "/start", Some(body))?;
    }
    let Some((code, body)) = answer else {
        return Ok(Outcome::ok(format!(
            "the launcher is not running, so no app runs: 0 apps {}\n",
            past(command)
        )));
    };
    if code != StatusCode::OK {
        bail!(
            "the launcher answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let done: ActResponse = serde_json::from_slice(&body)?;
    let mut text = format!(
        "{} {} app{}{}\n",
        past(command),
        done.acted.len(),
        if done.acted.len() == 1 { "" } else { "s" },
        if done.acted.is_empty() {
            String::new()
        } else {
            format!(": {}", done.acted.join(", "))
        }
    );
    if !done.skipped.is_empty() {
        text.push_str(&format!(
            "not {} (no process of their own): {}\n",
            past(command),
            done.skipped.join(", ")
        ));
    }
    let code = if done.acted.is_empty() && done.skipped.is_empty() {
        1
    } else {
        0
    };
    if code == 1 {
        text.push_str("no app matched: `ondemand status` lists them\n");
    }
    Ok(Outcome { text, code })
}

/// `ondemand reload`.
pub fn reload(config: &Config) -> Result<Outcome> {
    match request(config, Method::POST, "/reload", None)? {
        Some((StatusCode::OK, body)) => {
            Ok(Outcome::ok(String::from_utf8_lossy(&body).into_owned()))
        }
        Some((_, body)) => Ok(Outcome {
            text: String::from_utf8_lossy(&body).into_owned(),
            code: 2,
        }),
        None => Ok(Outcome::ok(format!(
            "{} is valid; the launcher is not running, and its next start reads it\n",
            config.path.display()
        ))),
    }
}

fn past(command: &str) -> &'static str {
    match command {
        "start" => "started",
        "stop" => "stopped",
        _ => "restarted",
    }
}

/// Starts the launcher through systemd (its socket's service), and waits for its control socket.
/// False when systemd is not managing ondemand here.
fn start_launcher(config: &Config) -> Result<bool> {
    if !Path::new("/run/systemd/system").exists() {
        return Ok(false);
    }
    let started = std::process::Command::new("systemctl")
        .args(["start", "ondemand.service"])
        .status();
    if !matches!(started, Ok(s) if s.success()) {
        return Ok(false);
    }
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(&config.server.control_socket).is_ok() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "systemd started ondemand.service, but its control socket {} did not appear",
        config.server.control_socket.display()
    )
}

/// One request on the control socket; None when no launcher listens there.
fn request(
    config: &Config,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Option<(StatusCode, Bytes)>> {
    let socket = config.server.control_socket.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = path.to_string();
    runtime.block_on(async move {
        let stream = match UnixStream::connect(&socket).await {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                return Ok(None)
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach the launcher's control socket {} (it needs read and write \
                         access to that path: run as root or as a member of its group)",
                        socket.display()
                    )
                })
            }
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "ondemand")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .context("the launcher did not answer within 30s")??;
        let code = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Some((code, body)))
    })
}
