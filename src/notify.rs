//! Talking to systemd through `NOTIFY_SOCKET` (Type=notify): READY=1 once serving, STATUS= with a
//! one-line summary, STOPPING=1 at exit, and WATCHDOG=1 at half the interval systemd asks for.
//! Without `NOTIFY_SOCKET` (xinetd, a terminal) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// READY=1 plus a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS= only.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// STOPPING=1 plus why.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pings the watchdog at half the interval in `WATCHDOG_USEC`, for as long as the task lives.
/// Returns None when systemd asked for no watchdog.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = (interval / 2).max(Duration::from_millis(10));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
