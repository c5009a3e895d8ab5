//! One on-demand app's life: started on its first request, stopped after its own idle timeout,
//! restarted after a crash by the next request, held back after a crash loop.
//!
//! A task per app (started with the app's first request) owns its processes and is the only one
//! that starts or stops them; requests see its [`Status`] through a watch channel and ask for a
//! start through `demand`. So concurrent first requests start exactly one process per instance
//! and all wait for it.
//!
//! States, as `ondemand status` will show them: idle (nothing runs) → starting → ready →
//! stopping → idle; a start that fails leaves the app idle with the reason for the requests that
//! waited; several quick failures in a row put it in backoff, where requests get 503 with
//! Retry-After at once, for a pause that doubles with each further failure (1 s up to 60 s).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bulkhead::Bulkhead;
use super::privilege::{self, Switch};
use super::process::{self, AppProcess, Credentials, HandedSocket, LaunchSpec};
use super::ready;
use super::spec::{ListenMode, ReadyCheck, RunSpec};
use crate::idle::Activity;
use crate::proxy::balance::UpstreamSet;
use crate::proxy::upstream::{Address, Upstream};

/// A process that exits within this time after it became ready counts as a failed start.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// Failed starts in a row before the app is held back.
const FAILURES_BEFORE_BACKOFF: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Output lines quoted in the log when an app fails to start.
const QUOTED_LINES: usize = 5;

/// What requests see of the app.
#[derive(Debug, Clone)]
pub enum Status {
    /// Nothing runs; the next request starts it.
    Idle,
    /// Start number `attempt` is under way.
    Starting { attempt: u64 },
    /// Running instances take requests.
    Ready { upstreams: Arc<UpstreamSet> },
    /// Start number `attempt` failed: the requests that waited for it get `status` and `reason`.
    StartFailed {
        attempt: u64,
        status: StatusCode,
        reason: Arc<str>,
    },
    /// Crash loop: no start before `until`.
    Backoff { until: Instant, reason: Arc<str> },
    /// Its processes are being stopped (idle, or `ondemand stop`); requests wait for the outcome.
    Stopping,
    /// The app is being stopped for good (launcher exit or reload).
    Retired,
}

impl Status {
    /// The state's name, as `ondemand status` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Starting { .. } => "starting",
            Status::Ready { .. } => "ready",
            Status::StartFailed { .. } => "failed",
            Status::Backoff { .. } => "backoff",
            Status::Stopping | Status::Retired => "stopping",
        }
    }
}

/// What an operator asks of an app (`ondemand stop`/`restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Stop,
    Restart,
}

/// A running process of the app, for the status table.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub pid: u32,
    pub since: std::time::Instant,
}

/// Why a request could not be given a running app.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
    /// Seconds for Retry-After (503).
    pub retry_after: Option<u64>,
}

/// One `run` app.
pub struct Runner {
    app: String,
    spec: Arc<RunSpec>,
    runtime_dir: PathBuf,
    status: watch::Sender<Status>,
    demand: Notify,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Requests in flight in the app and its open tunnels: the app's idle timer.
    pub activity: Activity,
    /// The app's places and queue.
    pub bulkhead: Bulkhead,
    /// Count of starts so far.
    attempts: AtomicU64,
    /// The app's counters (starts, crashes, cold-start times, last exit).
    stats: std::sync::OnceLock<Arc<crate::metrics::AppStats>>,
    /// Operators' commands; the receiver is taken by the app's task.
    commands: mpsc::UnboundedSender<Command>,
    command_receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    /// The processes running now.
    running: Mutex<Vec<Running>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("app", &self.app).finish()
    }
}

impl Runner {
    /// A runner with nothing started: no task, no process, no socket until the first request.
    pub fn new(app: &str, spec: RunSpec, runtime_dir: PathBuf) -> Runner {
        let (commands, command_receiver) = mpsc::unbounded_channel();
        Runner {
            stats: std::sync::OnceLock::new(),
            commands,
            command_receiver: Mutex::new(Some(command_receiver)),
            running: Mutex::new(Vec::new()),
            app: app.to_string(),
            bulkhead: Bulkhead::new(spec.max_concurrency, spec.max_queue, spec.queue_timeout),
            spec: Arc::new(spec),
            runtime_dir,
            status: watch::Sender::new(Status::Idle),
            demand: Notify::new(),
            shutdown: CancellationToken::new(),
            task: Mutex::new(None),
            activity: Activity::default(),
            attempts: AtomicU64::new(0),
        }
    }

    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Gives the runner the app's counters (once; later calls are ignored).
    pub fn attach_stats(&self, stats: Arc<crate::metrics::AppStats>) {
        let _ = self.stats.set(stats);
    }

