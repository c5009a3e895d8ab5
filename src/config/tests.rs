//! Config parsing and validation: what is accepted, and that every error names line and column.

use std::path::Path;
use std::time::Duration;

use super::*;

fn parse_ok(text: &str) -> Config {
    parse(Path::new("/etc/ondemand/ondemand.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    parse(Path::new("t.toml"), text)
        .expect_err("config should be refused")
        .to_string()
}

const HELLO: &str = "[[app]]\nname = \"hello\"\nrespond = { body = \"hi\" }\n";

#[test]
fn defaults_apply() {
    let c = parse_ok(HELLO);
    assert_eq!(c.server.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.server.log, LogTarget::Auto);
    assert_eq!(c.apps[0].path, "/");
    assert!(c.apps[0].hosts.is_empty());
}

#[test]
fn durations_and_never() {
    let c = parse_ok(&format!(
        "[server]\nidle_timeout = \"never\"\ndrain_timeout = \"1m 30s\"\n{HELLO}"
    ));
    assert_eq!(c.server.idle_timeout, None);
    assert_eq!(c.server.drain_timeout, Duration::from_secs(90));
    let c = parse_ok(&format!("[server]\nidle_timeout = \"500ms\"\n{HELLO}"));
    assert_eq!(c.server.idle_timeout, Some(Duration::from_millis(500)));
}

#[test]
fn sizes_accept_units() {
    let c = parse_ok(&format!("[server]\nmax_header_size = \"64KiB\"\n{HELLO}"));
    assert_eq!(c.server.max_header_size, 65536);
    let c = parse_ok(&format!("[server]\nmax_header_size = 10000\n{HELLO}"));
    assert_eq!(c.server.max_header_size, 10000);
}

#[test]
fn bad_duration_is_located() {
    let e = parse_err("[server]\nidle_timeout = \"30 parsecs\"\n");
    assert!(e.starts_with("t.toml:2:16: "), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn unknown_key_is_located() {
    let e = parse_err("[server]\nidle_timout = \"30s\"\n");
    assert!(e.starts_with("t.toml:2:1: "), "{e}");
    assert!(e.contains("idle_timout"), "{e}");
    let e = parse_err("[[app]]\nname = \"a\"\nrespond = { body = \"x\", colour = \"red\" }\n");
    assert!(e.starts_with("t.toml:3:"), "{e}");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn syntax_error_is_located() {
    let e = parse_err("[server\nidle_timeout = 1\n");
    assert!(e.starts_with("t.toml:1:"), "{e}");
}

#[test]
fn duplicate_route_names_both_apps() {
    let e = parse_err(
        "[[app]]\nname = \"a\"\nhost = \"x.example\"\nrespond = {}\n\n[[app]]\nname = \"b\"\nhost = [\"X.example\"]\nrespond = {}\n",
    );
    assert!(e.starts_with("t.toml:6:1: "), "{e}"); // the second [[app]] header
    assert!(
        e.contains("\"b\"") && e.contains("\"a\"") && e.contains("x.example"),
        "{e}"
    );
}

/// Found by fuzz/fuzz_targets/config_parse.rs: one app listing a host twice panicked (the clash
/// was looked up among the earlier apps, where the app itself is not).
#[test]
fn a_host_listed_twice_in_one_app_is_refused() {
    let e =
        parse_err("[[app]]\nname = \"a\"\nhost = [\"x.example\", \"X.example\"]\nrespond = {}\n");
    assert!(e.starts_with("t.toml:1:1: "), "{e}");
    assert!(
        e.contains("app \"a\" lists host \"x.example\" twice"),
        "{e}"
    );
}

#[test]
fn duplicate_name_is_refused() {
    let e = parse_err(
        "[[app]]\nname = \"a\"\nrespond = {}\n[[app]]\nname = \"a\"\npath = \"/x\"\nrespond = {}\n",
    );
    assert!(e.starts_with("t.toml:5:8: "), "{e}");
    assert!(e.contains("already used"), "{e}");
}

#[test]
fn app_without_handler_is_refused() {
    let e = parse_err("[[app]]\nname = \"a\"\n");
    assert!(e.contains("has no handler"), "{e}");
    assert!(e.contains("`respond = { ... }`, `static"), "{e}");
    assert!(e.contains("`proxy = { upstream"), "{e}");
    assert!(e.contains("or `run = { command"), "{e}");
    assert!(e.starts_with("t.toml:1:1: "), "{e}"); // its [[app]] header
}

#[test]
fn bad_hosts_and_paths_are_refused() {
    let e = parse_err("[[app]]\nname = \"a\"\nhost = \"a.example:80\"\nrespond = {}\n");
    assert!(e.starts_with("t.toml:3:8: ") && e.contains("port"), "{e}");
    let e = parse_err("[[app]]\nname = \"a\"\npath = \"api\"\nrespond = {}\n");
    assert!(
        e.starts_with("t.toml:3:8: ") && e.contains("does not start with /"),
        "{e}"
    );
    let e = parse_err("[[app]]\nname = \"a\"\npath = \"/../x\"\nrespond = {}\n");
    assert!(e.contains("above the root"), "{e}");
}

#[test]
fn path_prefixes_are_normalized() {
    let c = parse_ok("[[app]]\nname = \"a\"\npath = \"/api/\"\nrespond = {}\n");
    assert_eq!(c.apps[0].path, "/api");
}

#[test]
fn header_injection_is_refused() {
    let e = parse_err(
        "[[app]]\nname = \"a\"\nrespond = { content_type = \"text/plain\\r\\nSet-Cookie: x=1\" }\n",
    );
    assert!(
        e.starts_with("t.toml:3:") && e.contains("not allowed in an HTTP header"),
        "{e}"
    );
    let e = parse_err("[[app]]\nname = \"a\"\nrespond = { headers = { x-a = \"1\\n2\" } }\n");
    assert!(e.contains("not allowed in an HTTP header"), "{e}");
    let e =
        parse_err("[[app]]\nname = \"a\"\nrespond = { headers = { content-length = \"5\" } }\n");
    assert!(e.contains("set by ondemand itself"), "{e}");
}

#[test]
fn bad_status_and_log_settings_are_refused() {
    let e = parse_err("[[app]]\nname = \"a\"\nrespond = { status = 99 }\n");
    assert!(e.contains("status 99"), "{e}");
    let e = parse_err("[server]\nlog = \"journal\"\n");
    assert!(e.starts_with("t.toml:2:7: ") && e.contains("syslog"), "{e}");
    let e = parse_err("[server]\nidle_timeout = \"0s\"\n");
    assert!(e.contains("never"), "{e}");
    let e = parse_err("[server]\nmax_connections = 0\n");
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = parse_err("[[app]]\nname = \"ä\"\nrespond = { status = 1 }\n");
    assert!(e.starts_with("t.toml:2:8: "), "{e}");
}

#[test]
fn threads_default_to_one_and_accept_auto() {
    assert_eq!(parse_ok(HELLO).server.threads, Some(1));
    let c = parse_ok(&format!("[server]\nthreads = \"auto\"\n{HELLO}"));
    assert_eq!(c.server.threads, None);
    let c = parse_ok(&format!("[server]\nthreads = 4\n{HELLO}"));
    assert_eq!(c.server.threads, Some(4));
    let e = parse_err("[server]\nthreads = 0\n");
    assert!(
        e.starts_with("t.toml:2:11: ") && e.contains("at least 1"),
        "{e}"
    );
}

fn static_app(value: &str) -> String {
    format!("[[app]]\nname = \"s\"\nstatic = {value}\n")
}

#[test]
fn static_root_is_canonicalized_and_defaults_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    let via_dots = dir.path().join("site/../site");
    let c = parse_ok(&static_app(&format!(
        "{{ root = {:?} }}",
        via_dots.display().to_string()
    )));
    assert_eq!(c.apps[0].handler.kind(), "static");
    let shown = format!("{:?}", c.apps[0].handler);
    let canonical = std::fs::canonicalize(dir.path().join("site")).unwrap();
    assert!(shown.contains(&format!("{canonical:?}")), "{shown}");
    assert!(shown.contains("follow_symlinks: false"), "{shown}");
}

#[test]
fn bad_static_roots_are_located_at_the_root_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let missing = dir.path().join("missing");
    for (root, why) in [
        ("srv/site".to_string(), "is not an absolute path"),
        (missing.display().to_string(), "does not exist"),
        (file.display().to_string(), "is not a directory"),
    ] {
        let e = parse_err(&static_app(&format!("{{ root = {root:?} }}")));
        assert!(e.starts_with("t.toml:3:19: "), "{e}");
        assert!(e.contains("app \"s\": static root"), "{e}");
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn static_keys_are_checked() {
    let e = parse_err(&static_app("{ root = \"/\", index = \"home.html\" }"));
    assert!(e.contains("index"), "{e}");
    let e = parse_err(&static_app("{ follow_symlinks = true }"));
    assert!(e.contains("root"), "{e}");
}

#[test]
fn two_handlers_on_one_app_are_refused() {
    let e = parse_err("[[app]]\nname = \"a\"\nrespond = {}\nstatic = { root = \"/\" }\n");
    assert!(e.starts_with("t.toml:4:10: "), "{e}");
    assert!(e.contains("more than one handler"), "{e}");
}

#[test]
fn line_breaks_are_refused_through_parse_with_their_location() {
    let e = parse_err("[[app]]\nname = \"a\"\ntags = [\"ok\", \"a\\nb\"]\nrespond = {}\n");
    assert!(e.starts_with("t.toml:3:15: "), "{e}");
    assert!(
        e.contains("the value of app.tags contains a line feed (LF)"),
        "{e}"
    );
}

#[test]
fn a_misspelt_key_is_reported_before_a_line_break_elsewhere() {
    // One parse serves both checks; the line-break finding still comes after the others.
    let e = parse_err("[[app]]\nname = \"a\"\nhost = \"a\\nb\"\nrespnd = {}\n");
    assert!(e.contains("unknown field `respnd`"), "{e}");
}
