//! The reference of every key of `ondemand.toml`, in one table: its type, default, meaning and an
//! example value. `ondemand.toml(5)` is generated from it (see [`crate::generate`]), and the tests
//! below hold it to the parser both ways: every field of the serde structs in `file.rs` has an
//! entry here, and a file that uses every entry here parses. A key added to the parser without a
//! line here (or the other way round) fails the tests, so the manual cannot drift from the code.
//!
//! Text conventions, kept simple so the same strings can be rendered to roff and read as plain
//! text: `backticks` mark a literal (bold in the man page); no other markup.

/// One table of the file: `[server]`, `[[app]]`, or a handler table inside an app.
#[derive(Debug)]
pub struct Section {
    /// Dotted path of the table: "server", "app", "app.respond", "app.proxy.upstream", ...
    pub table: &'static str,
    /// How the table is written in a file, for headings: "[server]", "respond = { ... }".
    pub heading: &'static str,
    /// What the table is for, one paragraph.
    pub intro: &'static str,
    /// The keys of a table written as an entry of a list (`upstream = [{ url, weight }]`),
    /// rather than a table of its own.
    pub list_entry: bool,
    pub keys: &'static [Key],
}

/// One key of a table.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    /// The value's type in the user's words: "duration", "string", "list of strings", ...
    pub kind: &'static str,
    /// The default as written in a file, or a phrase such as "(required)" or "none".
    pub default: &'static str,
    pub meaning: &'static str,
    /// A valid TOML value for this key (the tests parse a file made of all of them).
    pub example: &'static str,
}

const fn key(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    meaning: &'static str,
    example: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        meaning,
        example,
    }
}