    /// The state's name and the processes running now.
    pub fn view(&self) -> (&'static str, Vec<Running>) {
        let state = self.status.borrow().name();
        (state, lock(&self.running).clone())
    }

    /// Starts the app now if it is not running (a pre-warm), as its first request would.
    pub fn start(self: &Arc<Self>) {
        self.ensure_task();
        self.demand.notify_one();
    }

    /// Stops the app's processes now; its route stays and the next request starts it again.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// Stops the app's processes and starts them again.
    pub fn restart(self: &Arc<Self>) {
        if self.has_started() {
            let _ = self.commands.send(Command::Restart);
        } else {
            self.start();
        }
    }

    /// The running instances to send a request to, starting the app if needed and waiting (at
    /// most `start_timeout`) for it to be ready.
    pub async fn acquire(self: &Arc<Self>) -> Result<Arc<UpstreamSet>, Refusal> {
        self.ensure_task();
        let mut status = self.status.subscribe();
        let deadline = Instant::now() + self.spec.start_timeout + Duration::from_secs(1);
        let mut waiting_for = None;
        loop {
            let current = status.borrow_and_update().clone();
            match current {
                Status::Ready { upstreams } => return Ok(upstreams),
                Status::Idle => self.ask_for_start(&mut waiting_for),
                Status::Starting { attempt } => {
                    waiting_for.get_or_insert(attempt);
                }
                Status::StartFailed {
                    attempt,
                    status,
                    reason,
                } => match waiting_for {
                    Some(mine) if attempt >= mine => {
                        return Err(Refusal {
                            status,
                            reason: reason.to_string(),
                            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
                        })
                    }
                    // A failure from before this request: this request asks for a new start.
                    _ => self.ask_for_start(&mut waiting_for),
                },
                Status::Backoff { until, reason } => {
                    let wait = until.saturating_duration_since(Instant::now());
                    return Err(Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        reason: format!(
                            "it keeps failing to start ({reason}); the next try is in {}s",
                            wait.as_secs() + 1
                        ),
                        retry_after: Some(wait.as_secs() + 1),
                    });
                }
                Status::Stopping => {}
                Status::Retired => {
                    return Err(Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        reason: "it is being stopped".into(),
                        retry_after: Some(1),
                    })
                }
            }
            if tokio::time::timeout_at(deadline, status.changed())
                .await
                .is_err()
            {
                return Err(Refusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: format!(
                        "it did not become ready within {}",
                        humantime::format_duration(self.spec.start_timeout)
                    ),
                    retry_after: Some(1),
                });
            }
        }
    }

    /// Asks the app's task for a start; the request then waits for the outcome of that start
    /// (or a later one), even if it never sees the `Starting` status go by.
    fn ask_for_start(&self, waiting_for: &mut Option<u64>) {
        waiting_for.get_or_insert(self.attempts() + 1);
        self.demand.notify_one();
    }

    fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Stops the app's processes for good and waits until they are gone.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// True once the app's task has started (it has had a request).
    pub fn has_started(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn ensure_task(self: &Arc<Self>) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() && !self.shutdown.is_cancelled() {
            let runner = self.clone();
            *task = Some(tokio::spawn(async move { runner.run().await }));
        }
    }

    fn publish(&self, status: Status) {
        self.status.send_replace(status);
    }

    /// The app's task: waits for demand, starts, serves until idle, repeats.
    async fn run(self: Arc<Self>) {
        let Some(mut commands) = lock(&self.command_receiver).take() else {
            return;
        };
        let mut failures = Failures::default();
        let (exits_tx, mut exits) = mpsc::unbounded_channel();
        let mut instances: Vec<Option<Instance>> = (0..self.spec.instances).map(|_| None).collect();
        loop {
            if !self.wait_for_demand(&mut failures, &mut commands).await {
                break;
            }
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            self.publish(Status::Starting { attempt });
            if let Err(failure) = self.start_missing(&mut instances, &exits_tx).await {
                if running(&instances) == 0 {
                    self.start_failed(attempt, failure, &mut failures);
                    continue;
                }
            }
            self.publish_ready(&instances);
            let stop = self
                .serve_until_stop(
                    &mut instances,
                    &mut exits,
                    &exits_tx,
                    &mut failures,
                    &mut commands,
                )
                .await;
            if stop == Stop::Shutdown {
                break;
            }
        }
        self.stop_all(&mut instances, &mut exits).await;
        self.publish(Status::Retired);
        tracing::debug!(app = %self.app, "app retired");
    }

    /// Waits until a request wants the app, honouring a crash-loop backoff first. False on
    /// shutdown.
    async fn wait_for_demand(
        &self,
        failures: &mut Failures,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        if let Some(until) = failures.backoff_until {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => {}
            }
            failures.backoff_until = None;
            tracing::info!(app = %self.app, "backoff over: the next request starts the app again");
            self.publish(Status::Idle);
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = self.demand.notified() => return true,
                // Nothing runs: `stop` has nothing to do, `restart` is a start.
                Some(command) = commands.recv() => if command == Command::Restart {
                    return true;
                },
            }
        }
    }

    fn start_failed(&self, attempt: u64, failure: StartFailure, failures: &mut Failures) {
        tracing::warn!(app = %self.app, "{}", failure.log);
        let reason: Arc<str> = failure.reason.into();
        if let Some(pause) = failures.record() {
            tracing::warn!(
                app = %self.app,
                "{} failed starts in a row: not starting it for {}; requests get 503 meanwhile",
                failures.in_a_row,
                humantime::format_duration(pause)
            );
            self.publish(Status::Backoff {
                until: Instant::now() + pause,
                reason,
            });
        } else {
            self.publish(Status::StartFailed {
                attempt,
                status: failure.status,
                reason,
            });
        }
    }

    fn publish_ready(&self, instances: &[Option<Instance>]) {
        self.note_running(instances);
        let upstreams = instances
            .iter()
            .flatten()
            .map(|i| i.upstream.clone())
            .collect();
        self.publish(Status::Ready {
            upstreams: Arc::new(UpstreamSet::new(upstreams)),
        });
    }

    /// Serves until the app idles, every instance has exited, or shutdown.
    async fn serve_until_stop(
        &self,
        instances: &mut [Option<Instance>],
        exits: &mut mpsc::UnboundedReceiver<Exit>,
        exits_tx: &mpsc::UnboundedSender<Exit>,
        failures: &mut Failures,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Stop {
        loop {
            let missing = instances.len() - running(instances);
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Stop::Shutdown,
                Some(exit) = exits.recv() => {
                    self.exited(instances, exit, failures);
                    if running(instances) == 0 {
                        if failures.backoff_until.is_none() {
                            self.publish(Status::Idle);
                        }
                        return Stop::Exited;
                    }
                    self.publish_ready(instances);
                }
                () = self.activity.idle_for(self.spec.idle_timeout) => {
                    tracing::info!(
                        app = %self.app,
                        "stopping: idle for {}",
                        humantime::format_duration(self.spec.idle_timeout)
                    );
                    self.stop_all(instances, exits).await;
                    failures.reset();
                    self.publish(Status::Idle);
                    return Stop::Idle;
                }
                _ = self.demand.notified(), if missing > 0 => {
                    let _ = self.start_missing(instances, exits_tx).await;
                    self.publish_ready(instances);
                }
                Some(command) = commands.recv() => {
                    tracing::info!(app = %self.app, "stopping: {command:?} asked by an operator");
                    self.stop_all(instances, exits).await;
                    failures.reset();
                    self.publish(Status::Idle);
                    if command == Command::Restart {
                        self.demand.notify_one();
                    }
                    return Stop::Idle;
                }
            }
        }
    }

    fn note_running(&self, instances: &[Option<Instance>]) {
        *lock(&self.running) = instances
            .iter()
            .flatten()
            .map(|i| Running {
                pid: i.pid,
                since: i.ready_at.into_std(),
            })
            .collect();
    }

    /// An instance exited by itself: a crash (logged with how it ended and its last output).
    fn exited(&self, instances: &mut [Option<Instance>], exit: Exit, failures: &mut Failures) {
        let slot = &mut instances[exit.index];
        if slot.as_ref().is_none_or(|i| i.pid != exit.pid) {
            return;
        }
        let instance = slot.take();
        self.note_running(instances);
        if let Some(stats) = self.stats.get() {
            stats.exited(&exit.how, true);
        }
        let uptime = instance.map_or(Duration::ZERO, |i| i.ready_at.elapsed());
        tracing::warn!(
            app = %self.app,
            pid = exit.pid,
            "crashed: {} after {}; the next request starts it again{}",
            exit.how,
            humantime::format_duration(Duration::from_millis(uptime.as_millis() as u64)),
            quote(&exit.last_output)
        );
        if uptime < QUICK_EXIT {
            if let Some(pause) = failures.record() {
                tracing::warn!(
                    app = %self.app,
                    "{} quick exits in a row: not starting it for {}; requests get 503 meanwhile",
                    failures.in_a_row,
                    humantime::format_duration(pause)
                );
                self.publish(Status::Backoff {
                    until: Instant::now() + pause,
                    reason: format!("it {}", exit.how).into(),
                });
            }
        } else {
            failures.reset();
        }
    }

    /// Starts every instance not running, concurrently. Err with the first failure when any
    /// failed.
    async fn start_missing(
        &self,
        instances: &mut [Option<Instance>],
        exits_tx: &mpsc::UnboundedSender<Exit>,
    ) -> Result<(), StartFailure> {
        let missing: Vec<usize> = (0..instances.len())
            .filter(|&i| instances[i].is_none())
            .collect();
        let starts = missing.iter().map(|&index| self.start_instance(index));
        let results = futures_util::future::join_all(starts).await;
        let mut first_failure = None;
        for (index, result) in missing.into_iter().zip(results) {
            match result {
                Ok((instance, process)) => {
                    spawn_watcher(
                        self.app.clone(),
                        index,
                        process,
                        instance.stop.clone(),
                        self.spec.stop_timeout,
                        exits_tx.clone(),
                    );
                    instances[index] = Some(instance);
                }
                Err(failure) => {
                    first_failure.get_or_insert(failure);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Starts instance `index` and waits for it to be ready; in port mode, once more on another
    /// port when another process took the first.
    async fn start_instance(&self, index: usize) -> Result<(Instance, AppProcess), StartFailure> {
        match self.start_once(index).await {
            Err(failure) if failure.port_taken => {
                tracing::warn!(app = %self.app, "starting it again on another port: {}", failure.log);
                self.start_once(index).await
            }
            outcome => outcome,
        }
    }

    async fn start_once(&self, index: usize) -> Result<(Instance, AppProcess), StartFailure> {
        let started = Instant::now();
        let prepared = self.prepare(index)?;
        let mut process = AppProcess::spawn_off_thread(prepared.launch.clone())
            .await
            .map_err(|e| StartFailure {
                status: StatusCode::BAD_GATEWAY,
                reason: format!("it cannot be started: {e}"),
                log: e.to_string(),
                port_taken: false,
            })?;
        // ondemand's copy of the app's socket is closed now: if the app dies, connections are
        // refused at once (502) instead of waiting in a queue no one reads.
        drop(prepared.launch);
        let group = (self.spec.listen == ListenMode::Port).then(|| process.pid());
        let port_taken = AtomicBool::new(false);
        let ready = ready::wait_ready(
            &self.spec.ready,
            &prepared.address,
            prepared.notify,
            group,
            &port_taken,
        );
        let outcome = tokio::select! {
            () = ready => Ok(()),
            status = process.wait() => Err(process::describe_exit(status)),
            () = tokio::time::sleep(self.spec.start_timeout) => Err(String::new()),
        };
        if let Err(how) = outcome {
            let taken = port_taken
                .load(Ordering::Relaxed)
                .then_some(&prepared.address);
            return Err(self.not_ready(process, how, taken).await);
        }
        let pid = process.pid();
        if let Some(stats) = self.stats.get() {
            stats.started(started.elapsed());
        }
        tracing::info!(
            app = %self.app,
            pid,
            instance = index,
            "ready in {} ms at {}",
            started.elapsed().as_millis(),
            prepared.address
        );
        let instance = Instance {
            pid,
            upstream: Arc::new(Upstream::new(prepared.address, 1)),
            stop: CancellationToken::new(),
            ready_at: Instant::now(),
        };
        Ok((instance, process))
    }

    /// The failure of a start that did not get ready: it exited (`how`), or timed out (`how` is
    /// empty) and is stopped. `port_taken`: the port mode address another process held.
    async fn not_ready(
        &self,
        mut process: AppProcess,
        how: String,
        port_taken: Option<&Address>,
    ) -> StartFailure {
        let (status, mut reason) = if how.is_empty() {
            process.stop(self.spec.stop_timeout).await;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "it did not become ready within {} (start_timeout)",
                    humantime::format_duration(self.spec.start_timeout)
                ),
            )
        } else {
            (
                StatusCode::BAD_GATEWAY,
                format!("it {how} before it was ready"),
            )
        };
        if let Some(address) = port_taken {
            reason.push_str(&format!(
                ": another process took its port ({address}) before it listened there"
            ));
        }
        let output = process.last_output();
        StartFailure {
            status,
            log: format!("cannot start: {reason}{}", quote(&output)),
            reason,
            port_taken: port_taken.is_some(),
        }
    }

    /// The launch of instance `index`: its user, socket or port, notify socket and environment.
    fn prepare(&self, index: usize) -> Result<Prepared, StartFailure> {
        let spec = &self.spec;
        let user = match &spec.user {
            Some(name) => {
                let user = Credentials::lookup(name, spec.group.as_deref())
                    .map_err(|e| StartFailure::setup(std::io::Error::other(e)))?;
                let switch = Switch::to(user.uid, user.gid, &user.groups);
                let notify = spec.ready == ReadyCheck::Notify;
                privilege::check_switch(name, switch, notify)
                    .map_err(StartFailure::not_permitted)?;
                Some(user)
            }
            None => None,
        };
        self.prepare_as(index, user).map_err(StartFailure::setup)
    }

    fn prepare_as(&self, index: usize, user: Option<Credentials>) -> std::io::Result<Prepared> {
        let spec = &self.spec;
        let dir = ready::apps_dir(&self.runtime_dir)?;
        let mut env = spec.env.clone();
        let mut command = spec.command.clone();
        let (address, socket) = match spec.listen {
            ListenMode::Socket => {
                let (fd, path) = ready::bind_app_socket(&dir, &self.app, index)?;
                let socket = HandedSocket {
                    fd: Arc::new(fd),
                    name: self.app.clone(),
                };
                (Address::Unix(path), Some(socket))
            }
            ListenMode::Port => {
                let port = ready::free_port()?;
                env.push(("PORT".into(), port.to_string()));
                for arg in &mut command {
                    *arg = arg.replace("{port}", &port.to_string());
                }
                let address = Address::Tcp {
                    host: "127.0.0.1".into(),
                    port,
                };
                (address, None)
            }
        };
        let notify = if spec.ready == ReadyCheck::Notify {
            let owner = user.as_ref().map(|u| u.uid);
            let (socket, path) = ready::bind_notify_socket(&dir, &self.app, index, owner)?;
            env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
            Some(socket)
        } else {
            None
        };
        let launch = LaunchSpec {
            app: self.app.clone(),
            command,
            working_dir: spec.working_dir.clone(),
            env,
            user,
            nice: spec.nice,
            io_priority: spec.io_priority,
            limits: spec.process_limits,
            socket,
        };
        Ok(Prepared {
            launch,
            address,
            notify,
        })
    }

    /// Stops every instance and waits until each has exited.
    async fn stop_all(
        &self,
        instances: &mut [Option<Instance>],
        exits: &mut mpsc::UnboundedReceiver<Exit>,
    ) {
        let mut left: Vec<u32> = instances.iter().flatten().map(|i| i.pid).collect();
        if left.is_empty() {
            return;
        }
        self.publish(Status::Stopping);
        for instance in instances.iter().flatten() {
            instance.stop.cancel();
        }
        while !left.is_empty() {
            let Some(exit) = exits.recv().await else {
                break;
            };
            left.retain(|&pid| pid != exit.pid);
            if let Some(slot) = instances.get_mut(exit.index) {
                if slot.as_ref().is_some_and(|i| i.pid == exit.pid) {
                    *slot = None;
                }
            }
            tracing::info!(app = %self.app, pid = exit.pid, "stopped: {}", exit.how);
            if let Some(stats) = self.stats.get() {
                stats.exited(&exit.how, false);
            }
        }
        self.note_running(instances);
    }
}

/// Watches one instance's process: reports its exit, or stops it when told to.
fn spawn_watcher(
    app: String,
    index: usize,
    mut process: AppProcess,
    stop: CancellationToken,
    stop_timeout: Duration,
    exits: mpsc::UnboundedSender<Exit>,
) {
    tokio::spawn(async move {
        let pid = process.pid();
        let status = tokio::select! {
            status = process.wait() => status,
            _ = stop.cancelled() => process.stop(stop_timeout).await,
        };
        let exit = Exit {
            index,
            pid,
            how: process::describe_exit(status),
            last_output: process.last_output(),
        };
        if exits.send(exit).is_err() {
            tracing::debug!(app, pid, "exit reported after the app's task ended");
        }
    });
}

/// " Last output: a | b" with the last few lines the app printed, or nothing.
fn quote(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(QUOTED_LINES);
    format!(". Last output: {}", lines[start..].join(" | "))
}

fn running(instances: &[Option<Instance>]) -> usize {
    instances.iter().flatten().count()
}

#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Idle,
    Exited,
    Shutdown,
}

