//! The deadlines on a connection while it waits for a request head, enforced on its reads.
//!
//! hyper's own header timeout closes a slow connection without a word, and hyper-util's HTTP/1 +
//! h2c detection has no timeout at all, so the waits are enforced here, below both:
//! - a new connection must start its first request within `first_request_timeout` of being
//!   accepted (on an HTTPS socket the TLS handshake comes out of that time too);
//! - an idle keep-alive connection is closed after `keepalive_timeout`;
//! - once a request head has begun, it must be complete within `header_read_timeout`, or the
//!   client gets `408 Request Timeout` (HTTP/1 only) and the connection is closed (slowloris).
//!
//! While a request is being served the reads are its body's, and these deadlines do not apply;
//! a request is served until its response is sent and its body read (or given up): an upstream
//! may answer before it has read the body. A stalled body is bounded where it is read (the proxy
//! gives it the app's `timeout`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::idle::ActivityGuard;
use crate::proxy::headers::{ForwardedCache, PeerAddress};
use crate::timer::{LazyDeadline, TimerSlot};

/// What the server knows about one connection, shared by its reads and its requests.
#[derive(Debug)]
pub struct ConnState {
    /// The client's address; `None` for a unix-socket peer.
    pub peer: Option<std::net::IpAddr>,
    /// The same with its text for the forwarding fields, made once for all its requests.
    pub peer_address: Option<PeerAddress>,
    /// It came in on a socket that speaks TLS: its requests are `https`.
    pub tls: bool,
    /// When it was accepted; the first request is due `first_request_timeout` after this.
    pub accepted_at: Instant,
    /// Requests whose response has not been sent completely.
    in_service: AtomicUsize,
    /// Requests completed so far; a change starts a new wait for the next head.
    completed: AtomicU64,
    first_request_seen: AtomicBool,
    /// Woken when the first request arrives (shutdown waits for it before closing).
    first_request: Notify,
    /// Activity held from accept until the first request: a client about to speak must not see
    /// the launcher exit under it.
    until_first_request: Mutex<Option<ActivityGuard>>,
    /// The task reading the connection while a request was in service; woken when the request
    /// completes so that the wait for the next head (and its deadline) starts at once.
    reader: Mutex<Option<Waker>>,
    /// The timer of its requests' deadlines (the proxy's `timeout`), shared by its requests.
    pub request_timer: TimerSlot,
    /// Its last request's Forwarded element, for the next.
    pub forwarded: ForwardedCache,
}

impl ConnState {
    pub fn new(
        until_first_request: ActivityGuard,
        peer: Option<std::net::IpAddr>,
        tls: bool,
        accepted_at: Instant,
    ) -> Self {
        ConnState {
            peer,
            peer_address: peer.map(PeerAddress::new),
            tls,
            accepted_at,
            in_service: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            first_request_seen: AtomicBool::new(false),
            first_request: Notify::new(),
            until_first_request: Mutex::new(Some(until_first_request)),
            reader: Mutex::new(None),
            request_timer: TimerSlot::default(),
            forwarded: ForwardedCache::default(),
        }
    }

    /// When the first request must have begun (the TLS handshake included).
    pub fn first_request_deadline(&self, first_request_timeout: Duration) -> Instant {
        self.accepted_at + first_request_timeout
    }

    /// A request head arrived and is being served. A health probe (`probe`) takes back the
    /// activity its connection held, so probes never keep the launcher up.
    pub fn request_started(&self, probe: bool) {
        self.in_service.fetch_add(1, Ordering::SeqCst);
        if !self.first_request_seen.swap(true, Ordering::SeqCst) {
            if probe {
                let guard = self
                    .until_first_request
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(guard) = guard {
                    guard.cancel();
                }
            } else {
                self.release_first_request_activity();
            }
            self.first_request.notify_waiters();
        }
    }

    /// A request's body is being read: the connection's reads are the body's until the returned
    /// guard drops, even after the response has been sent.
    pub fn body_started(self: &Arc<Self>) -> BodyReading {
        self.in_service.fetch_add(1, Ordering::SeqCst);
        BodyReading(self.clone())
    }

    /// A request's response was sent completely (or abandoned).
    pub fn request_finished(&self) {
        self.in_service.fetch_sub(1, Ordering::SeqCst);
        self.completed.fetch_add(1, Ordering::SeqCst);
        if let Some(waker) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            waker.wake();
        }
    }

    fn remember_reader(&self, waker: &Waker) {
        let mut slot = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    pub fn has_seen_first_request(&self) -> bool {
        self.first_request_seen.load(Ordering::SeqCst)
    }

    /// Resolves once the first request has arrived.
    pub async fn first_request_arrived(&self) {
        let notified = self.first_request.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.has_seen_first_request() {
            notified.await;
        }
    }

    fn release_first_request_activity(&self) {
        let guard = self
            .until_first_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(guard);
    }
}

