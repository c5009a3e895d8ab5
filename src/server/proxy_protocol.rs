//! The PROXY protocol (HAProxy's; v1 text and v2 binary, parsed by the `ppp` crate) on the sockets
//! `proxy_protocol` names: a load balancer in front of ondemand opens each connection with a
//! header carrying the client's address, and that address becomes the connection's peer for
//! logs, X-Forwarded-For, `trusted_proxies` and metrics.
//!
//! A header that says `LOCAL` (v2; a load balancer's own health check) or `UNKNOWN` (v1) keeps
//! the real peer. A connection without a valid header is refused: closed, with a log line, and
//! if what it sent looks like an HTTP request, a `400` that says why first.
//!
//! The bytes read past the header (the start of the request, or of the TLS handshake) are given
//! back to the connection by [`Rewind`].

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// The longest header accepted: v2's fixed 16 bytes plus its largest payload.
const MAX_HEADER: usize = 16 + u16::MAX as usize;

/// A connection's stream with the bytes read ahead of it (past a PROXY header) put back in front.
/// On sockets without PROXY protocol nothing was read ahead and it only passes reads through.
pub struct Rewind<S> {
    ahead: Vec<u8>,
    /// How much of `ahead` has been read again.
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S) -> Self {
        Rewind {
            ahead: Vec::new(),
            pos: 0,
            inner,
        }
    }

    fn with_ahead(inner: S, ahead: Vec<u8>) -> Self {
        Rewind {
            ahead,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.ahead.len() {
            let n = (self.ahead.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.ahead[start..start + n]);
            self.pos += n;
            if self.pos == self.ahead.len() {
                self.ahead = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("it closed before sending a complete PROXY protocol header ({0} bytes received)")]
    Closed(usize),
    #[error("no PROXY protocol header within first_request_timeout")]
    TimedOut,
    #[error("it began with no valid PROXY protocol header ({0})")]
    Invalid(String),
    #[error("reading its PROXY protocol header failed: {0}")]
    Io(#[from] io::Error),
}

/// What a valid header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The client's address: the connection's peer from now on.
    Address(IpAddr),
    /// `LOCAL` or `UNKNOWN`: the load balancer speaking for itself; the real peer stays.
    Local,
}

/// Reads the PROXY header at the start of `stream` (by `deadline`) and returns the client it
/// names with the stream, any bytes read past the header put back. On an invalid header, answers
/// `400` if the client seems to speak HTTP (`plain_http`), and returns why.
pub async fn read_header<S>(
    mut stream: S,
    deadline: Instant,
    plain_http: bool,
) -> Result<(Client, Rewind<S>), Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(256);
    let parsed = tokio::time::timeout_at(deadline, read_until_parsed(&mut stream, &mut buf))
        .await
        .unwrap_or(Err(Refused::TimedOut));
    match parsed {
        Ok((client, len)) => {
            buf.drain(..len);
            Ok((client, Rewind::with_ahead(stream, buf)))
        }
        Err(refused) => {
            if plain_http && matches!(refused, Refused::Invalid(_)) && looks_like_http(&buf) {
                let _ = tokio::time::timeout_at(deadline, stream.write_all(BAD_REQUEST)).await;
            }
            Err(refused)
        }
    }
}

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
connection: close\r\ncontent-length: 93\r\n\r\n\
400 Bad Request: this socket takes connections from the load balancer only (PROXY protocol).\n";

/// Reads into `buf` until it holds a complete header (or cannot be one); returns the client and
/// the header's length.
async fn read_until_parsed<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(Client, usize), Refused> {
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_HEADER - buf.len()).max(256));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Refused::Closed(buf.len()));
        }
        if let Some(parsed) = parse(buf)? {
            return Ok(parsed);
        }
        if buf.len() >= MAX_HEADER {
            return Err(Refused::Invalid("a header longer than 65551 bytes".into()));
        }
    }
}

/// Parses a header at the start of `bytes`: `None` while it is incomplete.
pub fn parse(bytes: &[u8]) -> Result<Option<(Client, usize)>, Refused> {
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Ok(None);
    }
    let parsed = match header {
        HeaderResult::V1(Ok(h)) => (v1_client(&h.addresses), h.header.len()),
        HeaderResult::V2(Ok(h)) => (v2_client(&h), h.len()),
        HeaderResult::V1(Err(e)) => return Err(Refused::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(Refused::Invalid(e.to_string())),
    };
    Ok(Some(parsed))
}