/// A running instance, as the app's task knows it.
struct Instance {
    pid: u32,
    upstream: Arc<Upstream>,
    /// Cancelled to make the watcher stop the process.
    stop: CancellationToken,
    ready_at: Instant,
}

/// How an instance's process ended.
struct Exit {
    index: usize,
    pid: u32,
    how: String,
    last_output: Vec<String>,
}

struct Prepared {
    launch: LaunchSpec,
    address: Address,
    notify: Option<tokio::net::UnixDatagram>,
}

/// Why a start failed: what requests are told, and what the log says.
struct StartFailure {
    status: StatusCode,
    reason: String,
    log: String,
    /// Port mode: another process held the app's port, so a start on another port may work.
    port_taken: bool,
}

impl StartFailure {
    /// ondemand lacks the privilege to run the app as its user: a deployment error, not the
    /// app's, and it will not go away by retrying (500, with the whole explanation).
    fn not_permitted(message: String) -> StartFailure {
        StartFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            log: format!("cannot start: {message}"),
            reason: message,
            port_taken: false,
        }
    }

    fn setup(e: std::io::Error) -> StartFailure {
        StartFailure {
            status: StatusCode::BAD_GATEWAY,
            reason: format!("it cannot be started: {e}"),
            log: format!("cannot start: {e}"),
            port_taken: false,
        }
    }
}