/// A request body still to be read (see [`ConnState::body_started`]).
pub struct BodyReading(Arc<ConnState>);

impl Drop for BodyReading {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The three waits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub first_request: Duration,
    pub header_read: Duration,
    pub keepalive: Duration,
}

/// What the armed timer is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Nothing of the next head has arrived yet.
    ForHead,
    /// Part of a head arrived; the rest is due within `header_read`.
    ForRestOfHead,
}

const REQUEST_TIMEOUT_BODY: &str =
    "ondemand: the request head was not received completely in time\n";

fn request_timeout_response() -> String {
    format!(
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REQUEST_TIMEOUT_BODY}",
        REQUEST_TIMEOUT_BODY.len()
    )
}

/// A connection's byte stream with the head deadlines applied.
pub struct DeadlineIo<T> {
    inner: T,
    conn: Arc<ConnState>,
    deadlines: Deadlines,
    /// Moved twice a request (to the keep-alive wait, then to the rest of the head), which
    /// costs nothing until the timer fires (see `crate::timer`).
    timer: LazyDeadline,
    waiting: Waiting,
    /// `completed` at the start of the current wait; None before the first wait began.
    wait_epoch: Option<u64>,
    /// None until the first bytes show whether this is HTTP/2 (prior knowledge) or HTTP/1.
    is_h2: Option<bool>,
    /// The last write did not go out completely, so hyper may still hold unsent response bytes.
    write_incomplete: bool,
}

impl<T> DeadlineIo<T> {
    pub fn new(inner: T, conn: Arc<ConnState>, deadlines: Deadlines) -> Self {
        let first_request = conn.first_request_deadline(deadlines.first_request);
        DeadlineIo {
            inner,
            conn,
            deadlines,
            timer: LazyDeadline::new(first_request),
            waiting: Waiting::ForHead,
            wait_epoch: None,
            is_h2: None,
            write_incomplete: false,
        }
    }

    fn serving(&self) -> bool {
        self.conn.in_service.load(Ordering::SeqCst) > 0
    }

    /// Starts a new wait for a head if a request completed since the last one began.
    fn arm_for_next_head(&mut self) {
        let epoch = self.conn.completed.load(Ordering::SeqCst);
        if self.wait_epoch == Some(epoch) {
            return;
        }
        self.wait_epoch = Some(epoch);
        self.waiting = Waiting::ForHead;
        let deadline = if self.conn.has_seen_first_request() {
            Instant::now() + self.deadlines.keepalive
        } else {
            self.conn
                .first_request_deadline(self.deadlines.first_request)
        };
        self.timer.set(deadline);
    }

    fn saw_bytes(&mut self, bytes: &[u8]) {
        if self.is_h2.is_none() && !bytes.is_empty() {
            self.is_h2 = Some(bytes.starts_with(b"PRI "));
        }
        // HTTP/2 sends frames (SETTINGS, PING, WINDOW_UPDATE) between requests; only the
        // keep-alive wait applies there.
        if self.waiting == Waiting::ForHead && self.is_h2 == Some(false) && !bytes.is_empty() {
            self.waiting = Waiting::ForRestOfHead;
            self.timer.set(Instant::now() + self.deadlines.header_read);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> DeadlineIo<T> {
    /// The wait ran out: close an idle connection quietly (end of stream to hyper), or answer a
    /// half-sent head with 408 and fail the read.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.release_first_request_activity();
        if self.waiting == Waiting::ForHead {
            return Poll::Ready(Ok(()));
        }
        if !self.write_incomplete {
            // Best effort: a few dozen bytes into an otherwise empty send buffer.
            let _ = Pin::new(&mut self.inner).poll_write(cx, request_timeout_response().as_bytes());
        }
        tracing::debug!(
            "closing a connection whose request head was incomplete after {:?}",
            self.deadlines.header_read
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not completed within header_read_timeout",
        )))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.serving() {
            this.conn.remember_reader(cx.waker());
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.arm_for_next_head();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw_bytes(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.timer.poll_passed(cx) {
                Poll::Ready(()) => this.timed_out(cx),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        this.write_incomplete = !matches!(result, Poll::Ready(Ok(n)) if n == data.len());
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_incomplete = !matches!(result, Poll::Ready(Ok(n)) if n == total);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
