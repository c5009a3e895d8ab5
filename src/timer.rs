//! Deadlines that move on every request but rarely pass, at the cost of one tokio timer each.
//!
//! Re-arming a tokio timer earlier takes it out of the runtime's timer wheel and puts it back;
//! making one and dropping it does the same. A keep-alive connection moves its head deadline twice
//! a request (see `server::io`) and every proxied request has a response deadline (the app's
//! `timeout`): several wheel operations per request, for deadlines that practically never pass.
//!
//! - [`LazyDeadline`] moves its deadline later without touching the timer: the timer fires at the
//!   earlier time, finds that the deadline has moved, and is re-armed then, once.
//! - [`TimerSlot`] lends a connection's timer to one request at a time, so the requests of an
//!   HTTP/1 connection, which come one after another, share one timer instead of each making
//!   its own; a request that finds it lent out (HTTP/2 streams run side by side) makes its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// A deadline, and a timer that fires no later than it.
#[derive(Debug)]
pub struct LazyDeadline {
    /// Armed at or before `deadline`.
    sleep: Pin<Box<Sleep>>,
    deadline: Instant,
    /// The task the armed timer will wake, once it has been polled since it was last armed:
    /// polling it again for the same task changes nothing (and a connection's reads poll their
    /// deadline every time they wait).
    waker: Option<Waker>,
}

impl LazyDeadline {
    pub fn new(deadline: Instant) -> LazyDeadline {
        LazyDeadline {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
            waker: None,
        }
    }

    /// `deadline` on an existing timer (armed anywhere, for the task of `waker`).
    fn on(sleep: Pin<Box<Sleep>>, waker: Option<Waker>, deadline: Instant) -> LazyDeadline {
        let mut lazy = LazyDeadline {
            sleep,
            deadline,
            waker,
        };
        lazy.set(deadline);
        lazy
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline. The timer is re-armed now only when the deadline comes earlier than it.
    pub fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.sleep.deadline() {
            self.sleep.as_mut().reset(deadline);
            self.waker = None;
        }
    }

    /// Ready once the deadline has passed; until then, `cx` is woken by the deadline at the latest.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let armed_for_this_task = self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if armed_for_this_task && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                if !armed_for_this_task {
                    self.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if self.sleep.deadline() >= self.deadline {
                return Poll::Ready(());
            }
            // The timer fired at an earlier deadline: the real one moved later since.
            self.sleep.as_mut().reset(self.deadline);
        }
    }
}

/// A connection's timer for its requests' deadlines, lent to one request at a time, with the task
/// it was last armed for (under HTTP/1, the connection's: the next request needs no new
/// registration).
#[derive(Debug, Default)]
pub struct TimerSlot(Mutex<Option<Free>>);

/// A timer in its slot, and the task it was last armed for.
type Free = (Pin<Box<Sleep>>, Option<Waker>);

impl TimerSlot {
    /// A deadline at `deadline`: on this slot's timer when it is free, else on a new one.
    pub fn lend(&self, deadline: Instant) -> LentDeadline<'_> {
        let sleep = self.lock().take();
        LentDeadline {
            slot: Some(self),
            inner: Some(match sleep {
                Some((sleep, waker)) => LazyDeadline::on(sleep, waker, deadline),
                None => LazyDeadline::new(deadline),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Free>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A deadline on a timer that goes back to its [`TimerSlot`] when this is dropped.
#[derive(Debug)]
pub struct LentDeadline<'a> {
    slot: Option<&'a TimerSlot>,
    /// Always `Some` until dropped.
    inner: Option<LazyDeadline>,
}

impl LentDeadline<'_> {
    /// A deadline on a timer of its own.
    pub fn own(deadline: Instant) -> LentDeadline<'static> {
        LentDeadline {
            slot: None,
            inner: Some(LazyDeadline::new(deadline)),
        }
    }

    /// See [`LazyDeadline::poll_passed`].
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.inner {
            Some(inner) => inner.poll_passed(cx),
            None => Poll::Pending,
        }
    }
}

impl Drop for LentDeadline<'_> {
    fn drop(&mut self) {
        if let (Some(slot), Some(inner)) = (self.slot, self.inner.take()) {
            let mut free = slot.lock();
            if free.is_none() {
                *free = Some((inner.sleep, inner.waker));
            }
        }
    }
}

/// Runs `future` until it completes (`Some`) or `deadline` passes (`None`). The future is pinned
/// by the caller: taken by value, it would be in this function's state twice (as the argument and
/// as the pinned local), and copied from one to the other.
pub async fn within<F: Future>(
    deadline: &mut LentDeadline<'_>,
    mut future: Pin<&mut F>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        deadline.poll_passed(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_passes_at_its_new_time() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::new(start + Duration::from_secs(5));
        deadline.set(start + Duration::from_secs(8));
        std::future::poll_fn(|cx| deadline.poll_passed(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(8));
        // Earlier again: the timer is re-armed at once.
        let now = Instant::now();
        deadline.set(now + Duration::from_secs(1));
        std::future::poll_fn(|cx| deadline.poll_passed(cx)).await;
        assert_eq!(now.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_polled_by_another_task_first_still_wakes_this_one() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::new(start + Duration::from_secs(5));
        let mut elsewhere = Context::from_waker(Waker::noop());
        assert!(deadline.poll_passed(&mut elsewhere).is_pending());
        let passed = std::future::poll_fn(|cx| deadline.poll_passed(cx));
        let waited = tokio::time::timeout(Duration::from_secs(10), passed).await;
        assert!(waited.is_ok(), "this task was never woken");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lent_timer_goes_back_and_serves_the_next_deadline() {
        let slot = TimerSlot::default();
        let start = Instant::now();
        let mut first = slot.lend(start + Duration::from_secs(60));
        let done = within(&mut first, std::pin::pin!(async { 1 })).await;
        assert_eq!(done, Some(1));
        // While lent out, another request gets a timer of its own.
        let mut second = slot.lend(start + Duration::from_secs(2));
        assert!(slot.lock().is_none());
        drop(first);
        assert!(slot.lock().is_some(), "the first timer is back");
        let timed_out = within(&mut second, std::pin::pin!(std::future::pending::<()>())).await;
        assert_eq!(timed_out, None);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        drop(second);
        // The next deadline, later than the one the slot's timer is armed at, passes on time.
        let now = Instant::now();
        let mut third = slot.lend(now + Duration::from_secs(90));
        let timed_out = within(&mut third, std::pin::pin!(std::future::pending::<()>())).await;
        assert_eq!(timed_out, None);
        assert_eq!(now.elapsed(), Duration::from_secs(90));
    }
}
