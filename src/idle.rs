//! Activity tracking and the idle timer: the launcher exits when nothing has been going on for
//! `idle_timeout`.
//!
//! Activity is open work: a request in flight (until its response body is fully sent), an upgraded
//! or streaming connection still open, and a new connection that has not yet sent its first request
//! (bounded by `first_request_timeout`). Idle keep-alive connections are not activity. Each piece
//! of activity holds an [`ActivityGuard`]; the launcher is idle once no guard has existed for
//! `idle_timeout`. The timer also runs from startup, so a launcher whose triggering connection
//! vanished still exits on time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Counts open work. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Activity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Woken when the count drops to zero, so the idle timer can start counting.
    became_idle: Notify,
}

#[derive(Debug)]
struct State {
    active: usize,
    /// When a counted piece of activity last ended (or startup): with nothing active, the idle
    /// countdown runs from here.
    idle_since: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    active: 0,
                    idle_since: Instant::now(),
                }),
                became_idle: Notify::new(),
            }),
        }
    }
}

impl Activity {
    /// Marks the start of a piece of activity; it lasts until the guard is dropped.
    pub fn begin(&self) -> ActivityGuard {
        self.lock().active += 1;
        ActivityGuard {
            inner: Some(self.inner.clone()),
        }
    }

    /// How many pieces of activity are open now.
    pub fn active(&self) -> usize {
        self.lock().active
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is never held across a panic-prone call; recover the data if it ever was.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once there has been no activity for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let notified = self.inner.became_idle.notified();
            tokio::pin!(notified);
            // Register before reading the state, so a drop to zero in between is not missed.
            notified.as_mut().enable();
            let deadline = {
                let state = self.lock();
                (state.active == 0).then(|| state.idle_since + timeout)
            };
            match deadline {
                None => notified.await,
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
            }
        }
    }
}

/// One piece of activity; dropping it ends it.
#[derive(Debug)]
pub struct ActivityGuard {
    inner: Option<Arc<Inner>>,
}

impl ActivityGuard {
    /// Ends the activity now (same as dropping the guard).
    pub fn end(mut self) {
        self.release();
    }

    /// Ends the activity at `now`, a time the caller has just read (one clock read fewer).
    pub fn end_at(mut self, now: Instant) {
        self.finish(Some(now));
    }

    /// Takes the activity back as if it had never been: the idle countdown goes on from the end
    /// of the last real activity (a health probe's connection, once it is known to be one).
    pub fn cancel(mut self) {
        self.finish(None);
    }

    fn release(&mut self) {
        if self.inner.is_some() {
            self.finish(Some(Instant::now()));
        }
    }

    /// Ends the activity; `ended_at` (`None`: not counted) is the new start of the idle countdown.
    fn finish(&mut self, ended_at: Option<Instant>) {
        if let Some(inner) = self.inner.take() {
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.active -= 1;
            if let Some(at) = ended_at {
                state.idle_since = at;
            }
            if state.active == 0 {
                drop(state);
                inner.became_idle.notify_waiters();
            }
        }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn is_idle_after(activity: &Activity, timeout: Duration, wait: Duration) -> bool {
        tokio::time::timeout(wait, activity.idle_for(timeout))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timer_runs_from_startup() {
        let activity = Activity::default();
        assert!(!is_idle_after(&activity, Duration::from_secs(30), Duration::from_secs(29)).await);
        assert!(is_idle_after(&activity, Duration::from_secs(30), Duration::from_secs(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn activity_holds_off_idle_for_as_long_as_it_lasts() {
        let activity = Activity::default();
        let guard = activity.begin();
        assert!(!is_idle_after(&activity, Duration::from_secs(1), Duration::from_secs(100)).await);
        drop(guard);
        // The timeout counts from the end of the activity, not from its start.
        assert!(
            !is_idle_after(
                &activity,
                Duration::from_secs(1),
                Duration::from_millis(900)
            )
            .await
        );
        assert!(
            is_idle_after(
                &activity,
                Duration::from_secs(1),
                Duration::from_millis(200)
            )
            .await
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_activity_restarts_the_countdown() {
        let activity = Activity::default();
        tokio::time::advance(Duration::from_millis(900)).await;
        activity.begin().end();
        assert!(
            !is_idle_after(
                &activity,
                Duration::from_secs(1),
                Duration::from_millis(900)
            )
            .await
        );
        assert!(
            is_idle_after(
                &activity,
                Duration::from_secs(1),
                Duration::from_millis(200)
            )
            .await
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_activity_does_not_restart_the_countdown() {
        let activity = Activity::default();
        tokio::time::advance(Duration::from_millis(900)).await;
        let probe = activity.begin();
        tokio::time::advance(Duration::from_millis(50)).await;
        probe.cancel();
        // Idle since startup: 950 ms passed, so 1 s is reached 50 ms later.
        assert!(
            is_idle_after(
                &activity,
                Duration::from_secs(1),
                Duration::from_millis(100)
            )
            .await
        );
    }

    #[tokio::test(start_paused = true)]
    async fn counts_overlapping_activity() {
        let activity = Activity::default();
        let a = activity.begin();
        let b = activity.begin();
        assert_eq!(activity.active(), 2);
        drop(a);
        assert!(!is_idle_after(&activity, Duration::from_secs(1), Duration::from_secs(5)).await);
        drop(b);
        assert_eq!(activity.active(), 0);
        assert!(is_idle_after(&activity, Duration::from_secs(1), Duration::from_secs(2)).await);
    }
}
