//! Seeing and steering a launcher from the command line, without a resident daemon and without
//! keeping anything alive by looking.
//!
//! - [`server`]: the control socket the running launcher serves (status, metrics, start/stop,
//!   reload); using it is never activity.
//! - [`client`]: `ondemand status|start|stop|restart|reload`; when no launcher runs, `status`
//!   answers from the configuration and the state file instead of starting one.
//! - [`status`]: the status table, its JSON form, and the filters that pick apps.

pub mod client;
pub mod server;
pub mod status;
