//! One `[[certificate]]`: a certificate chain and its private key in PEM files (what certbot and
//! other ACME clients leave in place, such as `fullchain.pem` and `privkey.pem`), and the host
//! names it serves.
//!
//! The files are read on the first handshake that needs them, not at start: an activation that
//! only serves plain HTTP (or only another certificate's hosts) never pays for them. A file that
//! fails to load is logged and tried again after [`RETRY_AFTER`], so a renewal caught half-way
//! heals by itself. `ondemand check` reads everything at once and also checks the dates and the
//! host names, which the server does not refuse to serve (it logs them instead).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{App, CertificateFile, Located};
use crate::routing::HostPattern;

/// How long a certificate that failed to load is not tried again (each try is logged).
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// ALPN protocols offered, in order of preference: browsers get HTTP/2.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One `[[certificate]]` entry.
#[derive(Debug)]
pub struct Certificate {
    /// The certificate chain file (leaf first, then intermediates).
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// Names it serves (from `hosts` and the hosts of the apps named in `apps`).
    pub hosts: Vec<HostPattern>,
    /// Served to clients without SNI and to names no certificate names.
    pub default: bool,
    /// Its number in the file (1-based), for messages.
    number: usize,
    spans: Spans,
    /// The TLS settings built from the files, once read: one per configuration, so a reload
    /// reads renewed files again.
    loaded: Mutex<Loaded>,
}

/// Where the entry's parts are written, for `check` errors.
#[derive(Debug, Clone)]
struct Spans {
    entry: std::ops::Range<usize>,
    cert: std::ops::Range<usize>,
    key: std::ops::Range<usize>,
    hosts: Option<std::ops::Range<usize>>,
}

#[derive(Debug)]
enum Loaded {
    NotYet,
    Ready(Arc<ServerConfig>),
    Failed {
        at: Instant,
        error: Arc<CertificateError>,
    },
}

/// What is wrong with a certificate or key file; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read the {what} file {}: {source} (check the path, and that ondemand's user may read it)", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid PEM file: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("{} holds no certificate in PEM form (a block starting with -----BEGIN CERTIFICATE-----): name the certificate chain file, like certbot's fullchain.pem", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no private key in PEM form (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY): name the key file, like certbot's privkey.pem", path.display())]
    NoKey { path: PathBuf },
    #[error("the private key in {} cannot be used: {detail} (RSA keys of 2048 bits or more, ECDSA P-256 and P-384, and Ed25519 keys work)", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("the private key in {} does not belong to the certificate in {}: name the key issued with this certificate (with certbot: privkey.pem of the same live/ directory)", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{what} in {} is not an X.509 certificate: {detail}", path.display())]
    Parse {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{what} in {} ({subject}) expired on {when}: renew it (certbot renew), then reload ondemand (systemctl reload ondemand)", path.display())]
    Expired {
        path: PathBuf,
        what: String,
        subject: String,
        when: String,
    },
    #[error("{what} in {} ({subject}) is not valid before {when}: check the system clock, or wait", path.display())]
    NotYetValid {
        path: PathBuf,
        what: String,
        subject: String,
        when: String,
    },
    #[error("the certificate in {} is not valid for host \"{host}\" (it names {names}): use a certificate that names it, or take the host out of this entry", path.display())]
    HostNotCovered {
        path: PathBuf,
        host: String,
        names: String,
    },
    #[error("cannot set up TLS with {}: {detail}", path.display())]
    Setup { path: PathBuf, detail: String },
}

impl Certificate {
    /// Checks one `[[certificate]]` table (number `index + 1`) without reading its files.
    pub fn from_config(
        file: CertificateFile,
        entry: std::ops::Range<usize>,
        apps: &[Arc<App>],
        index: usize,
    ) -> Result<Certificate, Located> {
        let number = index + 1;
        let cert = absolute(&file.cert, number, "cert")?;
        let key = absolute(&file.key, number, "key")?;
        let mut hosts: Vec<HostPattern> = Vec::new();
        let mut add = |h: HostPattern| {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        };
        if let Some(list) = &file.hosts {
            if list.get_ref().0.is_empty() {
                return Err(Located::new(
                    list.span(),
                    format!("certificate #{number}: hosts = [] names nothing"),
                ));
            }
            for raw in &list.get_ref().0 {
                let pattern = HostPattern::parse(raw).map_err(|e| {
                    Located::new(list.span(), format!("certificate #{number}: {e}"))
                })?;
                add(pattern);
            }
        }
        if let Some(list) = &file.apps {
            for name in &list.get_ref().0 {
                let Some(app) = apps.iter().find(|a| *a.name == **name) else {
                    return Err(Located::new(
                        list.span(),
                        format!(
                            "certificate #{number}: there is no app named {name:?} \
                             (apps = [...] names [[app]] entries, which must come first)"
                        ),
                    ));
                };
                if app.hosts.is_empty() {
                    return Err(Located::new(
                        list.span(),
                        format!(
                            "certificate #{number}: app {name:?} answers for any host, so no \
                             name can select this certificate: list its names in `hosts`, or \
                             make it the `default = true` certificate"
                        ),
                    ));
                }
                app.hosts.iter().cloned().for_each(&mut add);
            }
        }
        let default = file.default.unwrap_or(false);
        if hosts.is_empty() && !default {
            return Err(Located::new(
                entry,
                format!(
                    "certificate #{number} ({}) serves no name: give it `hosts = [\"example.com\"]`, \
                     `apps = [\"app-name\"]`, or `default = true`",
                    cert.display()
                ),
            ));
        }
        Ok(Certificate {
            cert,
            key,
            hosts,
            default,
            number,
            spans: Spans {
                entry,
                cert: file.cert.span(),
                key: file.key.span(),
                hosts: file.hosts.as_ref().map(|h| h.span()),
            },
            loaded: Mutex::new(Loaded::NotYet),
        })
    }

