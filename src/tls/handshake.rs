//! The TLS handshake on a new connection: read the ClientHello, choose the certificate by its SNI
//! name, and complete the handshake, all before `deadline` (the connection's
//! `first_request_timeout`: a handshake is part of "before the first request").
//!
//! The ClientHello is read before any TLS settings are chosen (rustls' `Acceptor`), so that a
//! name no certificate serves can be refused with the alert that says so (`unrecognized_name`,
//! RFC 6066 §3), and so that only the chosen certificate's files are ever read.

use std::io;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::StartHandshake;

use super::Certificates;

/// Why a connection got no TLS session. Logged at debug level: clients cause all of these.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within first_request_timeout")]
    TimedOut,
    #[error("the client closed the connection before its ClientHello")]
    Closed,
    #[error("plain HTTP sent to the HTTPS socket (answered 400)")]
    PlainHttp,
    #[error("cannot read the ClientHello: {0}")]
    ClientHello(rustls::Error),
    #[error(
        "no certificate for SNI name {0:?} and no default certificate (refused: unrecognized_name)"
    )]
    UnknownName(String),
    #[error("the client sent no SNI name and there is no default certificate (refused)")]
    NoName,
    #[error("the certificate for {0} could not be loaded (see the error logged for it)")]
    Certificate(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// TLS alert records (RFC 8446 §6), sent in the clear before any TLS settings are chosen.
const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];
const ALERT_HANDSHAKE_FAILURE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];
const ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80];

const PLAIN_HTTP_BODY: &str = "ondemand: this port speaks HTTPS; use an https:// URL to reach it\n";

/// Completes a TLS handshake on `stream` with the certificate its SNI name selects from
/// `certificates`, before `deadline`.
pub async fn accept<S>(
    stream: S,
    certificates: &Certificates,
    deadline: Instant,
) -> Result<TlsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout_at(deadline, handshake(stream, certificates))
        .await
        .unwrap_or(Err(HandshakeError::TimedOut))
}

async fn handshake<S>(
    mut stream: S,
    certificates: &Certificates,
) -> Result<TlsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let accepted = read_client_hello(&mut stream).await?;
    let hello = accepted.client_hello();
    let sni = hello.server_name().map(str::to_string);
    let Some(certificate) = certificates.select(sni.as_deref()) else {
        let (alert, error) = match sni {
            Some(name) => (ALERT_UNRECOGNIZED_NAME, HandshakeError::UnknownName(name)),
            None => (ALERT_HANDSHAKE_FAILURE, HandshakeError::NoName),
        };
        send_and_close(&mut stream, &alert).await;
        return Err(error);
    };
    let config = match certificate.server_config() {
        Ok(config) => config,
        Err(_) => {
            send_and_close(&mut stream, &ALERT_INTERNAL_ERROR).await;
            return Err(HandshakeError::Certificate(
                certificate.cert.display().to_string(),
            ));
        }
    };
    Ok(StartHandshake::from_parts(accepted, stream)
        .into_stream(config)
        .await?)
}

/// Reads until rustls has the whole ClientHello. Anything read after it stays buffered in the
/// returned handshake. A request in plain HTTP gets a 400 saying to use https://.
async fn read_client_hello<S>(stream: &mut S) -> Result<rustls::server::Accepted, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut acceptor = Acceptor::default();
    let mut buf = [0u8; 4096];
    let mut first = true;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        if first && looks_like_http(&buf[..n]) {
            send_and_close(stream, plain_http_response().as_bytes()).await;
            return Err(HandshakeError::PlainHttp);
        }
        first = false;
        let mut unread = &buf[..n];
        while !unread.is_empty() {
            acceptor.read_tls(&mut unread)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => continue,
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                send_and_close(stream, &out).await;
                return Err(HandshakeError::ClientHello(error));
            }
        }
    }
}

/// A TLS connection starts with a handshake record (0x16); a plain HTTP request with a method.
fn looks_like_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len >= 3 && bytes.get(method_len) == Some(&b' ')
}

fn plain_http_response() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    )
}

/// Best effort: the peer may already be gone.
async fn send_and_close<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_told_apart_from_a_client_hello() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"OPTIONS * HTTP/1.1\r\n"));
        assert!(looks_like_http(b"PRI * HTTP/2.0\r\n"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_http(b"GE"));
    }
}
