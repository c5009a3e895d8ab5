//! The command line: `ondemand serve`, `ondemand check`, and their options.

pub mod generate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::listen::ListenAddr;

/// Socket-activated launcher and router for many mostly-idle web apps.
///
/// systemd (ondemand.socket) or xinetd (wait = yes) holds the listening socket and starts
/// `ondemand serve` on the first connection; it routes each request by Host and path to its app and
/// exits when idle, so nothing stays resident while no one is using the apps.
#[derive(Debug, Parser)]
#[command(
    name = "ondemand",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the man pages or a shell completion script (for packaging; see scripts/deb).
    #[command(subcommand, hide = true)]
    Generate(generate::Generate),
    /// Serve HTTP on the sockets from systemd or xinetd (or --listen) until idle.
    Serve(ServeArgs),
    /// Validate the configuration and print the route table.
    Check(ConfigArg),
    /// Show the launcher and its apps (state, pids, requests, latency, memory...). Never starts
    /// anything: when no launcher runs, the apps are shown idle with their last known counters.
    Status(StatusArgs),
    /// Start the apps FILTER picks (a pre-warm); starts the launcher through systemd if needed.
    Start(ActArgs),
    /// Stop the processes of the apps FILTER picks; their routes stay, the next request starts them.
    Stop(ActArgs),
    /// Stop and start again the apps FILTER picks.
    Restart(ActArgs),
    /// Re-read the configuration in the running launcher (as SIGHUP) and print the outcome.
    Reload(ConfigArg),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show only apps with this name, host, tag or state (idle, starting, ready, stopping,
    /// backoff, failed); repeatable, any may match.
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ActArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Act on every app (required when no FILTER is given).
    #[arg(long)]
    pub all: bool,
    /// The apps to act on: by name, host, tag or state; repeatable, any may match.
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
}

/// `--config`, shared by every command.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file [default: /etc/ondemand/ondemand.toml]
    #[arg(long, short = 'c', env = "ONDEMAND_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also listen on ADDR (HOST:PORT, https://HOST:PORT for HTTPS, or unix:/path); repeatable.
    /// For runs by hand: under systemd or xinetd the supervisor's sockets are used.
    #[arg(long, short = 'l', value_name = "ADDR")]
    pub listen: Vec<ListenAddr>,
    /// The name of the socket xinetd passes on fd 0: "http", or "https" for a service whose
    /// socket speaks TLS (systemd names its sockets with FileDescriptorName= instead).
    #[arg(long, value_name = "NAME", default_value = "http", value_parser = ["http", "https"])]
    pub xinetd_socket_name: String,
}
