//! The command line: `ondemand serve`, `ondemand check`, and their options.

pub mod generate;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand};

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

impl Cli {
    /// Parses the command line. `serve`, run on every activation, is tried first with a parser
    /// of its own arguments only: building the whole command tree (every subcommand with its
    /// arguments and help) is a fifth of the instructions of a cold start. Anything that parser
    /// does not accept (help, a mistake, another command) goes to the full parser, so every
    /// message and help text is the one of the whole command line.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        Cli::parse_from_args(std::env::args_os().collect())
    }

    fn parse_from_args(args: Vec<OsString>) -> Result<Cli, clap::Error> {
        if let Some(serve) = serve_only(&args) {
            return Ok(Cli {
                command: Command::Serve(serve),
            });
        }
        Cli::try_parse_from(args)
    }
}

/// `ondemand serve ...` parsed by a parser of `serve`'s arguments alone; None when that is not
/// the command or when the arguments need the full parser's help or error message.
fn serve_only(args: &[OsString]) -> Option<ServeArgs> {
    if args.get(1).is_none_or(|a| a != "serve") {
        return None;
    }
    let serve = ServeArgs::augment_args(clap::Command::new("serve"))
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true);
    let matches = serve.try_get_matches_from(&args[2..]).ok()?;
    ServeArgs::from_arg_matches(&matches).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn serve_is_parsed_by_its_own_parser_as_the_full_one_does() {
        let line = args(&[
            "ondemand",
            "serve",
            "--config",
            "/etc/x.toml",
            "-l",
            "127.0.0.1:8080",
            "--listen=unix:/run/a.sock",
            "--xinetd-socket-name",
            "https",
        ]);
        let fast = serve_only(&line).expect("the serve-only parser takes a valid serve line");
        let Command::Serve(full) = Cli::try_parse_from(&line).unwrap().command else {
            panic!("not serve");
        };
        assert_eq!(format!("{fast:?}"), format!("{full:?}"));
        assert!(serve_only(&args(&["ondemand", "serve"])).is_some());
    }

    #[test]
    fn help_mistakes_and_other_commands_get_the_full_parser() {
        for line in [
            &["ondemand", "serve", "--help"][..],
            &["ondemand", "serve", "-h"],
            &["ondemand", "serve", "--version"],
            &["ondemand", "serve", "--bogus"],
            &["ondemand", "serve", "--xinetd-socket-name", "ftp"],
            &["ondemand", "check"],
            &["ondemand"],
        ] {
            assert!(serve_only(&args(line)).is_none(), "{line:?}");
        }
        let help = Cli::parse_from_args(args(&["ondemand", "serve", "--help"])).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("Usage: ondemand serve"), "{help}");
        let wrong = Cli::parse_from_args(args(&["ondemand", "serve", "--bogus"])).unwrap_err();
        assert!(
            wrong.to_string().contains("Usage: ondemand serve"),
            "{wrong}"
        );
    }
}
