//! Files made from the code, for packaging: the man pages — `ondemand(1)` and one
//! `ondemand-COMMAND(1)` per command from the clap definitions in [`crate::cli`], and
//! `ondemand.toml(5)` from the key table in [`crate::config::keys`] — and the bash, zsh and fish
//! completion scripts. `scripts/deb` runs `ondemand generate man DIR` and
//! `ondemand generate completions SHELL` at package build time; nothing generated is committed,
//! so the manuals always describe the binary they ship with.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{CommandFactory, Subcommand};
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use super::Cli;
use crate::config::keys::{Key, Section, SECTIONS};

/// `ondemand generate ...` (a hidden command: it is for packagers, not for operators).
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Write ondemand.1, one ondemand-COMMAND.1 per command, and ondemand.toml.5 into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// Runs `ondemand generate ...`.
pub fn run(what: &Generate) -> Result<()> {
    match what {
        Generate::Man { dir } => {
            for page in man_pages(dir)? {
                println!("{}", page.display());
            }
            Ok(())
        }
        Generate::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut completed_command(), "ondemand", &mut out);
            std::io::stdout()
                .write_all(&out)
                .context("cannot write the completion script to stdout")
        }
    }
}

/// The command line as completions offer it: clap's generators list hidden commands too, so
/// `generate` is left out here.
fn completed_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("ondemand")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

/// Writes every man page into `dir` (created if missing); returns their paths.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut pages = Vec::new();
    let mut write = |name: String, text: Vec<u8>| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write the man page {}", path.display()))?;
        pages.push(path);
        Ok(())
    };
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build(); // gives the subcommands their "ondemand-serve" display names
    write("ondemand.1".into(), main_page(&cmd)?)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = Man::new(sub.clone());
        let mut text = Vec::new();
        man.render(&mut text)?;
        text.extend_from_slice(&see_also(&["ondemand(1)", "ondemand.toml(5)"]));
        write(man.get_filename(), text)?;
    }
    write(
        "ondemand.toml.5".into(),
        config_page().render().into_bytes(),
    )?;
    Ok(pages)
}

/// ondemand(1): clap's sections, then what an operator needs beyond the options.
fn main_page(cmd: &clap::Command) -> Result<Vec<u8>> {
    let man = Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    let mut roff = Roff::new();
    section(&mut roff, "EXIT STATUS");
    definitions(
        &mut roff,
        &[
            ("0", "Success; for `serve`, a clean exit (idle, SIGTERM or SIGINT)."),
            ("1", "`serve` failed while running (the log says why)."),
            ("2", "The configuration is invalid or cannot be read, or the command line is wrong; the message names the file, line and column."),
        ],
    );
    section(&mut roff, "ENVIRONMENT");
    definitions(
        &mut roff,
        &[
            ("ONDEMAND_CONFIG", "The configuration file, when `--config` is not given."),
            ("ONDEMAND_LOG", "Overrides `log_level` of the configuration (same syntax as RUST_LOG: `debug`, `info,h2=debug`)."),
            ("LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES", "The sockets systemd passes (socket activation)."),
            ("NOTIFY_SOCKET, WATCHDOG_USEC", "sd_notify: READY=1, STATUS=, STOPPING=1 and watchdog pings."),
            ("JOURNAL_STREAM", "Set by systemd when stderr is the journal: ondemand then logs natively to the journal, each event field a journal field (APP=, PATH=, ...)."),
        ],
    );
    section(&mut roff, "FILES");
    definitions(
        &mut roff,
        &[
            (crate::config::DEFAULT_PATH, "The configuration, see ondemand.toml(5)."),
            ("/lib/systemd/system/ondemand.socket, ondemand.service", "The systemd units: enable the socket (`systemctl enable --now ondemand.socket`), never the service."),
            ("/etc/xinetd.d/ondemand", "The xinetd service, installed disabled."),
            ("/run/ondemand", "Runtime directory (sockets of `run` apps)."),
        ],
    );
    roff.to_writer(&mut out)?;
    let mut related: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("ondemand-{}(1)", s.get_name()))
        .collect();
    related.extend(
        [
            "ondemand.toml(5)",
            "systemd.socket(5)",
            "xinetd.conf(5)",
            "journalctl(1)",
        ]
        .map(String::from),
    );
    out.extend_from_slice(&see_also(
        &related.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    man.render_version_section(&mut out)?;
    Ok(once_preamble(out))
}

/// Each `render_*` of clap_mangen starts with roff's two-line apostrophe preamble; keep the first.
fn once_preamble(page: Vec<u8>) -> Vec<u8> {
    let preamble = Roff::new().render();
    let text = String::from_utf8_lossy(&page);
    match text.split_once(&preamble) {
        Some((before, after)) => {
            format!("{before}{preamble}{}", after.replace(&preamble, "")).into_bytes()
        }
        None => page,
    }
}

fn see_also(pages: &[&str]) -> Vec<u8> {
    let mut roff = Roff::new();
    section(&mut roff, "SEE ALSO");
    let mut line = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let (name, sect) = page.split_once('(').unwrap_or((page, ""));
        line.push(bold(name));
        line.push(roman(format!(
            "({sect}{}",
            if i + 1 < pages.len() { ", " } else { "" }
        )));
    }
    roff.text(line);
    roff.to_roff().into_bytes()
}

