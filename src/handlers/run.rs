//! The `run` handler: an app whose process ondemand starts on the app's first request and stops
//! when the app idles ([`crate::apps`]). Each request takes a place in the app's bulkhead, waits
//! for the app to be ready (the request that triggered the start is held, never failed early),
//! then goes through the same forwarding as `proxy`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use toml::Spanned;

use super::{hold, Body};
use crate::apps::bulkhead::Full;
use crate::apps::runner::{Refusal, Runner};
use crate::apps::spec::RunSpec;
use crate::config::{Located, RunFile};
use crate::proxy::{self, error_response, headers};

/// An on-demand app.
#[derive(Debug)]
pub struct Run {
    /// Swapped on reload for the runner of the previous configuration when the app's `run` did
    /// not change, so a running app keeps running across reloads.
    runner: ArcSwap<Runner>,
}

impl Run {
    /// Builds the handler from `[app.run]` of app `app`; nothing is started.
    pub fn from_config(
        app: &str,
        file: Spanned<RunFile>,
        runtime_dir: &std::path::Path,
    ) -> Result<Run, Located> {
        let spec = RunSpec::from_config(app, file)?;
        Ok(Run {
            runner: ArcSwap::from_pointee(Runner::new(app, spec, runtime_dir.to_path_buf())),
        })
    }

    pub fn runner(&self) -> Arc<Runner> {
        self.runner.load_full()
    }

    /// Takes over `previous`'s runner (and its processes) when the app's `run` is unchanged.
    /// Returns false when it is not: the caller then stops `previous`.
    pub fn adopt(&self, previous: &Run) -> bool {
        let old = previous.runner();
        if old.spec() != self.runner.load().spec() {
            return false;
        }
        self.runner.store(old);
        true
    }

    /// Forwards one request of app `app` (mounted at `prefix`) for normalized `path`.
    pub async fn serve(
        &self,
        app: &Arc<str>,
        prefix: &str,
        path: crate::routing::path::RequestPath,
        req: Request<Incoming>,
        client: headers::Client<'_>,
        served: proxy::Served<'_>,
    ) -> Response<Body> {
        let runner = self.runner();
        let in_app = runner.activity.begin();
        let place = match runner.bulkhead.enter().await {
            Ok(place) => place,
            Err(full) => return bulkhead_full(app, &full, runner.bulkhead.log_refusal()),
        };
        let upstreams = match runner.acquire().await {
            Ok(upstreams) => upstreams,
            Err(refusal) => return refused(app, refusal),
        };
        let path = super::proxy::upstream_path(runner.spec().strip_prefix, prefix, &path);
        let fwd = proxy::Forward {
            app,
            path,
            client,
            launcher: served.launcher,
            app_activity: Some(&runner.activity),
            timers: served.timers,
            sent: tokio::time::Instant::now(),
            upstream_time: served.upstream_time,
        };
        let response = proxy::forward(req, &upstreams, &runner.spec().limits, fwd).await;
        response.map(|body| hold(body, (place, in_app)))
    }
}

/// 503 for a full bulkhead; `log` says whether to log it now (and how many went unlogged).
fn bulkhead_full(app: &str, full: &Full, log: Option<u64>) -> Response<Body> {
    let why = match full {
        Full::QueueFull(n) => {
            format!("it is at max_concurrency and its queue is full ({n} waiting)")
        }
        Full::Waited(t) => format!(
            "it stayed at max_concurrency for {} (queue_timeout)",
            humantime::format_duration(*t)
        ),
    };
    if let Some(unlogged) = log {
        let more = if unlogged > 0 {
            format!(" ({unlogged} more such 503s in the last second were not logged)")
        } else {
            String::new()
        };
        tracing::warn!(app, "503: {why}{more}");
    }
    error_response(StatusCode::SERVICE_UNAVAILABLE, app, &why)
}

fn refused(app: &str, refusal: Refusal) -> Response<Body> {
    let mut resp = error_response(refusal.status, app, &refusal.reason);
    if let Some(seconds) = refusal.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    resp
}
