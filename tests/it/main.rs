//! Integration tests: every test runs the real `ondemand` binary, and where a supervisor is involved,
//! the real supervisor (systemd-socket-activate, xinetd, systemd in a throwaway nspawn container).
//!
//! Layout: `support` holds the shared helpers (ports, temp dirs, raw HTTP, process guards); each
//! other module is one topic.

mod activation;
mod cli;
mod control;
mod faults;
mod hostile;
mod http;
mod idle;
mod load_balancer;
mod proxy;
mod run;
mod security;
mod soak;
mod static_files;
mod support;
mod systemd;
mod tls;
mod xinetd;

// The Debian package (scripts/deb), installed in a throwaway systemd container.
mod deb;