    /// The TLS settings that present this certificate, reading its files on first use.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Arc<CertificateError>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match &*loaded {
            Loaded::Ready(config) => return Ok(config.clone()),
            Loaded::Failed { at, error } if at.elapsed() < RETRY_AFTER => return Err(error.clone()),
            _ => {}
        }
        let started = Instant::now();
        match self.load() {
            Ok(config) => {
                tracing::debug!(
                    cert = %self.cert.display(),
                    "loaded certificate #{} in {:?}",
                    self.number,
                    started.elapsed()
                );
                *loaded = Loaded::Ready(config.clone());
                Ok(config)
            }
            Err(e) => {
                tracing::error!(
                    "certificate #{}: {e}. TLS handshakes that need it fail until it is fixed \
                     (tried again in {}s; `ondemand check` checks every certificate)",
                    self.number,
                    RETRY_AFTER.as_secs()
                );
                let error = Arc::new(e);
                *loaded = Loaded::Failed {
                    at: Instant::now(),
                    error: error.clone(),
                };
                Err(error)
            }
        }
    }

    /// Reads the files and builds the TLS settings; an expired certificate is served, with a
    /// warning (refusing it would not help its clients, who refuse it themselves).
    fn load(&self) -> Result<Arc<ServerConfig>, CertificateError> {
        let key = self.certified_key()?;
        self.warn_if_out_of_date(key.cert[0].clone());
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| CertificateError::Setup {
                path: self.cert.clone(),
                detail: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Always(Arc::new(key))));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Logs a warning if the leaf certificate is expired or not valid yet. Off the handshake's
    /// path when there is a runtime: it runs while the handshake waits for the client.
    fn warn_if_out_of_date(&self, leaf: CertificateDer<'static>) {
        let (path, number) = (self.cert.clone(), self.number);
        let warn = move || {
            if let Err(e) = check_dates(&path, &[leaf], SystemTime::now()) {
                tracing::warn!("certificate #{number}: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { warn() })),
            Err(_) => warn(),
        }
    }

    /// The chain and the signing key, checked to belong together.
    fn certified_key(&self) -> Result<CertifiedKey, CertificateError> {
        self.certify(read_chain(&self.cert)?, read_key(&self.key)?)
    }

    fn certify(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<CertifiedKey, CertificateError> {
        let signing_key = provider().key_provider.load_private_key(key).map_err(|e| {
            CertificateError::BadKey {
                path: self.key.clone(),
                detail: e.to_string(),
            }
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(CertificateError::Mismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                })
            }
            // Unknown: the key type cannot tell its public key; the handshake will tell.
            _ => Ok(certified),
        }
    }

    /// Everything `ondemand check` verifies: the files load, the key matches, every certificate
    /// of the chain is within its dates at `now`, and the leaf names every host of the entry.
    /// Errors point at the `cert` or `key` value (or `hosts`) they are about.
    pub fn check(&self, now: SystemTime) -> Result<(), Located> {
        let at = |span: &std::ops::Range<usize>| {
            let span = span.clone();
            let number = self.number;
            move |e: CertificateError| Located::new(span, format!("certificate #{number}: {e}"))
        };
        let chain = read_chain(&self.cert).map_err(at(&self.spans.cert))?;
        let key = read_key(&self.key).map_err(at(&self.spans.key))?;
        let key = self.certify(chain, key).map_err(at(&self.spans.key))?;
        check_dates(&self.cert, &key.cert, now).map_err(at(&self.spans.cert))?;
        let names = leaf_names(&self.cert, &key.cert[0]).map_err(at(&self.spans.cert))?;
        let hosts_span = self.spans.hosts.clone().unwrap_or(self.spans.entry.clone());
        for host in &self.hosts {
            if !covers(&names, host) {
                return Err(at(&hosts_span)(CertificateError::HostNotCovered {
                    path: self.cert.clone(),
                    host: host.to_string(),
                    names: if names.is_empty() {
                        "no host name".to_string()
                    } else {
                        names.join(", ")
                    },
                }));
            }
        }
        Ok(())
    }

    /// One line for `ondemand check`: the files and the names they serve.
    pub fn describe(&self) -> (String, String) {
        let mut names: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        if self.default {
            names.push("(default)".to_string());
        }
        (names.join(","), self.cert.display().to_string())
    }
}

/// Presents one certificate to every client (the SNI choice is made before, in `handshake`).
#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesServerCert for Always {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The cryptography: ring, with rustls' safe defaults (AEAD suites with forward secrecy only).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn absolute(value: &toml::Spanned<String>, number: usize, key: &str) -> Result<PathBuf, Located> {
    if value.get_ref().starts_with('/') {
        Ok(PathBuf::from(value.get_ref()))
    } else {
        Err(Located::new(
            value.span(),
            format!(
                "certificate #{number}: {key} = {:?} must be an absolute path (like \
                 \"/etc/letsencrypt/live/example.com/{}\")",
                value.get_ref(),
                if key == "cert" {
                    "fullchain.pem"
                } else {
                    "privkey.pem"
                }
            ),
        ))
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: pem::Error) -> CertificateError {
    CertificateError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let bytes = read(path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertificateError> {
    let bytes = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => CertificateError::NoKey {
            path: path.to_path_buf(),
        },
        e => pem_error(path, e),
    })
}

/// Which certificate of a chain, in words.
fn nth(i: usize) -> String {
    if i == 0 {
        "the certificate".to_string()
    } else {
        format!("certificate #{} of the chain (an intermediate)", i + 1)
    }
}

fn parse_x509<'a>(
    path: &Path,
    i: usize,
    der: &'a CertificateDer<'_>,
) -> Result<x509_parser::certificate::X509Certificate<'a>, CertificateError> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| CertificateError::Parse {
            path: path.to_path_buf(),
            what: nth(i),
            detail: e.to_string(),
        })
}

