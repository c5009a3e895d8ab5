//! A request body on its way upstream, cut off when the client stops sending it.
//!
//! The head deadlines ([`crate::server`]) stop applying once a request is being served, and the
//! app's `timeout` only runs until the upstream's response head. An upstream that answers before
//! it has read the whole body (or a client that trickles a body to one that waits for it) would
//! otherwise let a client hold a connection, an upstream connection and a place in
//! `max_connections` for as long as it likes by sending nothing more. So each wait for the next
//! piece of the body is bounded by the app's `timeout`, as nginx bounds it by
//! `client_body_timeout`; a body that stalls longer fails with [`BodyStalled`], the upstream
//! connection is dropped mid-request, and the client gets `408` (or, when the response has
//! begun already, a closed connection).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::handlers::{BodyInService, BoxError};

/// The error of a body that stalled: nothing of it arrived for `after`.
#[derive(Debug)]
pub struct BodyStalled {
    pub after: Duration,
}

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the client sent nothing more of the request body for {}",
            humantime::format_duration(self.after)
        )
    }
}

impl std::error::Error for BodyStalled {}

/// `inner`, failing with [`BodyStalled`] when a wait for its next frame lasts longer than `idle`.
pub struct StallLimited<B> {
    inner: B,
    idle: Duration,
    /// Armed while a frame is awaited; reset each time one arrives. Made at the first wait, so a
    /// body that is empty or arrives whole costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Tells the connection its reads are this body's while it lives.
    _reading: Option<BodyInService>,
}

impl<B> StallLimited<B> {
    pub fn new(inner: B, idle: Duration, reading: Option<BodyInService>) -> Self {
        StallLimited {
            inner,
            idle,
            timer: None,
            waiting: false,
            _reading: reading,
        }
    }
}

impl<B> HttpBody for StallLimited<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyStalled { after: this.idle }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_fails_after_the_idle_time() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut body = StallLimited::new(
            StreamBody::new(Box::pin(stream)),
            Duration::from_secs(5),
            None,
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        // 4 s of silence, then a frame: still within the idle time.
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let _ = sender.send(Ok(Frame::data(Bytes::from_static(b"b")))).await;
        });
        let second = body.frame().await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap(), "b");
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(err.is::<BodyStalled>(), "{err}");
        drop(tx);
    }
}
