//! Protocol switches (WebSocket and any other `Upgrade`): once the upstream answers 101, the
//! client's connection and the upstream's are joined and bytes are copied both ways until either
//! side closes. An open tunnel holds launcher activity, so the launcher never exits under a live
//! WebSocket (the complaint users of Sablier have).

use http::Response;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::upstream::InFlight;
use crate::idle::ActivityGuard;

/// Joins the client's upgraded connection with the upstream's in a task of its own.
pub fn spawn(
    app: &str,
    client: OnUpgrade,
    upstream_response: Response<Incoming>,
    activity: Vec<ActivityGuard>,
    in_flight: InFlight,
) {
    let app = app.to_string();
    tokio::spawn(async move {
        let _held = (activity, in_flight);
        let upstream = hyper::upgrade::on(upstream_response);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!(app, "protocol switch failed: {e}");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(app, bytes_up = up, bytes_down = down, "tunnel closed")
            }
            Err(e) => tracing::debug!(app, "tunnel closed: {e}"),
        }
    });
}
