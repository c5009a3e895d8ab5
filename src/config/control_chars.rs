//! Line breaks and NUL bytes in configuration strings: refused wherever a value can end up in a
//! header, a status line, a log line, a file name or an argument of a system call.
//!
//! Most strings of the file are names, hosts, paths, addresses, header values, users and files.
//! A CR or LF in one of them could split a response header (`content_type = "text/plain\r\nSet-
//! Cookie: ..."`) or forge a log line, and a NUL byte cuts a C string short. TOML only lets these
//! characters into a string through an escape (`\r`, `\n`, `\u0000`) or a multi-line string, so a
//! file without a backslash and without triple quotes cannot hold one, and is not walked at all
//! (a second parse on every activation would cost for nothing).
//!
//! The places where a line break is content, not structure, keep it: a `respond` body, the
//! arguments of a `run` command (`python3 -c "..."`) and `run` environment values. NUL is refused
//! there too except in a body (argv and the environment are C strings). Keys are held to the
//! strictest rule: they name headers and environment variables.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::Located;

/// Refuses CR, LF and NUL in every string of `table`, the parsed `source`, outside the places
/// that may hold them (see the module docs).
pub fn check(source: &str, table: &DeTable<'_>) -> Result<(), Located> {
    if !source.contains('\\') && !source.contains("\"\"\"") && !source.contains("'''") {
        return Ok(());
    }
    let mut keys = Vec::new();
    walk_table(table, &mut keys)
}

fn walk_table<'a>(table: &'a DeTable<'_>, keys: &mut Vec<&'a str>) -> Result<(), Located> {
    for (key, value) in table {
        keys.push(key.get_ref().as_ref());
        if let Some(bad) = forbidden(key.get_ref(), Allowed::Nothing) {
            return Err(refused(key.span(), keys, bad, "key"));
        }
        walk_value(value, keys)?;
        keys.pop();
    }
    Ok(())
}

fn walk_value<'a>(value: &'a Spanned<DeValue<'_>>, keys: &mut Vec<&'a str>) -> Result<(), Located> {
    match value.get_ref() {
        DeValue::String(text) => match forbidden(text, allowed_at(keys)) {
            Some(bad) => Err(refused(value.span(), keys, bad, "value")),
            None => Ok(()),
        },
        DeValue::Array(items) => items.iter().try_for_each(|item| walk_value(item, keys)),
        DeValue::Table(table) => walk_table(table, keys),
        _ => Ok(()),
    }
}

/// What a string may hold besides ordinary characters.
#[derive(Clone, Copy, PartialEq)]
enum Allowed {
    Nothing,
    LineBreaks,
    LineBreaksAndNul,
}

/// `keys` is the path of table keys down to the value (array positions left out): `app`,
/// `respond`, `body` for `[[app]] respond = { body = ... }`.
fn allowed_at(keys: &[&str]) -> Allowed {
    match keys {
        [.., "respond", "body"] => Allowed::LineBreaksAndNul,
        [.., "run", "command"] | [.., "run", "env", _] => Allowed::LineBreaks,
        _ => Allowed::Nothing,
    }
}

/// The first character of `text` that `allowed` does not let through, by name.
/// Bytes, not chars: the three are ASCII, and no byte of a multi-byte UTF-8 character is ASCII.
fn forbidden(text: &str, allowed: Allowed) -> Option<&'static str> {
    text.bytes().find_map(|b| match b {
        b'\r' if allowed == Allowed::Nothing => Some("a carriage return (CR)"),
        b'\n' if allowed == Allowed::Nothing => Some("a line feed (LF)"),
        0 if allowed != Allowed::LineBreaksAndNul => Some("a NUL byte"),
        _ => None,
    })
}

fn refused(span: std::ops::Range<usize>, keys: &[&str], bad: &str, what: &str) -> Located {
    Located::new(
        span,
        format!(
            "the {what} of {} contains {bad}, which could inject a header or a log line: \
             write it on one line (only a respond body, run command arguments and run env \
             values may hold line breaks)",
            keys.join(".")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_source(source: &str) -> Result<(), Located> {
        check(source, DeTable::parse(source).unwrap().get_ref())
    }

    fn refusal(source: &str) -> Option<String> {
        check_source(source).err().map(|e| e.message)
    }

    #[test]
    fn files_without_escapes_or_multiline_strings_are_not_walked() {
        assert!(refusal("[[app]]\nname = \"a\"\nrespond = { body = \"x\" }\n").is_none());
    }

    #[test]
    fn line_breaks_and_nul_are_refused_in_header_values_hosts_and_names() {
        for (source, path) in [
            (
                "[[app]]\nname = \"a\"\nhost = \"a.example\\r\\nX: y\"\nrespond = {}\n",
                "app.host",
            ),
            (
                "[[app]]\nname = \"a\"\nrespond = { headers = { x-a = \"1\\n2\" } }\n",
                "app.respond.headers.x-a",
            ),
            (
                "[[app]]\nname = \"a\"\nproxy = { upstream = [\"http://a\\u0000\"] }\n",
                "app.proxy.upstream",
            ),
            (
                "[[app]]\nname = \"a\"\n[[app.version]]\nname = \"\"\"b\nc\"\"\"\n",
                "app.version.name",
            ),
            ("[server]\nlog = '''/tmp/a\n'''\n", "server.log"),
            (
                "[[app]]\nname = \"a\"\nrun = { command = [\"x\"], env = { A = \"\\u0000\" } }\n",
                "app.run.env.A",
            ),
        ] {
            let message = refusal(source).unwrap_or_else(|| panic!("accepted: {source}"));
            assert!(message.contains(path), "{message}");
        }
    }

    #[test]
    fn keys_with_line_breaks_are_refused() {
        let message =
            refusal("[[app]]\nname = \"a\"\nrespond = { headers = { \"x\\r\\ny\" = \"1\" } }\n")
                .unwrap();
        assert!(message.contains("the key of"), "{message}");
    }

    #[test]
    fn bodies_commands_and_environment_values_keep_their_line_breaks() {
        let source = "[[app]]\nname = \"a\"\nrespond = { body = \"a\\r\\nb\\u0000\" }\n\
                      [[app]]\nname = \"b\"\n[app.run]\ncommand = [\"python3\", \"-c\", \"\"\"\n\
                      import x\nx.run()\"\"\"]\nenv = { PEM = \"-----BEGIN\\nx\" }\n";
        assert_eq!(refusal(source), None);
    }

    #[test]
    fn the_span_points_at_the_value() {
        let source = "[[app]]\nname = \"a\"\nhost = \"a\\n\"\nrespond = {}\n";
        let error = check_source(source).unwrap_err();
        assert_eq!(&source[error.span.start..error.span.start + 1], "\"");
        assert_eq!(error.span.start, source.find("\"a\\n").unwrap());
    }
}
