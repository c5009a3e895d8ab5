//! The serde mirror of `ondemand.toml`: exactly what a user may write, nothing validated beyond
//! the shape of each value. Every table denies unknown keys, and the fields that later checks
//! must point at keep their byte span (`Spanned`) so errors can name line and column.
//!
//! `validate.rs` turns this into the checked [`crate::config::Config`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default, rename = "app")]
    pub apps: Vec<Spanned<AppFile>>,
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<Spanned<CertificateFile>>,
}

/// `[server]`: launcher-wide settings. Every key is optional; defaults live in `validate.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub idle_timeout: Option<IdleTimeout>,
    pub drain_timeout: Option<HumanDuration>,
    pub first_request_timeout: Option<HumanDuration>,
    pub header_read_timeout: Option<HumanDuration>,
    pub keepalive_timeout: Option<HumanDuration>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_header_size: Option<Spanned<ByteSize>>,
    pub max_headers: Option<Spanned<usize>>,
    pub threads: Option<Spanned<Threads>>,
    pub log: Option<Spanned<String>>,
    pub log_level: Option<Spanned<String>>,
    pub trusted_proxies: Option<Spanned<Vec<String>>>,
    pub runtime_dir: Option<Spanned<String>>,
    pub control_socket: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub metrics_file: Option<Spanned<String>>,
    pub metrics_interval: Option<HumanDuration>,
    pub access_log: Option<Spanned<String>>,
    pub health_path: Option<Spanned<String>>,
    pub proxy_protocol: Option<Spanned<ProxyProtocolFile>>,
}

/// `proxy_protocol`: `true` (every socket), `false`, or the names of the sockets whose
/// connections begin with a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyProtocolFile {
    All(bool),
    Sockets(Vec<String>),
}