/// Every certificate of `chain` is within its validity dates at `now`.
fn check_dates(
    path: &Path,
    chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), CertificateError> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for (i, der) in chain.iter().enumerate() {
        let cert = parse_x509(path, i, der)?;
        let validity = cert.validity();
        let subject = cert.subject().to_string();
        if validity.not_after.timestamp() < now {
            return Err(CertificateError::Expired {
                path: path.to_path_buf(),
                what: nth(i),
                subject,
                when: date(validity.not_after.timestamp()),
            });
        }
        if validity.not_before.timestamp() > now {
            return Err(CertificateError::NotYetValid {
                path: path.to_path_buf(),
                what: nth(i),
                subject,
                when: date(validity.not_before.timestamp()),
            });
        }
    }
    Ok(())
}

fn date(unix: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The DNS names of the leaf certificate, lower-case: its subjectAltName entries, or its
/// common name when it has none.
fn leaf_names(path: &Path, leaf: &CertificateDer<'_>) -> Result<Vec<String>, CertificateError> {
    use x509_parser::extensions::GeneralName;
    let cert = parse_x509(path, 0, leaf)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Parse {
            path: path.to_path_buf(),
            what: nth(0),
            detail: format!("its subjectAltName: {e}"),
        })?;
    let names: Vec<String> = match san {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        None => cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect(),
    };
    Ok(names)
}

/// True when a certificate naming `names` is valid for every name `host` matches (as far as a
/// certificate can be: `*.example` in a certificate covers one label, the host pattern any depth,
/// so a wildcard pattern needs the same wildcard in the certificate).
fn covers(names: &[String], host: &HostPattern) -> bool {
    match host {
        HostPattern::Exact(h) => {
            if h.starts_with('[') || h.parse::<std::net::IpAddr>().is_ok() {
                return true; // an address: SNI never carries one, nothing to check
            }
            names.iter().any(|n| {
                n == h
                    || n.strip_prefix('*').is_some_and(|suffix| {
                        h.strip_suffix(suffix)
                            .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                    })
            })
        }
        HostPattern::Wildcard(suffix) => names.iter().any(|n| n.strip_prefix('*') == Some(suffix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_coverage_follows_certificate_wildcard_rules() {
        let exact = |h: &str| HostPattern::parse(h).unwrap();
        let n = names(&["example.com", "*.example.com"]);
        assert!(covers(&n, &exact("example.com")));
        assert!(covers(&n, &exact("www.example.com")));
        assert!(!covers(&n, &exact("a.b.example.com")), "one label only");
        assert!(covers(&n, &exact("*.example.com")));
        assert!(!covers(&n, &exact("*.other.com")));
        assert!(!covers(
            &names(&["www.example.com"]),
            &exact("*.example.com")
        ));
        assert!(covers(&[], &exact("127.0.0.1")));
    }
}
