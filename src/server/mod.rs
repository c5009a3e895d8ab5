//! The server's life: register the listeners, accept and serve, watch for idleness and signals,
//! reload on SIGHUP, and stop in bounded steps.
//!
//! Stopping (idle, SIGTERM or SIGINT):
//! 1. tell systemd STOPPING=1;
//! 2. stop accepting and close our copies of the listeners: connections that arrive from now on
//!    wait in the supervisor's socket for the next start, never accepted-then-dropped;
//! 3. ask every connection to finish: in-flight requests complete, idle keep-alive connections
//!    close, a connection still waiting for its first request gets it served first;
//! 4. wait for that at most `drain_timeout`;
//! 5. stop the app processes it started (SIGTERM to each app's process group, SIGKILL after the
//!    app's `stop_timeout`) and kill anything that escaped their groups; then exit.

mod accept;
mod io;
mod proxy_protocol;
mod request;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps;
use crate::config::{self, Config, ProxyProtocol};
use crate::control;
use crate::idle::Activity;
use crate::listen::{Listener, Listeners, NamedListener};
use crate::logging::LogHandle;
use crate::metrics::{Exit, Metrics};
use crate::notify;
use crate::shutdown::{SignalEvent, Signals};
use accept::{AsyncListener, ConnContext};
use tokio::sync::mpsc;

/// State shared by every connection.
pub struct Shared {
    /// The running configuration; a reload swaps it whole, and requests already routed keep the
    /// one they started on.
    pub config: ArcSwap<Config>,
    pub activity: Activity,
    /// Apps of earlier configurations being stopped after a reload; the exit waits for them.
    pub retiring: TaskTracker,
    /// Counters that continue across activations.
    pub metrics: Arc<Metrics>,
    /// Set the moment the launcher decides to stop (idle, SIGTERM), before the drain begins:
    /// every HTTP/1 response from then on says `Connection: close`, so a client never reuses a
    /// connection that is about to be closed (see request.rs).
    pub stopping: AtomicBool,
}

/// Serves `listeners` with `config` until idle or told to stop. Must run inside a tokio runtime.
pub async fn run(config: Config, listeners: Listeners, log: LogHandle) -> Result<()> {
    let mut signals = Signals::install()?;
    let max_connections = config.server.max_connections;
    let metrics = Arc::new(Metrics::new(
        config.server.state_dir.join("state.json"),
        config.server.metrics_file.clone(),
    ));
    attach_stats(&config, &metrics);
    let shared = Arc::new(Shared {
        config: ArcSwap::from_pointee(config),
        activity: Activity::default(),
        retiring: TaskTracker::new(),
        metrics,
        stopping: AtomicBool::new(false),
    });
    // Whatever an app leaves behind when it double-forks out of its process group is reparented
    // to us instead of init, so it can be found and stopped at exit.
    apps::process::become_subreaper();
    let slots = Arc::new(Semaphore::new(max_connections));
    let ctx = ConnContext {
        shared: shared.clone(),
        draining: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };
    let stop_accepting = CancellationToken::new();
    let accept_loops = TaskTracker::new();
    let socket_count = listeners.http.len();
    warn_of_unknown_proxy_protocol_sockets(&shared.config.load(), &listeners.http);
    for named in listeners.http {
        let description = named.to_string();
        let socket_name = named.name.clone();
        let tls = named.speaks_tls();
        let listener = register(named).with_context(|| format!("cannot serve on {description}"))?;
        tracing::debug!("serving on {description}");
        accept_loops.spawn(accept::accept_loop(
            listener,
            description,
            socket_name,
            tls,
            slots.clone(),
            stop_accepting.clone(),
            ctx.clone(),
        ));
    }
    let (reload_requests, mut reloads) = mpsc::channel(4);
    let background = CancellationToken::new();
    let inherited_control = listeners.control.and_then(|c| match c.listener {
        Listener::Unix(l) => Some(l),
        Listener::Tcp(_) => {
            tracing::warn!("the socket named `control` must be a unix socket; it is ignored");
            None
        }
    });
    let control_path = shared.config.load().server.control_socket.clone();
    let control_socket = control::server::open(inherited_control, &control_path);
    if let Some(socket) = control_socket {
        let control = Arc::new(control::server::Control {
            shared: shared.clone(),
            reload: reload_requests,
        });
        tokio::spawn(control.serve(socket, background.clone()));
    }
    tokio::spawn(persist_periodically(shared.clone(), background.clone()));

    let summary = summary(&shared.config.load(), socket_count);
    tracing::info!("ready: {summary}");
    notify::ready(&summary);
    let _watchdog = notify::spawn_watchdog();

    let (reason, idle) = wait_for_stop(&shared, &mut signals, &mut reloads, &log).await;
    shared.stopping.store(true, Ordering::SeqCst);
    tracing::info!(connections = ctx.tasks.len(), "stopping: {reason}");
    notify::stopping(&format!("Stopping: {reason}"));

    stop_accepting.cancel();
    accept_loops.close();
    accept_loops.wait().await;

    ctx.draining.cancel();
    ctx.tasks.close();
    let drain_timeout = shared.config.load().server.drain_timeout;
    if tokio::time::timeout(drain_timeout, ctx.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "drain_timeout ({}) passed with {} connections still open; closing them",
            humantime::format_duration(drain_timeout),
            ctx.tasks.len()
        );
    } else {
        tracing::info!("all connections finished");
    }
    stop_apps(&shared).await;
    background.cancel();
    let exit = if idle { Exit::Idle } else { Exit::Stopped };
    shared.metrics.persist(exit, &[]);
    tracing::info!("exiting");
    Ok(())
}

