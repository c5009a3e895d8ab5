//! The `ondemand` binary: take over inherited sockets, parse the command line, dispatch, and turn
//! errors into a message and exit code 2. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use ondemand::cli::{ActArgs, Cli, Command, ConfigArg, ServeArgs};
use ondemand::listen::{self, activation, Listeners, NamedListener};
use ondemand::{config, logging};

fn main() -> ExitCode {
    // Before any thread exists: capabilities granted as ambient (the systemd drop-in for apps
    // as other users) stay ondemand's and pass to no program it runs.
    ondemand::apps::privilege::keep_capabilities_to_itself();
    // First, while single-threaded and before anything can print: under xinetd, fds 0-2 are the
    // listening socket and must be moved away; under systemd, LISTEN_* must be read and removed.
    let xinetd = activation::take_xinetd_socket();
    let under_xinetd = matches!(xinetd, Ok(Some(_)));
    // SAFETY: no thread has been started yet.
    let systemd = unsafe { activation::take_systemd_sockets() };

    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) if under_xinetd && e.use_stderr() => return fail(&format!("{e}"), true),
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Generate(what) => match ondemand::cli::generate::run(&what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("{e:#}"), false),
        },
        Command::Check(args) => check(&args),
        Command::Status(args) => control(&args.config, |config| {
            ondemand::control::client::status(config, args.json, &args.filters)
        }),
        Command::Start(args) => act("start", &args),
        Command::Stop(args) => act("stop", &args),
        Command::Restart(args) => act("restart", &args),
        Command::Reload(args) => control(&args, ondemand::control::client::reload),
        Command::Serve(args) => {
            let inherited = xinetd.and_then(|x| systemd.map(|s| x.into_iter().chain(s).collect()));
            match inherited {
                Ok(inherited) => serve(args, inherited, under_xinetd),
                Err(e) => fail(&format!("{e:#}"), under_xinetd),
            }
        }
    }
}

/// Reports an error before logging is set up (stderr, or syslog under xinetd) and exits 2.
fn fail(message: &str, under_xinetd: bool) -> ExitCode {
    if under_xinetd {
        let _ = nix::syslog::openlog(
            Some(c"ondemand"),
            nix::syslog::LogFlags::LOG_PID,
            nix::syslog::Facility::LOG_DAEMON,
        );
        let _ = nix::syslog::syslog(nix::syslog::Severity::LOG_ERR, message);
    } else {
        // Not eprintln!: a closed stderr must not turn an error report into a panic.
        let _ = writeln!(std::io::stderr(), "ondemand: error: {}", message.trim_end());
    }
    ExitCode::from(2)
}

fn check(args: &ConfigArg) -> ExitCode {
    let path = config::resolve_path(args.config.as_deref());
    match config::load_and_check_files(&path) {
        Ok(config) => {
            // Not print!: `ondemand check | head` closes the pipe early, which is no error.
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", ondemand::route_table(&config));
            let _ = write!(out, "{}", ondemand::certificate_table(&config));
            let _ = writeln!(out, "{}: OK, {} apps", path.display(), config.apps.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), false),
    }
}

fn act(command: &str, args: &ActArgs) -> ExitCode {
    control(&args.config, |config| {
        ondemand::control::client::act(config, command, &args.filters, args.all)
    })
}

/// Runs a control command: loads the config (to find the control socket), prints the outcome.
fn control(
    args: &ConfigArg,
    command: impl FnOnce(&config::Config) -> anyhow::Result<ondemand::control::client::Outcome>,
) -> ExitCode {
    let path = config::resolve_path(args.config.as_deref());
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string(), false),
    };
    match command(&config) {
        Ok(outcome) => {
            let _ = write!(std::io::stdout().lock(), "{}", outcome.text);
            ExitCode::from(outcome.code)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ondemand: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: ServeArgs, mut all: Vec<NamedListener>, under_xinetd: bool) -> ExitCode {
    listen::name_xinetd_socket(&mut all, &args.xinetd_socket_name);
    let path = config::resolve_path(args.config.config.as_deref());
    // Under a supervisor a bad config must not become a restart loop: serve 503 instead.
    let supervised = !all.is_empty();
    let (config, load_error) = match config::load(&path) {
        Ok(config) => (config, None),
        Err(e) if supervised => (config::Config::unusable(&path, &e), Some(e)),
        Err(e) => return fail(&e.to_string(), under_xinetd),
    };
    for addr in &args.listen {
        match listen::bind(addr) {
            Ok(l) => all.push(l),
            Err(e) => return fail(&format!("{e:#}"), under_xinetd),
        }
    }
    let listeners = match Listeners::new(all) {
        Ok(l) => l,
        Err(e) => return fail(&format!("{e:#}"), under_xinetd),
    };
    let log = logging::init(
        &config.server.log,
        &config.server.log_level,
        listeners.origin(),
    );
    if let Some(e) = load_error {
        tracing::error!(
            "{e}. Answering every request with 503 until the file is fixed; then reload \
             (SIGHUP, systemctl reload ondemand) or let this instance exit when idle"
        );
    }
    ondemand::raise_open_files_limit();
    match ondemand::serve(config, listeners, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
