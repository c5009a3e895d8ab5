//! The command line: `check`, errors with file:line:column, the no-listener message, exit codes.

use std::process::{Command, Stdio};

use crate::support::{bin, run_ondemand, tempdir, write_file};

const GOOD: &str = r#"
[[app]]
name = "hello"
host = ["hello.example", "*.example"]
respond = { body = "hi" }

[[app]]
name = "api"
host = "hello.example"
path = "/api/"
respond = { status = 204 }
"#;

#[test]
fn check_prints_the_route_table() {
    let dir = tempdir();
    let config = write_file(dir.path(), "ondemand.toml", GOOD);
    let (code, out, err) = run_ondemand(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["APP", "HOSTS", "PATH", "HANDLER"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["hello", "hello.example,*.example", "/", "respond"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["api", "hello.example", "/api", "respond"]
    );
    assert!(out.contains("OK, 2 apps"), "{out}");
}

#[test]
fn check_reads_ondemand_config_from_the_environment() {
    let dir = tempdir();
    let config = write_file(dir.path(), "ondemand.toml", GOOD);
    let out = Command::new(bin())
        .arg("check")
        .env("ONDEMAND_CONFIG", &config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_names_file_line_and_column_and_exits_2() {
    let dir = tempdir();
    let config = write_file(
        dir.path(),
        "bad.toml",
        "[server]\nidle_timeout = \"soon\"\n",
    );
    let path = config.to_str().unwrap();
    for args in [
        vec!["check", "--config", path],
        vec!["serve", "--config", path, "--listen", "127.0.0.1:1"],
    ] {
        let cmd = args[0];
        let (code, _, err) = run_ondemand(&args);
        assert_eq!(code, 2, "{cmd}: {err}");
        let expected = format!("{}:2:16: invalid duration \"soon\"", config.display());
        assert!(
            err.contains(&expected),
            "{cmd}: want {expected:?} in {err:?}"
        );
    }
}

#[test]
fn missing_config_file_says_how_to_choose_another() {
    let (code, _, err) = run_ondemand(&["check", "--config", "/nonexistent/ondemand.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read the configuration /nonexistent/ondemand.toml"),
        "{err}"
    );
    assert!(err.contains("--config or ONDEMAND_CONFIG"), "{err}");
}

#[test]
fn serve_without_any_socket_names_the_three_ways_and_exits_2() {
    let dir = tempdir();
    let config = write_file(dir.path(), "ondemand.toml", GOOD);
    let out = Command::new(bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for way in ["systemd", "xinetd", "--listen"] {
        assert!(err.contains(way), "missing {way:?} in {err}");
    }
}

#[test]
fn version_and_help_work_everywhere() {
    let (code, out, _) = run_ondemand(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ondemand "), "{out}");
    for args in [&["--help"][..], &["serve", "--help"], &["check", "--help"]] {
        let (code, out, _) = run_ondemand(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(
            out.contains("--config") || out.contains("serve"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn bad_listen_address_is_explained() {
    let dir = tempdir();
    let config = write_file(dir.path(), "ondemand.toml", GOOD);
    let (code, _, err) = run_ondemand(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "8080",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("HOST:PORT"), "{err}");
}