fn v1_client(addresses: &v1::Addresses) -> Client {
    match addresses {
        v1::Addresses::Tcp4(a) => Client::Address(a.source_address.into()),
        v1::Addresses::Tcp6(a) => Client::Address(IpAddr::from(a.source_address).to_canonical()),
        v1::Addresses::Unknown => Client::Local,
    }
}

fn v2_client(header: &v2::Header) -> Client {
    if header.command == v2::Command::Local {
        return Client::Local;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Client::Address(a.source_address.into()),
        v2::Addresses::IPv6(a) => Client::Address(IpAddr::from(a.source_address).to_canonical()),
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => Client::Local,
    }
}

/// A request line's start: a method token and a space (`GET /`); not a broken PROXY header.
fn looks_like_http(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"PROXY ") {
        return false;
    }
    let method_len = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len > 0 && bytes.get(method_len) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend(((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend(addresses);
        h.extend(tlvs);
        h
    }

    #[test]
    fn v1_names_the_client_and_its_length() {
        let bytes = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 80\r\nGET / HTTP/1.1\r\n";
        let (client, len) = parse(bytes).unwrap().unwrap();
        assert_eq!(client, Client::Address([192, 0, 2, 7].into()));
        assert_eq!(&bytes[len..], b"GET / HTTP/1.1\r\n");
        let bytes = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\nX";
        let (client, _) = parse(bytes).unwrap().unwrap();
        assert_eq!(client, Client::Address("2001:db8::7".parse().unwrap()));
        let (client, len) = parse(b"PROXY UNKNOWN\r\nGET").unwrap().unwrap();
        assert_eq!((client, len), (Client::Local, 15));
    }

    #[test]
    fn v2_names_the_client_keeps_local_and_skips_tlvs() {
        let ipv4 = [198, 51, 100, 9, 10, 0, 0, 1, 0xc7, 0x38, 0, 80];
        let mut bytes = v2_header(1, 0x11, &ipv4, &[0x04, 0, 1, 0xaa]);
        let header_len = bytes.len();
        bytes.extend(b"GET /");
        let (client, len) = parse(&bytes).unwrap().unwrap();
        assert_eq!(client, Client::Address([198, 51, 100, 9].into()));
        assert_eq!(len, header_len);
        let local = v2_header(0, 0x00, &[], &[]);
        assert_eq!(parse(&local).unwrap().unwrap(), (Client::Local, 16));
        // An IPv4-mapped IPv6 client is its IPv4 address, as on a dual-stack socket.
        let mut ipv6 = [0u8; 36];
        ipv6[10..16].copy_from_slice(&[0xff, 0xff, 203, 0, 113, 5]);
        let mapped = v2_header(1, 0x21, &ipv6, &[]);
        let (client, _) = parse(&mapped).unwrap().unwrap();
        assert_eq!(client, Client::Address([203, 0, 113, 5].into()));
    }

    #[test]
    fn an_incomplete_header_waits_and_anything_else_is_refused() {
        assert!(parse(b"PROX").unwrap().is_none());
        assert!(parse(b"\r\n\r\n\0").unwrap().is_none());
        let v2 = v2_header(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], &[]);
        assert!(parse(&v2[..20]).unwrap().is_none());
        for bytes in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROXY TCP4 999.0.2.7 10.0.0.1 1 80\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 80\r\n",
        ] {
            assert!(
                matches!(parse(bytes), Err(Refused::Invalid(_))),
                "{bytes:?} must be refused"
            );
        }
    }

    #[test]
    fn http_is_recognized_to_be_told_why() {
        assert!(looks_like_http(b"GET / HTTP/1.1"));
        assert!(looks_like_http(b"OPTIONS * HTTP/1.1"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(b"PROXY"));
        assert!(!looks_like_http(b"PROXY TCP4 999.1.1.1 10.0.0.1 1 80\r\n"));
    }

    #[tokio::test]
    async fn bytes_past_the_header_are_read_again() {
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 80\r\nGET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let (who, mut stream) = read_header(server, deadline, true).await.unwrap();
        assert_eq!(who, Client::Address([192, 0, 2, 7].into()));
        let mut rest = [0u8; 16];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn plain_http_without_a_header_is_told_why() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let refused = read_header(server, deadline, true).await.err().unwrap();
        assert!(matches!(refused, Refused::Invalid(_)), "{refused}");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");
        let body = &answer[answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let length = format!("content-length: {}\r\n", body.len());
        assert!(answer.windows(length.len()).any(|w| w == length.as_bytes()));
    }
}