/// Warns of `proxy_protocol` names that match none of this launcher's sockets (a typo would leave
/// the load balancer's headers unread, and every request refused as malformed).
fn warn_of_unknown_proxy_protocol_sockets(config: &Config, sockets: &[NamedListener]) {
    if let ProxyProtocol::Sockets(names) = &config.server.proxy_protocol {
        for name in names
            .iter()
            .filter(|n| !sockets.iter().any(|s| &s.name == *n))
        {
            let have: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
            tracing::warn!(
                "proxy_protocol names the socket {name:?}, but this launcher's sockets are \
                 called {have:?} (systemd's FileDescriptorName=, xinetd's --xinetd-socket-name)"
            );
        }
    }
}

/// Gives each app its counters (the same object for the same app name across reloads).
fn attach_stats(config: &Config, metrics: &Metrics) {
    for app in &config.apps {
        let stats = metrics.app(&app.name);
        for (_, run) in app.runs() {
            run.runner().attach_stats(stats.clone());
        }
        let _ = app.stats.set(stats);
    }
}

/// Writes the state and metrics files every `metrics_interval` (a timer, not activity).
async fn persist_periodically(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let interval = shared.config.load().server.metrics_interval;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let live = control::server::live_apps(&shared);
        let metrics = shared.metrics.clone();
        let _ = tokio::task::spawn_blocking(move || metrics.persist(Exit::NotYet, &live)).await;
    }
}

/// Stops every app process: those of the running configuration, and those retiring after a
/// reload. systemd's KillMode=mixed would SIGKILL them after we exit, and xinetd would leave them
/// running: a launcher stops its own children.
async fn stop_apps(shared: &Shared) {
    let runners: Vec<_> = shared
        .config
        .load()
        .apps
        .iter()
        .flat_map(|app| app.runs().into_iter().map(|(_, run)| run.runner()))
        .filter(|runner| runner.has_started())
        .collect();
    if !runners.is_empty() {
        tracing::info!("stopping {} app(s)", runners.len());
    }
    futures_util::future::join_all(runners.iter().map(|r| r.shutdown())).await;
    shared.retiring.close();
    shared.retiring.wait().await;
    let strays = apps::process::kill_strays();
    if strays > 0 {
        tracing::warn!(
            "killed {strays} process(es) that apps had left running outside their process groups"
        );
    }
}

