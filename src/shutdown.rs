//! Process signals as events for the server's main loop: SIGTERM and SIGINT stop, SIGHUP reloads.

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    Stop(&'static str),
    Reload,
}

/// The signal handlers, installed once at startup.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot handle {name}"))
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal received.
    pub async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Stop("SIGTERM"),
            _ = self.int.recv() => SignalEvent::Stop("SIGINT"),
            _ = self.hup.recv() => SignalEvent::Reload,
        }
    }
}