/// Failed starts and quick exits in a row, and the backoff they earn.
#[derive(Default)]
struct Failures {
    in_a_row: u32,
    backoff_until: Option<Instant>,
}

impl Failures {
    /// Counts one more failure; returns the pause when it puts the app in backoff.
    fn record(&mut self) -> Option<Duration> {
        self.in_a_row += 1;
        let beyond = self.in_a_row.checked_sub(FAILURES_BEFORE_BACKOFF)?;
        let pause = FIRST_BACKOFF
            .saturating_mul(1 << beyond.min(16))
            .min(MAX_BACKOFF);
        self.backoff_until = Some(Instant::now() + pause);
        Some(pause)
    }

    fn reset(&mut self) {
        self.in_a_row = 0;
        self.backoff_until = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_the_third_failure_and_doubles_up_to_a_minute() {
        let mut f = Failures::default();
        assert_eq!(f.record(), None);
        assert_eq!(f.record(), None);
        assert_eq!(f.record(), Some(Duration::from_secs(1)));
        assert_eq!(f.record(), Some(Duration::from_secs(2)));
        assert_eq!(f.record(), Some(Duration::from_secs(4)));
        for _ in 0..20 {
            f.record();
        }
        assert_eq!(f.record(), Some(MAX_BACKOFF));
        f.reset();
        assert_eq!(f.record(), None);
    }
}
