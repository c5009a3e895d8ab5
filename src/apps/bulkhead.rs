//! The bulkhead around one app: at most `max_concurrency` requests inside it at once, at most
//! `max_queue` waiting for a place, each for at most `queue_timeout`. An app that hangs on every
//! request fills its own places and queue and then answers 503 at once; it never holds a thread,
//! a connection slot or a place belonging to another app.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Places and queue of one app.
#[derive(Debug)]
pub struct Bulkhead {
    places: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
    /// When a refusal was last logged, and how many since went unlogged: a flood of 503s is one
    /// log line a second, not one per request.
    last_logged: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

/// Why a request got no place.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// The queue was full on arrival.
    QueueFull(usize),
    /// It waited `queue_timeout` without getting a place.
    Waited(Duration),
}

impl Bulkhead {
    pub fn new(max_concurrency: usize, max_queue: usize, queue_timeout: Duration) -> Bulkhead {
        Bulkhead {
            places: Arc::new(Semaphore::new(max_concurrency)),
            queued: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
            last_logged: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Whether a refusal should be logged now (at most once a second), and how many refusals
    /// went unlogged before it.
    pub fn log_refusal(&self) -> Option<u64> {
        let mut last = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last
            .0
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            last.1 += 1;
            return None;
        }
        let unlogged = last.1;
        *last = (Some(now), 0);
        Some(unlogged)
    }

    /// A place in the app, held until the permit drops (when the response body ends).
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Full> {
        if let Ok(permit) = self.places.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Full::QueueFull(self.max_queue));
        }
        let waited =
            tokio::time::timeout(self.queue_timeout, self.places.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Full::Waited(self.queue_timeout)),
        }
    }

    /// Requests waiting for a place now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn places_then_a_bounded_queue_then_503() {
        let b = Arc::new(Bulkhead::new(2, 1, Duration::from_secs(5)));
        let first = b.enter().await.unwrap();
        let _second = b.enter().await.unwrap();
        let queued = {
            let b = b.clone();
            tokio::spawn(async move { b.enter().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        assert_eq!(b.enter().await.err(), Some(Full::QueueFull(1)));
        drop(first);
        assert_eq!(queued.await.unwrap(), Ok(()));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second() {
        let b = Bulkhead::new(1, 1, Duration::from_secs(1));
        assert_eq!(b.log_refusal(), Some(0));
        assert_eq!(b.log_refusal(), None);
        assert_eq!(b.log_refusal(), None);
        b.last_logged.lock().unwrap().0 = Some(std::time::Instant::now() - Duration::from_secs(2));
        assert_eq!(b.log_refusal(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gives_up_after_queue_timeout() {
        let b = Bulkhead::new(1, 5, Duration::from_secs(5));
        let _held = b.enter().await.unwrap();
        assert_eq!(
            b.enter().await.err(),
            Some(Full::Waited(Duration::from_secs(5)))
        );
        assert_eq!(b.queued(), 0);
    }
}
