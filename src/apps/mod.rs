//! On-demand app processes: the `run` handler's machinery.
//!
//! - [`spec`]: `[app.run]` checked at config load (nothing started, nothing looked up).
//! - [`process`]: starting one process (user, socket hand-over, priorities, limits, clean
//!   environment and fds) and stopping it with its whole process group.
//! - [`ready`]: the socket or port the app gets, and the readiness checks.
//! - [`port_owner`]: whether a port-mode app's port is held by the app or by another process.
//! - [`runner`]: one app's life — start on demand, idle stop, crash handling, backoff.
//! - [`bulkhead`]: one app's concurrency limit and bounded queue.
//! - [`usage`]: memory and CPU of an app's processes, for status and metrics.

pub mod bulkhead;
pub mod port_owner;
pub mod privilege;
pub mod process;
pub mod ready;
pub mod runner;
pub mod spec;
pub mod usage;