/// Every table and key of `ondemand.toml`, in the order the manual presents them.
pub const SECTIONS: &[Section] = &[
    Section {
        table: "server",
        heading: "[server]",
        list_entry: false,
        intro: "Launcher-wide settings. Every key is optional.",
        keys: &[
            key("idle_timeout", "duration or \"never\"", "\"30s\"",
                "Exit after no activity for this long; `\"never\"` disables idle exit. Activity is a request in flight, a new connection that has not sent its first request yet (for at most `first_request_timeout`), and an open WebSocket.",
                "\"30s\""),
            key("drain_timeout", "duration", "\"10s\"",
                "On exit (idle, SIGTERM, SIGINT), how long in-flight work may take to finish.",
                "\"10s\""),
            key("first_request_timeout", "duration", "\"10s\"",
                "How long a new connection may take to start its first request. Until then it counts as activity, so a client about to speak is never dropped; after it, the connection is closed.",
                "\"10s\""),
            key("header_read_timeout", "duration", "\"10s\"",
                "Once a request head has begun, how long it may take to complete. A slow head (slowloris) gets `408 Request Timeout` and is closed.",
                "\"10s\""),
            key("keepalive_timeout", "duration", "\"5s\"",
                "How long an idle keep-alive connection stays open.",
                "\"5s\""),
            key("max_connections", "integer", "1024",
                "Connections served at once. Further connections wait in the kernel's listen queue; none is refused by ondemand.",
                "1024"),
            key("max_header_size", "size", "\"32KiB\"",
                "Largest request head (at least 8KiB); larger heads get `431`.",
                "\"32KiB\""),
            key("max_headers", "integer", "100",
                "Most header fields in a request; more get `431`.",
                "100"),
            key("threads", "integer or \"auto\"", "1",
                "Threads serving requests. One starts fastest (no thread pool to create on every activation); `\"auto\"` (one per CPU) or a number suits a launcher that also proxies heavy traffic.",
                "1"),
            key("log", "string", "\"auto\"",
                "Where the log goes: `\"auto\"` (the journal under systemd, with one journal field per event field such as APP=; syslog under xinetd; stderr otherwise), `\"stderr\"`, `\"syslog\"`, or an absolute file path.",
                "\"auto\""),
            key("log_level", "string", "\"info\"",
                "`\"error\"`, `\"warn\"`, `\"info\"`, `\"debug\"`, `\"trace\"`, or tracing filter directives such as `\"info,h2=debug\"` (the syntax of RUST_LOG). A bare level applies to ondemand's own messages. The environment variable ONDEMAND_LOG overrides it.",
                "\"info\""),
            key("trusted_proxies", "list of strings", "[]",
                "Addresses or networks (`\"192.0.2.10\"`, `\"10.0.0.0/8\"`) of proxies in front of ondemand. From these peers, X-Forwarded-For/-Proto/-Host and Forwarded are kept and appended to; from anyone else they are replaced (README: Security).",
                "[\"10.0.0.0/8\"]"),
            key("runtime_dir", "string", "$RUNTIME_DIRECTORY, else \"/run/ondemand\"",
                "Where the sockets of `run` apps are made (in `apps/`, created on first use). An absolute path.",
                "\"/run/ondemand\""),
            key("control_socket", "string", "runtime_dir/control.sock",
                "The control socket of `ondemand status`, `start`, `stop`, `restart` and `reload` (mode 0660: ondemand's user and group, and root, may use it). Its directory must not be writable by every user. Using it never counts as activity.",
                "\"/run/ondemand/control.sock\""),
            key("state_dir", "string", "$STATE_DIRECTORY, else \"/var/lib/ondemand\"",
                "Where state.json keeps the counters of every activation so far (read when first needed, never at start-up).",
                "\"/var/lib/ondemand\""),
            key("metrics_file", "string", "none",
                "Also write the Prometheus metrics to this file, atomically, every `metrics_interval` and at exit (node_exporter's textfile collector).",
                "\"/var/lib/prometheus/node-exporter/ondemand.prom\""),
            key("metrics_interval", "duration", "\"10s\"",
                "How often the state and metrics files are written while running (at least 1s).",
                "\"10s\""),
            key("health_path", "string", "none",
                "A path (like `\"/healthz\"`) the launcher answers itself with 200 \"ok\", on every host, before routing. It never counts as activity, so a load balancer probing it never keeps the launcher up; while the launcher is down, a probe costs one activation (the launcher then exits after `idle_timeout`).",
                "\"/healthz\""),
            key("proxy_protocol", "boolean or list of strings", "false",
                "Connections on these sockets (`true`: every socket; or names, like `[\"http\"]`: systemd's `FileDescriptorName=`, xinetd's `--xinetd-socket-name`) begin with a PROXY protocol header, v1 or v2, from a load balancer (HAProxy's `send-proxy-v2`). The client address in it is what logs, X-Forwarded-For, `trusted_proxies` and metrics see. A connection without a valid header is closed, with a log line. Only the load balancer may reach such a socket: anyone who can connect can claim any address.",
                "[\"http\"]"),
            key("access_log", "string", "\"off\"",
                "`\"common\"` (Common Log Format plus host, app, duration and upstream time) or `\"json\"`: one line per finished request, into the log; `\"off\"` for none.",
                "\"common\""),
        ],
    },
    Section {
        table: "app",
        heading: "[[app]]",
        list_entry: false,
        intro: "One table per app. Every app has exactly one handler: `respond`, `static`, `proxy` or `run`. Values that would inject headers (CR, LF, NUL) are refused. A request goes to the app with the most specific host (exact, then the longest wildcard suffix, then apps without `host`), then the longest path prefix among that host's apps; no match is answered 404.",
        keys: &[
            key("name", "string", "(required)",
                "Unique name, used in logs: 1 to 64 letters, digits, `-`, `_` or `.`.",
                "\"hello\""),
            key("host", "string or list of strings", "any host",
                "Host names the app answers for: exact (`app.example`) or a leading wildcard (`*.example`: any name ending in `.example` at any depth, but not `example` itself). Case, the port and a trailing dot are ignored.",
                "[\"hello.example\", \"*.hello.example\"]"),
            key("path", "string", "\"/\"",
                "Path prefix, matched on whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.",
                "\"/\""),
            key("tags", "list of strings", "[]",
                "Labels to pick apps by in `ondemand status`, `start`, `stop` and `restart`.",
                "[\"team-a\"]"),
            key("version", "list of tables", "",
                "Versions of the app with weights, instead of one handler (see below).",
                "[]"),
            key("https_redirect", "boolean or integer", "false",
                "`true`: requests that arrive over plain HTTP get a redirect to the same host and path on https:// (port 443); a number (`8443`) redirects to that port. `301` for GET and HEAD, `308` for others. Requests over HTTPS, and requests a `trusted_proxies` peer marks X-Forwarded-Proto: https, are served.",
                "true"),
            key("respond", "table", "",
                "A fixed response (see below).",
                "{ body = \"hello\" }"),
            key("static", "table", "",
                "Files under a directory (see below).",
                "{ root = \"/srv/www\" }"),
            key("proxy", "table", "",
                "Forward to HTTP/1.1 servers that already run (see below).",
                "{ upstream = \"http://127.0.0.1:9000\" }"),
            key("run", "table", "",
                "An app process ondemand starts on the app's first request and stops when the app idles (see below).",
                "{ command = [\"/usr/bin/app\"] }"),
        ],
    },
    Section {
        table: "app.respond",
        heading: "respond = { ... }",
        list_entry: false,
        intro: "A fixed response.",
        keys: &[
            key("status", "integer", "200", "The status code.", "200"),
            key("body", "string", "\"\"", "The response body.", "\"hello\\n\""),
            key("content_type", "string", "\"text/plain; charset=utf-8\"",
                "The Content-Type header.",
                "\"text/plain\""),
            key("headers", "table of strings", "{}",
                "Extra response headers, name = value.",
                "{ Cache-Control = \"no-store\" }"),
        ],
    },
    Section {
        table: "app.static",
        heading: "static = { ... }",
        list_entry: false,
        intro: "Files under a directory. The app's `path` prefix is removed before the file is looked up. A directory is answered with its index.html; there are no listings. Only GET and HEAD are served; ETag, Last-Modified, conditional and single range requests work as HTTP says.",
        keys: &[
            key("root", "string", "(required)",
                "Absolute path of an existing directory whose files are served, resolved when the configuration is loaded.",
                "\"/srv/www\""),
            key("follow_symlinks", "boolean", "false",
                "`false`: symlinks inside the root are followed only while they stay inside it; a link leading out is answered 404. `true`: symlinks are followed wherever they lead.",
                "false"),
            key("precompressed", "boolean", "true",
                "Serve FILE.br or FILE.gz instead of FILE, with Content-Encoding, when the client accepts that encoding and the variant exists.",
                "true"),
        ],
    },
    Section {
        table: "app.proxy",
        heading: "proxy = { ... }",
        list_entry: false,
        intro: "Forward every request to HTTP/1.1 servers that already run, bodies streamed both ways, WebSockets passed through, hop-by-hop headers removed and X-Forwarded-* set.",
        keys: &[
            key("upstream", "string or list", "(required)",
                "`\"http://HOST:PORT\"` or `\"unix:/absolute/path.sock\"`, or a list of them and of `{ url, weight }` tables (below). Each request goes to the upstream with the fewest requests in flight, relative to its weight.",
                "\"http://127.0.0.1:9000\""),
            key("strip_prefix", "boolean", "false",
                "Remove the app's `path` before forwarding: with `path = \"/shop\"`, `/shop/cart` is sent as `/cart`.",
                "false"),
            key("timeout", "duration", "\"60s\"",
                "How long the upstream may take to start its response (connect included); then `504`. Also the longest pause allowed in a request body; then `408`.",
                "\"60s\""),
            key("max_body", "size", "none",
                "Largest request body; larger gets `413`.",
                "\"20MB\""),
        ],
    },
    Section {
        table: "app.proxy.upstream",
        heading: "upstream = [{ ... }]",
        list_entry: true,
        intro: "An entry of an `upstream` list may be a table, to give that upstream a weight.",
        keys: &[
            key("url", "string", "(required)",
                "The upstream's address, as in `upstream`.",
                "\"http://127.0.0.1:9000\""),
            key("weight", "integer", "1",
                "Its share of the traffic relative to the others; 0 takes no traffic.",
                "3"),
        ],
    },
    Section {
        table: "app.run",
        heading: "[app.run]",
        list_entry: false,
        intro: "An app process ondemand starts on the app's first request (held, never failed, until the app is ready), forwards to as `proxy` does, and stops after the app's own `idle_timeout`. Nothing is looked up, bound or started before the first request.",
        keys: &[
            key("command", "list of strings", "(required)",
                "Program and arguments, no shell. A name without `/` is looked up in PATH.",
                "[\"/usr/bin/app\", \"--port\", \"{port}\"]"),
            key("listen", "string", "\"socket\"",
                "`\"socket\"`: ondemand binds a unix socket in `runtime_dir/apps/` and hands it over as fd 3 with LISTEN_FDS=1, as systemd does. `\"port\"`: ondemand picks a free loopback port, sets PORT and replaces `{port}` in `command`.",
                "\"port\""),
            key("ready", "string", "\"listen\" (socket), \"connect\" (port)",
                "When the app takes requests: `\"listen\"` at once, `\"connect\"` once it accepts a connection, `\"http:/healthz\"` once that path answers 2xx, `\"notify\"` once it sends READY=1 to its NOTIFY_SOCKET.",
                "\"connect\""),
            key("start_timeout", "duration", "\"30s\"",
                "Longest wait for ready; then `503` and the process is stopped.",
                "\"30s\""),
            key("idle_timeout", "duration", "\"5m\"",
                "Stop the app after it had no request in flight (and no open WebSocket) for this long.",
                "\"5m\""),
            key("stop_timeout", "duration", "\"10s\"",
                "Stopping is SIGTERM to the app's whole process group, then SIGKILL after this.",
                "\"10s\""),
            key("user", "string", "ondemand's",
                "Run as this user. Needs CAP_SETUID, CAP_SETGID and CAP_KILL (plus CAP_CHOWN with ready = \"notify\"): under systemd, the drop-in apps-as-other-users.conf; without them the app's requests get 500 saying so (README: Security). HOME, USER and LOGNAME follow the user; supplementary groups are the user's.",
                "\"www-data\""),
            key("group", "string", "the user's",
                "Primary group, overriding the user's.",
                "\"www-data\""),
            key("working_dir", "string", "ondemand's",
                "Absolute path the app starts in.",
                "\"/srv/app\""),
            key("env", "table of strings", "{}",
                "Extra environment variables. The app inherits ondemand's environment without LISTEN_*, NOTIFY_SOCKET, WATCHDOG_* and ONDEMAND_*.",
                "{ APP_ENV = \"production\" }"),
            key("nice", "integer", "unchanged",
                "-20 to 19 (negative needs root).",
                "5"),
            key("io_priority", "string", "unchanged",
                "`\"idle\"`, `\"best-effort\"`, `\"best-effort:N\"` or `\"realtime:N\"` (N 0-7), as ionice.",
                "\"best-effort:4\""),
            key("memory_limit", "size", "unchanged",
                "RLIMIT_AS of the app.",
                "\"512MiB\""),
            key("open_files_limit", "integer", "unchanged",
                "RLIMIT_NOFILE of the app.",
                "1024"),
            key("max_concurrency", "integer", "64",
                "Requests inside the app at once (the bulkhead).",
                "64"),
            key("max_queue", "integer", "128",
                "Requests waiting for a place beyond that; more get `503` at once.",
                "128"),
            key("queue_timeout", "duration", "\"5s\"",
                "Longest wait for a place; then `503`.",
                "\"5s\""),
            key("timeout", "duration", "\"60s\"",
                "How long the app may take to start its response; then `504`. Also the longest pause allowed in a request body; then `408`.",
                "\"60s\""),
            key("max_body", "size", "none",
                "Largest request body; then `413`.",
                "\"10MB\""),
            key("strip_prefix", "boolean", "false",
                "Remove the app's `path` before forwarding.",
                "false"),
            key("instances", "integer", "1",
                "More than one: separate processes, each with its own socket or port; each request goes to the one with the fewest requests in flight.",
                "1"),
        ],
    },
    Section {
        table: "certificate",
        heading: "[[certificate]]",
        list_entry: false,
        intro: "A certificate for the sockets that speak TLS (named `https`), chosen by the name the client asks for (SNI): an exact host, then the longest wildcard, then the `default` one. Files are read on the first handshake that needs them, and again after a reload; `ondemand check` reads them all.",
        keys: &[
            key("cert", "string", "(required)",
                "Absolute path of a PEM file with the certificate first, then its intermediates (certbot's fullchain.pem).",
                "\"/etc/letsencrypt/live/example.com/fullchain.pem\""),
            key("key", "string", "(required)",
                "Absolute path of the PEM private key (certbot's privkey.pem).",
                "\"/etc/letsencrypt/live/example.com/privkey.pem\""),
            key("hosts", "string or list of strings", "none",
                "Names it serves, written like app hosts (`example.com`, `*.example.com`).",
                "[\"example.com\", \"*.example.com\"]"),
            key("apps", "string or list of strings", "none",
                "Names of `[[app]]` entries whose hosts it also serves.",
                "[\"wiki\"]"),
            key("default", "boolean", "false",
                "Serve it to clients that send no name and to names no certificate serves. At most one.",
                "true"),
        ],
    },
    Section {
        table: "app.version",
        heading: "[[app.version]]",
        list_entry: false,
        intro: "Versions of an app, for switching traffic between them: each has a name, a weight and exactly one handler. Requests are split by weight (exactly, by smooth weighted round-robin); change the weights and reload to move traffic at once; a version with weight 0 gets no traffic but is reached by requests with the header X-Ondemand-Version: NAME.",
        keys: &[
            key("name", "string", "(required)",
                "The version's name, unique within the app.",
                "\"blue\""),
            key("weight", "integer", "1",
                "Its share of the app's traffic; 0 for none.",
                "90"),
            key("respond", "table", "", "As for an app.", "{ body = \"blue\" }"),
            key("static", "table", "", "As for an app.", "{ root = \"/srv/www\" }"),
            key("proxy", "table", "", "As for an app.", "{ upstream = \"http://127.0.0.1:9001\" }"),
            key("run", "table", "", "As for an app.", "{ command = [\"/usr/bin/app\"] }"),
        ],
    },
];

