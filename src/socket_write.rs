//! Writes to connected sockets with `send(2)`, not `writev(2)`: the clients' connections and the
//! upstream ones alike.
//!
//! tokio writes a socket as a file would be written: `writev` passes the file layer (the position
//! lock, the file-permission security hook, fsnotify) and hands the kernel an iovec to import
//! before it reaches the socket's send. `send` goes to the socket at once, with one plain user
//! buffer, the kernel's quickest copy. Measured on the reference machine (BENCHMARKS.md,
//! scripts/bench/writes.c): a small write on loopback TCP costs 0.25–0.45 µs less, and a proxied
//! keep-alive request makes two; the front's CPU per proxied request fell 4% (scripts/bench-ab).
//! nginx writes with `writev`.
//!
//! Several buffers (hyper hands over a response head and its body apart) are joined into one
//! when they are small, and sent with `sendmsg` as they are when they are not: the copy costs
//! less than the iovec up to a few KB. The bytes, their order and every error are the same as
//! with `writev`; `MSG_NOSIGNAL` makes a write to a closed peer an `EPIPE` error with no
//! SIGPIPE (which Rust ignores anyway). Reads, flushes and shutdowns pass to the stream unchanged.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::sys::socket::{self, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Several buffers up to this many bytes in all are joined into one and sent with `send`.
const JOIN_AT_MOST: usize = 4096;
/// Most buffers handed to one `sendmsg` (Linux's `IOV_MAX`).
const MAX_BUFFERS: usize = 1024;

thread_local! {
    /// Where small buffers are joined: one per runtime thread, reused by every write.
    static JOINED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(JOIN_AT_MOST));
}

/// A connected tokio socket whose writes are `send` (or `sendmsg`).
#[derive(Debug)]
pub struct SocketWriter<S>(pub S);

/// The readiness of a tokio socket: a write waits for it, and clears it when the socket is full.
pub trait Socket: AsRawFd {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Socket for TcpStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        TcpStream::try_io(self, interest, f)
    }
}

impl Socket for UnixStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_write_ready(self, cx)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UnixStream::try_io(self, interest, f)
    }
}

impl<S: Socket> SocketWriter<S> {
    /// Sends what it can of `bufs` once the socket is writable. A short write means the socket's
    /// buffer is full: its readiness is cleared then, as tokio's own writes do, so the next write
    /// waits for room instead of making a system call that would only say "full".
    fn poll_send(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let fd = self.0.as_raw_fd();
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let mut short = 0;
            let sent = self.0.try_io(Interest::WRITABLE, || {
                let (sent, offered) = send(fd, bufs)?;
                if sent > 0 && sent < offered {
                    short = sent;
                    return Err(io::ErrorKind::WouldBlock.into()); // clears the readiness
                }
                Ok(sent)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => {
                    return Poll::Ready(Ok(short))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// One system call sending `bufs` in order. Returns how many bytes went, and how many were offered
/// to the kernel (fewer than `bufs` hold past `MAX_BUFFERS`): only a shorter send than that says
/// the socket is full.
fn send(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<(usize, usize)> {
    let flags = MsgFlags::MSG_NOSIGNAL;
    let bufs = &bufs[..bufs.len().min(MAX_BUFFERS)];
    let offered: usize = bufs.iter().map(|b| b.len()).sum();
    let sent = match bufs {
        [] => Ok(0),
        [one] => socket::send(fd, one, flags),
        several if offered <= JOIN_AT_MOST => JOINED.with_borrow_mut(|joined| {
            joined.clear();
            for buf in several {
                joined.extend_from_slice(buf);
            }
            socket::send(fd, joined, flags)
        }),
        several => socket::sendmsg::<()>(fd, several, &[], flags, None),
    };
    Ok((sent?, offered))
}

impl<S: AsyncRead + Unpin> AsyncRead for SocketWriter<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: Socket + AsyncWrite + Unpin> AsyncWrite for SocketWriter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn tcp_pair() -> (SocketWriter<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (SocketWriter(client.unwrap()), accepted.unwrap().0)
    }

    /// Writes `bufs` with one vectored write after another until all are sent.
    async fn write_all_vectored(writer: &mut SocketWriter<TcpStream>, bufs: &[&[u8]]) {
        let mut skip = 0;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        while skip < total {
            let mut rest = Vec::new();
            let mut at = 0;
            for b in bufs {
                if at + b.len() > skip {
                    rest.push(IoSlice::new(&b[skip.saturating_sub(at)..]));
                }
                at += b.len();
            }
            // Bounded: a write waiting on readiness that never comes would hang here.
            let write = poll_fn(|cx| Pin::new(&mut *writer).poll_write_vectored(cx, &rest));
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), write)
                .await
                .expect("a write waits for room on a socket that has it")
                .unwrap();
            assert!(n > 0);
            skip += n;
        }
    }

    #[tokio::test]
    async fn small_buffers_arrive_joined_in_order() {
        let (mut writer, mut reader) = tcp_pair().await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        write_all_vectored(&mut writer, &[head, b"he", b"", b"llo"]).await;
        let mut got = vec![0u8; head.len() + 5];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [&head[..], b"hello"].concat());
    }

    #[tokio::test]
    async fn large_buffers_arrive_in_order() {
        let (mut writer, mut reader) = tcp_pair().await;
        let a: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        assert!(a.len() + b.len() > JOIN_AT_MOST);
        write_all_vectored(&mut writer, &[&a, &b]).await;
        let mut got = vec![0u8; a.len() + b.len()];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [a, b].concat());
    }

    /// A writer faster than its reader fills the socket, waits (no busy loop, no lost bytes),
    /// and finishes once the reader catches up.
    #[tokio::test]
    async fn a_full_socket_waits_for_room() {
        let (mut writer, mut reader) = tcp_pair().await;
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let rounds = 64; // 4 MB: far beyond loopback's socket buffers
        let write = async {
            for _ in 0..rounds {
                write_all_vectored(&mut writer, &[&chunk[..100], &chunk[100..]]).await;
            }
            writer.shutdown().await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(write, read);
        assert_eq!(got.len(), chunk.len() * rounds);
        assert!(got.chunks(chunk.len()).all(|c| c == &chunk[..]));
    }

    /// More buffers than one `sendmsg` takes: the rest go in the next write, and the socket,
    /// not full, is not waited on.
    #[tokio::test]
    async fn more_buffers_than_one_sendmsg_takes() {
        let (mut writer, mut reader) = tcp_pair().await;
        let pieces: Vec<Vec<u8>> = (0..MAX_BUFFERS as u32 + 500)
            .map(|i| vec![(i % 256) as u8; 8])
            .collect();
        let bufs: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        write_all_vectored(&mut writer, &bufs).await;
        let mut got = vec![0u8; 8 * pieces.len()];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(got, pieces.concat());
    }

    #[tokio::test]
    async fn a_closed_peer_is_an_error() {
        let (mut writer, reader) = tcp_pair().await;
        drop(reader);
        let mut result = Ok(());
        for _ in 0..100 {
            result = writer.write_all(b"anyone there?").await;
            if result.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let kind = result.unwrap_err().kind();
        assert!(
            matches!(
                kind,
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{kind:?}"
        );
    }

    /// Unix-socket upstreams and listeners are written the same way.
    #[tokio::test]
    async fn unix_sockets_are_written_too() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut writer = SocketWriter(a);
        poll_fn(|cx| {
            Pin::new(&mut writer)
                .poll_write_vectored(cx, &[IoSlice::new(b"ab"), IoSlice::new(b"c")])
        })
        .await
        .unwrap();
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");
    }
}
