//! `ondemand check`'s parser on arbitrary text: it never panics, and every error it returns is
//! located, with a line and column inside the text, shown as `file:line:column: message`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ondemand::fuzzing::{parse_config, ConfigError};

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 is refused before parsing (`read_to_string`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match parse_config(path, text) {
        Ok(config) => {
            // What `ondemand check` prints for a good config.
            let _ = ondemand::route_table(&config);
            let _ = ondemand::certificate_table(&config);
        }
        Err(error @ ConfigError::Read { .. }) => panic!("parsing text read a file: {error}"),
        Err(ConfigError::Invalid {
            path: ref error_path,
            line,
            column,
            ref message,
        }) => {
            let error = parse_config(path, text).unwrap_err();
            assert_eq!(error_path, path);
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                (1..=lines.len()).contains(&line),
                "line {line} of a {}-line text: {error}",
                lines.len()
            );
            let width = lines[line - 1].chars().count();
            assert!(
                (1..=width + 1).contains(&column),
                "column {column} of a {width}-character line: {error}"
            );
            assert!(!message.trim().is_empty(), "an error without a message");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("fuzz.toml:{line}:{column}: ")),
                "{error}"
            );
        }
    }
});