/// Carries running apps over to `new` when their `run` is unchanged; stops the others (removed
/// or changed apps) in the background: requests in flight on them finish first, as far as each
/// app's `stop_timeout` allows.
fn hand_over_apps(shared: &Shared, old: &Config, new: &Config) {
    let previous: std::collections::HashMap<String, &crate::handlers::run::Run> =
        old.apps.iter().flat_map(|app| app.runs()).collect();
    let mut adopted = std::collections::HashSet::new();
    for app in &new.apps {
        for (name, run) in app.runs() {
            if previous
                .get(&name)
                .is_some_and(|old_run| run.adopt(old_run))
            {
                adopted.insert(name);
            }
        }
    }
    for (name, run) in previous {
        let runner = run.runner();
        if adopted.contains(&name) || !runner.has_started() {
            continue;
        }
        tracing::info!(
            app = %name,
            "the app was changed or removed: its processes stop once its requests in flight finish"
        );
        let drain = new.server.drain_timeout;
        shared.retiring.spawn(async move {
            // New requests already go to the new configuration; let the old one's finish.
            let _ = tokio::time::timeout(drain, runner.activity.idle_for(Duration::ZERO)).await;
            runner.shutdown().await
        });
    }
}

/// Registers a listener with the runtime (sets O_NONBLOCK first, as tokio requires).
fn register(named: NamedListener) -> Result<AsyncListener> {
    named.set_nonblocking()?;
    Ok(match named.listener {
        Listener::Tcp(l) => AsyncListener::Tcp(tokio::net::TcpListener::from_std(l)?),
        Listener::Unix(l) => AsyncListener::Unix(tokio::net::UnixListener::from_std(l)?),
    })
}

fn summary(config: &Config, sockets: usize) -> String {
    if config.load_error.is_some() {
        return format!(
            "configuration {} invalid: answering 503 on {sockets} socket(s)",
            config.path.display()
        );
    }
    let idle = config.server.idle_timeout.map_or_else(
        || "never".to_string(),
        |d| humantime::format_duration(d).to_string(),
    );
    format!(
        "serving {} app{} on {sockets} socket{}, idle exit after {idle}",
        config.apps.len(),
        if config.apps.len() == 1 { "" } else { "s" },
        if sockets == 1 { "" } else { "s" },
    )
}

/// Runs until idle or a stop signal; returns why it stopped, and whether it was idleness.
/// Reloads on SIGHUP and when asked on the control socket.
async fn wait_for_stop(
    shared: &Shared,
    signals: &mut Signals,
    reloads: &mut mpsc::Receiver<control::server::ReloadRequest>,
    log: &LogHandle,
) -> (String, bool) {
    loop {
        let idle_timeout = shared.config.load().server.idle_timeout;
        let idle = async {
            match idle_timeout {
                Some(t) => shared.activity.idle_for(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = idle => {
                let t = idle_timeout.unwrap_or_default();
                return (format!("idle for {}", humantime::format_duration(t)), true);
            }
            event = signals.next() => match event {
                SignalEvent::Stop(name) => return (format!("received {name}"), false),
                SignalEvent::Reload => {
                    let _ = reload(shared, log).await;
                }
            },
            Some(reply) = reloads.recv() => {
                let _ = reply.send(reload(shared, log).await);
            }
        }
    }
}

/// Re-reads the config file; an invalid one is reported and the running config kept. Returns
/// what happened, for the control socket.
async fn reload(shared: &Shared, log: &LogHandle) -> Result<String, String> {
    let path = shared.config.load().path.clone();
    let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
    let new = match loaded
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            return Err(format!(
                "reload failed, the running configuration is kept: {e}"
            ));
        }
    };
    let old = shared.config.load();
    if new.server.max_connections != old.server.max_connections || new.server.log != old.server.log
    {
        tracing::warn!("max_connections and log take effect at the next start, not on reload");
    }
    log.set_level(&new.server.log_level);
    attach_stats(&new, &shared.metrics);
    hand_over_apps(shared, &old, &new);
    tracing::info!(
        apps = new.apps.len(),
        "configuration reloaded from {}",
        new.path.display()
    );
    notify::status(&format!("Reloaded: {} apps", new.apps.len()));
    let message = format!(
        "configuration reloaded from {}: {} apps",
        new.path.display(),
        new.apps.len()
    );
    shared.config.store(Arc::new(new));
    Ok(message)
}