impl<'de> Deserialize<'de> for ProxyProtocolFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = ProxyProtocolFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a list of socket names (like [\"http\", \"https\"])")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ProxyProtocolFile, E> {
                Ok(ProxyProtocolFile::All(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ProxyProtocolFile, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(ProxyProtocolFile::Sockets(names))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One `[[app]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub host: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub path: Option<Spanned<String>>,
    pub respond: Option<Spanned<RespondFile>>,
    #[serde(rename = "static")]
    pub static_files: Option<Spanned<StaticFile>>,
    pub proxy: Option<Spanned<ProxyFile>>,
    pub run: Option<Spanned<RunFile>>,
    pub https_redirect: Option<Spanned<HttpsRedirect>>,
    /// `[[app.version]]`: versions with weights, instead of one handler.
    #[serde(default, rename = "version")]
    pub versions: Vec<Spanned<VersionFile>>,
}

/// One `[[app.version]]`: a name, a weight and exactly one handler.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionFile {
    pub name: Spanned<String>,
    pub weight: Option<u32>,
    pub respond: Option<Spanned<RespondFile>>,
    #[serde(rename = "static")]
    pub static_files: Option<Spanned<StaticFile>>,
    pub proxy: Option<Spanned<ProxyFile>>,
    pub run: Option<Spanned<RunFile>>,
}

/// `https_redirect`: `true` (to port 443), `false`, or the HTTPS port to redirect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpsRedirect {
    Off,
    Port(u16),
}

impl<'de> Deserialize<'de> for HttpsRedirect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HttpsRedirect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or the HTTPS port to redirect to (like 8443)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HttpsRedirect, E> {
                Ok(if v {
                    HttpsRedirect::Port(443)
                } else {
                    HttpsRedirect::Off
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HttpsRedirect, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|&p| p > 0)
                    .map(HttpsRedirect::Port)
                    .ok_or_else(|| E::custom(format!("https_redirect = {v}: a port is 1 to 65535")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One `[[certificate]]` table: a certificate chain and its key (PEM files), and the names it
/// serves (checked and loaded in `tls/`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub hosts: Option<Spanned<OneOrMany>>,
    pub apps: Option<Spanned<OneOrMany>>,
    pub default: Option<bool>,
}

/// `[app.run]`: an app process ondemand starts on demand (checked in `apps/spec.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    pub command: Spanned<Vec<String>>,
    pub listen: Option<Spanned<String>>,
    pub ready: Option<Spanned<String>>,
    pub start_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub stop_timeout: Option<HumanDuration>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub working_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
    pub nice: Option<Spanned<i32>>,
    pub io_priority: Option<Spanned<String>>,
    pub memory_limit: Option<ByteSize>,
    pub open_files_limit: Option<u64>,
    pub max_concurrency: Option<Spanned<usize>>,
    pub max_queue: Option<Spanned<usize>>,
    pub queue_timeout: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub max_body: Option<ByteSize>,
    pub strip_prefix: Option<bool>,
    pub instances: Option<Spanned<usize>>,
}

/// `proxy = { upstream, strip_prefix, timeout, max_body }`: forward to running servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub upstream: Spanned<Upstreams>,
    pub strip_prefix: Option<bool>,
    pub timeout: Option<HumanDuration>,
    pub max_body: Option<ByteSize>,
}

/// `upstream`: one address, or a list of addresses and `{ url, weight }` tables.
#[derive(Debug)]
pub struct Upstreams(pub Vec<UpstreamFile>);

/// One upstream as written.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UpstreamFile {
    Address(String),
    Weighted { url: String, weight: u32 },
}

impl<'de> Deserialize<'de> for Upstreams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Upstreams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an address like \"http://127.0.0.1:9000\" or \"unix:/run/app.sock\", \
                     or a list of addresses and { url = \"...\", weight = N } tables",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Upstreams, E> {
                Ok(Upstreams(vec![UpstreamFile::Address(v.to_string())]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Upstreams, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<UpstreamFile>()? {
                    all.push(item);
                }
                Ok(Upstreams(all))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `static = { root, follow_symlinks, precompressed }`: files under a directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFile {
    pub root: Spanned<String>,
    pub follow_symlinks: Option<bool>,
    pub precompressed: Option<bool>,
}

/// `respond = { status, body, content_type, headers }`: a fixed response.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondFile {
    pub status: Option<Spanned<u16>>,
    pub body: Option<String>,
    pub content_type: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
}

/// A duration in humantime form: "500ms", "30s", "5m", "1h 30m".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(de::Error::custom)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?}: {e} (write it like \"500ms\", \"30s\" or \"5m\")")
    })
}

/// `idle_timeout`: a duration, or "never" to keep the launcher running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleTimeout {
    After(Duration),
    Never,
}

impl<'de> Deserialize<'de> for IdleTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("never") {
            return Ok(IdleTimeout::Never);
        }
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => Err(de::Error::custom(
                "idle_timeout must be longer than 0 (use \"never\" to disable idle exit)",
            )),
            Ok(d) => Ok(IdleTimeout::After(d)),
            Err(e) => Err(de::Error::custom(format!("{e}, or \"never\""))),
        }
    }
}

/// A size in bytes: an integer, or a string with a unit ("16KiB", "10MB", "1GiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes, like 16384 or \"16KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse::<bytesize::ByteSize>()
                    .map(|b| ByteSize(b.as_u64()))
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid size {v:?}: {e} (write it like \"16KiB\" or \"10MB\")"
                        ))
                    })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `threads`: a number of worker threads, or "auto" for one per CPU this process may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Count(u64),
    Auto,
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Threads;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of threads (1 or more) or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threads, E> {
                u64::try_from(v)
                    .ok()
                    .filter(|&n| n >= 1)
                    .map(Threads::Count)
                    .ok_or_else(|| E::custom("threads must be at least 1, or \"auto\""))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Threads, E> {
                match v {
                    "auto" => Ok(Threads::Auto),
                    _ => Err(E::custom(format!(
                        "threads = {v:?}: use a number, or \"auto\""
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A string or an array of strings (`host = "a.example"` or `host = ["a.example", "*.b"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a host name or an array of host names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    all.push(item);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(Visitor)
    }
}
