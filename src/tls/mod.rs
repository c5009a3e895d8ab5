//! HTTPS on the sockets named `https`: ondemand terminates TLS itself (rustls, TLS 1.3 and 1.2),
//! so no proxy has to stay resident in front of it just for TLS.
//!
//! - [`Certificates`]: the `[[certificate]]` entries of one configuration and the SNI table that
//!   picks one per handshake (the same precedence as app hosts: exact, then the longest wildcard,
//!   then the `default` certificate).
//! - [`certificate`]: one entry's files, read lazily on the first handshake that needs them (a
//!   launcher that only serves plain HTTP never reads a certificate), and checked completely by
//!   `ondemand check`.
//! - [`handshake`]: reading the ClientHello, choosing the certificate by SNI, refusing unknown
//!   names with an `unrecognized_name` alert, and completing the handshake by a deadline.
//! - [`redirect`]: `https_redirect`, plain HTTP answered with a redirect to HTTPS.
//!
//! A reload builds a new configuration, and with it a new, empty certificate cache: renewed files
//! are read by the next handshake, while connections already established keep their session.

pub mod certificate;
pub mod handshake;
pub mod redirect;

use std::sync::Arc;

use toml::Spanned;

pub use certificate::{Certificate, CertificateError};
pub use handshake::{accept, HandshakeError};

use crate::config::{App, CertificateFile, Located};
use crate::routing::{HostPattern, Router};

/// The `[[certificate]]` entries of one configuration.
#[derive(Debug, Default)]
pub struct Certificates {
    pub entries: Vec<Certificate>,
    /// SNI name → entry index. The default certificate is the entry for "any host".
    sni: Router,
}

impl Certificates {
    /// Checks the `[[certificate]]` tables (paths absolute, hosts valid, no host claimed twice,
    /// at most one default) without reading any file.
    pub fn from_config(
        files: Vec<Spanned<CertificateFile>>,
        apps: &[Arc<App>],
    ) -> Result<Certificates, Located> {
        let mut out = Certificates::default();
        for spanned in files {
            let span = spanned.span();
            let index = out.entries.len();
            let entry = Certificate::from_config(spanned.into_inner(), span.clone(), apps, index)?;
            let mut patterns: Vec<Option<&HostPattern>> = entry.hosts.iter().map(Some).collect();
            if entry.default {
                patterns.push(None);
            }
            for pattern in patterns {
                match out.sni.insert(pattern, "/", index) {
                    Ok(()) => {}
                    Err(other) if other == index => {}
                    Err(other) => {
                        let what = pattern.map_or_else(
                            || "is the default too".to_string(),
                            |h| format!("names host \"{h}\" too"),
                        );
                        return Err(Located::new(
                            span,
                            format!(
                                "certificate #{} ({}) {what}, like certificate #{} ({}): \
                                 each name (and the default) belongs to one certificate",
                                index + 1,
                                entry.cert.display(),
                                other + 1,
                                out.entries[other].cert.display()
                            ),
                        ));
                    }
                }
            }
            out.entries.push(entry);
        }
        Ok(out)
    }

    /// True when no certificate is configured (no socket can speak TLS then).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The certificate for a client that sent `sni` (None: no SNI): the entry naming it, else the
    /// default; None when there is neither.
    pub fn select(&self, sni: Option<&str>) -> Option<&Certificate> {
        let name = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        self.sni
            .lookup(name.as_deref(), "/")
            .and_then(|i| self.entries.get(i))
    }

    /// What `ondemand check` does for TLS: reads and checks every certificate as of `now`.
    pub fn check(&self, now: std::time::SystemTime) -> Result<(), Located> {
        self.entries.iter().try_for_each(|entry| entry.check(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn certificates(toml: &str) -> Result<Certificates, String> {
        parse(Path::new("t.toml"), toml)
            .map(|c| c.tls)
            .map_err(|e| e.to_string())
    }

    const APPS: &str =
        "[[app]]\nname = \"wiki\"\nhost = [\"wiki.example\", \"w.example\"]\nrespond = {}\n\
                        [[app]]\nname = \"any\"\nrespond = {}\n";

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let c = certificates(&format!(
            "{APPS}\
             [[certificate]]\nhosts = \"*.example\"\ncert = \"/w.pem\"\nkey = \"/w.key\"\n\
             [[certificate]]\napps = [\"wiki\"]\ncert = \"/wiki.pem\"\nkey = \"/wiki.key\"\n\
             [[certificate]]\ndefault = true\ncert = \"/d.pem\"\nkey = \"/d.key\"\n"
        ))
        .unwrap();
        let pick = |sni: Option<&str>| c.select(sni).map(|e| e.cert.to_str().unwrap());
        assert_eq!(pick(Some("wiki.example")), Some("/wiki.pem"));
        assert_eq!(pick(Some("W.Example.")), Some("/wiki.pem"));
        assert_eq!(pick(Some("blog.example")), Some("/w.pem"));
        assert_eq!(pick(Some("other.test")), Some("/d.pem"));
        assert_eq!(pick(None), Some("/d.pem"));
    }

    #[test]
    fn without_a_default_unknown_names_get_nothing() {
        let c = certificates(
            "[[certificate]]\nhosts = [\"a.example\"]\ncert = \"/a.pem\"\nkey = \"/a.key\"\n",
        )
        .unwrap();
        assert!(c.select(Some("b.example")).is_none());
        assert!(c.select(None).is_none());
        assert!(c.select(Some("a.example")).is_some());
    }

    #[test]
    fn a_host_in_two_certificates_is_refused_with_its_line() {
        let e = certificates(
            "[[certificate]]\nhosts = \"a.example\"\ncert = \"/a.pem\"\nkey = \"/a.key\"\n\
             [[certificate]]\nhosts = [\"b.example\", \"A.example\"]\ncert = \"/b.pem\"\nkey = \"/b.key\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("t.toml:5:1: "), "{e}");
        assert!(e.contains("names host \"a.example\" too"), "{e}");
    }

    #[test]
    fn two_defaults_are_refused() {
        let e = certificates(
            "[[certificate]]\ndefault = true\ncert = \"/a.pem\"\nkey = \"/a.key\"\n\
             [[certificate]]\ndefault = true\ncert = \"/b.pem\"\nkey = \"/b.key\"\n",
        )
        .unwrap_err();
        assert!(e.contains("is the default too"), "{e}");
    }

    #[test]
    fn entries_are_checked_without_reading_files() {
        let e = certificates(
            "[[certificate]]\nhosts = \"a.example\"\ncert = \"a.pem\"\nkey = \"/a.key\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("t.toml:3:8: "), "{e}");
        assert!(e.contains("absolute"), "{e}");
        let e = certificates("[[certificate]]\ncert = \"/a.pem\"\nkey = \"/a.key\"\n").unwrap_err();
        assert!(e.contains("serves no name"), "{e}");
        let e = certificates(&format!(
            "{APPS}[[certificate]]\napps = [\"nope\"]\ncert = \"/a.pem\"\nkey = \"/a.key\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("no app named \"nope\""), "{e}");
        let e = certificates(&format!(
            "{APPS}[[certificate]]\napps = \"any\"\ncert = \"/a.pem\"\nkey = \"/a.key\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("answers for any host"), "{e}");
        let e = certificates(
            "[[certificate]]\nhosts = \"a.*.example\"\ncert = \"/a.pem\"\nkey = \"/a.key\"\n",
        )
        .unwrap_err();
        assert!(e.contains("wildcard"), "{e}");
    }
}