/// ondemand.toml(5), every key from [`SECTIONS`].
fn config_page() -> Roff {
    let mut roff = Roff::new();
    let source = format!("ondemand {}", env!("CARGO_PKG_VERSION"));
    roff.control("TH", ["ONDEMAND.TOML", "5", "", &source, "File Formats"]);
    section(&mut roff, "NAME");
    roff.text([roman(
        "ondemand.toml - configuration of the ondemand launcher",
    )]);
    section(&mut roff, "SYNOPSIS");
    roff.text([bold(crate::config::DEFAULT_PATH)]);
    section(&mut roff, "DESCRIPTION");
    for paragraph in [
        "ondemand(1) reads this TOML file when it starts, and again on SIGHUP (`systemctl reload ondemand`); another file can be named with `--config` or ONDEMAND_CONFIG. `ondemand check` validates it and prints the route table.",
        "Unknown keys are errors. Every error names the file, line and column, and `serve` and `check` then exit with status 2. Under a supervisor, `serve` answers every request with 503 until the file is fixed and reloaded, rather than failing to start.",
        "Durations are written like `\"500ms\"`, `\"30s\"`, `\"5m\"`, `\"1h 30m\"`. Sizes are a number of bytes (`32768`) or a string with a unit (`\"32KiB\"`, `\"10MB\"`).",
    ] {
        roff.control("PP", []);
        roff.text(inlines(paragraph));
    }
    for s in SECTIONS {
        config_section(&mut roff, s);
    }
    section(&mut roff, "EXAMPLE");
    roff.text([roman(
        "The configuration installed as an example (three apps answering fixed responses):",
    )]);
    roff.control("PP", []);
    roff.control("nf", []);
    roff.control("RS", ["4"]);
    for line in include_str!("../../examples/ondemand.toml").lines() {
        roff.text([roman(line)]);
    }
    roff.control("RE", []);
    roff.control("fi", []);
    section(&mut roff, "FILES");
    definitions(
        &mut roff,
        &[(
            crate::config::DEFAULT_PATH,
            "The configuration read by default.",
        )],
    );
    section(&mut roff, "SEE ALSO");
    roff.text([
        bold("ondemand"),
        roman("(1), "),
        bold("ondemand-check"),
        roman("(1), "),
        bold("systemd.socket"),
        roman("(5)"),
    ]);
    roff
}

fn config_section(roff: &mut Roff, s: &Section) {
    section(roff, s.heading);
    roff.text(inlines(s.intro));
    for k in s.keys {
        config_key(roff, s, k);
    }
}

fn config_key(roff: &mut Roff, s: &Section, k: &Key) {
    roff.control("TP", []);
    let mut tag = vec![bold(k.name), roman(" ("), italic(k.kind)];
    match k.default {
        "" => {}
        "(required)" => tag.push(roman("; required")),
        default => tag.push(roman(format!("; default: {default}"))),
    }
    tag.push(roman(")"));
    roff.text(tag);
    roff.text(inlines(k.meaning));
    // Tables written with their own section are shown there, not as a one-line example.
    if crate::config::keys::subtable(s.table, k.name).is_none() {
        roff.control("br", []);
        roff.text([
            roman("Example: "),
            bold(format!("{} = {}", k.name, k.example)),
        ]);
    }
}

fn section(roff: &mut Roff, title: &str) {
    roff.control("SH", [title]);
}

/// `.TP` term/definition pairs.
fn definitions(roff: &mut Roff, items: &[(&str, &str)]) {
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text(inlines(text));
    }
}

/// Plain text with `backticked` literals in bold.
fn inlines(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_is_in_the_config_page() {
        let page = config_page().render();
        for s in SECTIONS {
            for k in s.keys {
                let escaped = k.name.replace('-', "\\-");
                assert!(
                    page.contains(&format!("\\fB{escaped}\\fR")),
                    "{}.{} missing from ondemand.toml.5",
                    s.table,
                    k.name
                );
            }
        }
    }

    #[test]
    fn pages_are_written_for_every_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "ondemand.1",
            "ondemand-serve.1",
            "ondemand-check.1",
            "ondemand.toml.5",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate")),
            "the hidden command gets no page: {names:?}"
        );
        let main = std::fs::read_to_string(dir.path().join("ondemand.1")).unwrap();
        assert!(main.contains("ONDEMAND_CONFIG"), "{main}");
        assert!(!main.contains("generate"), "hidden command listed:\n{main}");
    }

    #[test]
    fn completions_offer_every_visible_command_and_not_the_hidden_one() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut completed_command(), "ondemand", &mut out);
            let script = String::from_utf8(out).unwrap();
            for sub in Cli::command().get_subcommands() {
                let name = sub.get_name();
                assert_eq!(
                    script.contains(name),
                    !sub.is_hide_set(),
                    "{shell}: {name} (hidden: {})",
                    sub.is_hide_set()
                );
            }
            assert!(
                script.contains("config"),
                "{shell}: options of the commands"
            );
        }
    }

    #[test]
    fn backticks_become_bold() {
        let mut r = Roff::new();
        r.text(inlines("a `b` c"));
        assert_eq!(r.to_roff(), "a \\fBb\\fR c\n");
    }
}