/// The section documenting `table` ("server", "app.run", ...).
pub fn section(table: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.table == table)
}

/// The section of `key` of `table` when that key is a table documented on its own (`run` of
/// `app`), not a value (`upstream`, whose list entries have a section too).
pub fn subtable(table: &str, key: &str) -> Option<&'static Section> {
    section(&format!("{table}.{key}")).filter(|s| !s.list_entry)
}

#[cfg(test)]
mod tests {
    //! The table against the parser. When one of these fails after a key was added, renamed or
    //! removed in `file.rs`, update [`SECTIONS`] (and the README's tables).

    use std::collections::BTreeSet;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    use super::super::file::{
        AppFile, CertificateFile, FileConfig, ProxyFile, RespondFile, RunFile, ServerFile,
        StaticFile, UpstreamFile, VersionFile,
    };
    use super::*;

    /// The field names a `#[derive(Deserialize)]` struct accepts, as written in a file (after
    /// `rename`): the derive passes them to `Deserializer::deserialize_struct`, which this probe
    /// records before failing.
    fn fields_of<'de, T: Deserialize<'de>>() -> BTreeSet<&'static str> {
        struct Probe<'a>(&'a mut Option<&'static [&'static str]>);
        impl<'de> Deserializer<'de> for Probe<'_> {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = Some(fields);
                Err(de::Error::custom("probe"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut fields = None;
        let _ = T::deserialize(Probe(&mut fields));
        fields
            .expect("a struct deserialized with deserialize_struct")
            .iter()
            .copied()
            .collect()
    }

    fn documented(table: &str) -> BTreeSet<&'static str> {
        section(table)
            .unwrap_or_else(|| panic!("no section {table:?} in config::keys::SECTIONS"))
            .keys
            .iter()
            .map(|k| k.name)
            .collect()
    }

    #[test]
    fn every_parsed_key_is_documented_and_every_documented_key_is_parsed() {
        let structs = [
            ("server", fields_of::<ServerFile>()),
            ("app", fields_of::<AppFile>()),
            ("app.respond", fields_of::<RespondFile>()),
            ("app.static", fields_of::<StaticFile>()),
            ("app.proxy", fields_of::<ProxyFile>()),
            ("app.run", fields_of::<RunFile>()),
            ("app.version", fields_of::<VersionFile>()),
            ("certificate", fields_of::<CertificateFile>()),
        ];
        // Every table documented here is checked against its struct: a new section (say for a
        // new handler) needs its struct added to the list above.
        let checked: BTreeSet<&str> = structs.iter().map(|(t, _)| *t).collect();
        let tables: BTreeSet<&str> = SECTIONS
            .iter()
            .filter(|s| !s.list_entry)
            .map(|s| s.table)
            .collect();
        assert_eq!(
            checked, tables,
            "map each section of SECTIONS to its serde struct in this test"
        );
        for (table, parsed) in structs {
            let docs = documented(table);
            let undocumented: Vec<_> = parsed.difference(&docs).collect();
            let unparsed: Vec<_> = docs.difference(&parsed).collect();
            assert!(
                undocumented.is_empty() && unparsed.is_empty(),
                "[{table}]: keys the parser accepts but src/config/keys.rs does not document: \
                 {undocumented:?}; documented but not accepted: {unparsed:?}. Update SECTIONS \
                 in src/config/keys.rs (it becomes ondemand.toml(5)) and the README."
            );
        }
        // The top level: one section per top-level table the parser accepts.
        let top: BTreeSet<&str> = SECTIONS
            .iter()
            .filter(|s| !s.table.contains('.'))
            .map(|s| s.table)
            .collect();
        assert_eq!(top, fields_of::<FileConfig>(), "top-level tables");
        // Every nested section is a key of its parent table (or, for the upstream entries, of
        // app.proxy): no section documents a table that cannot be written.
        for s in SECTIONS.iter().filter(|s| s.table.contains('.')) {
            let (parent, name) = s.table.rsplit_once('.').unwrap();
            assert!(
                documented(parent).contains(name),
                "section {} is not a key of {parent}",
                s.table
            );
        }
    }

    /// A file that uses every documented key once, with its example value.
    fn file_with_every_key() -> String {
        let mut toml = String::new();
        for s in SECTIONS {
            if s.list_entry {
                continue; // see upstream_entry_keys_make_a_weighted_upstream
            }
            if matches!(s.table, "app" | "app.version" | "certificate") {
                toml.push_str(&format!("\n[[{}]]\n", s.table));
            } else {
                toml.push_str(&format!("\n[{}]\n", s.table));
            }
            for k in s.keys {
                // Sub-tables come as their own sections.
                if subtable(s.table, k.name).is_some() {
                    continue;
                }
                toml.push_str(&format!("{} = {}\n", k.name, k.example));
            }
        }
        toml
    }

    #[test]
    fn a_file_with_every_documented_key_parses() {
        let text = file_with_every_key();
        let file: FileConfig = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}\n--- the file made of SECTIONS ---\n{text}"));
        assert_eq!(file.apps.len(), 1);
        let app = file.apps[0].get_ref();
        assert!(app.respond.is_some() && app.static_files.is_some());
        assert!(app.proxy.is_some() && app.run.is_some());
    }

    #[test]
    fn upstream_entry_keys_make_a_weighted_upstream() {
        let keys = &section("app.proxy.upstream").unwrap().keys;
        let entry: Vec<String> = keys
            .iter()
            .map(|k| format!("{} = {}", k.name, k.example))
            .collect();
        let text = format!("upstream = [{{ {} }}]\n", entry.join(", "));
        let proxy: ProxyFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let upstreams = &proxy.upstream.get_ref().0;
        assert!(
            matches!(upstreams.as_slice(), [UpstreamFile::Weighted { .. }]),
            "{text} must give one weighted upstream: {upstreams:?}"
        );
    }

    #[test]
    fn every_key_has_its_reference_filled_in() {
        for s in SECTIONS {
            assert!(!s.intro.is_empty(), "{}: intro", s.table);
            for k in s.keys {
                assert!(
                    !k.kind.is_empty() && !k.meaning.is_empty() && !k.example.is_empty(),
                    "{}.{}: kind, meaning and example are required",
                    s.table,
                    k.name
                );
                assert_eq!(
                    k.meaning.matches('`').count() % 2,
                    0,
                    "{}.{}: backticks pair up",
                    s.table,
                    k.name
                );
            }
        }
    }

    #[test]
    fn the_readme_mentions_every_key() {
        let readme = include_str!("../../README.md");
        for s in SECTIONS {
            for k in s.keys {
                assert!(
                    readme.contains(&format!("`{}`", k.name))
                        || readme.contains(&format!("{{ {} = ", k.name))
                        || readme.contains(&format!(", {} = ", k.name)),
                    "README.md does not mention `{}` ({})",
                    k.name,
                    s.heading
                );
            }
        }
    }
}
