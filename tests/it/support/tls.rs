//! HTTPS test helpers: a throwaway certificate authority that issues PEM files at test time
//! (rcgen), and the two TLS clients the tests use: curl, and python3's ssl module
//! (`tests/apps/tls_client.py`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber,
};

use super::upstream::{app_path, PYTHON};

/// A certificate authority made for one test; clients trust its `ca.pem`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, for `curl --cacert` and the python client.
    pub ca_pem: PathBuf,
}

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Makes a CA and writes `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ondemand test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, issuer.pem()).unwrap();
        TestCa { issuer, ca_pem }
    }

    /// Issues a certificate for `hosts` with serial number `serial` (also its common name,
    /// `serial-N`), valid from 1975 to 4096, and writes `dir/NAME.pem` and `dir/NAME.key`.
    pub fn issue(&self, dir: &Path, name: &str, hosts: &[&str], serial: u64) -> Issued {
        self.issue_with(dir, name, hosts, serial, |_| {})
    }

    /// Like [`issue`](Self::issue), with `adjust` applied to the parameters (dates...).
    pub fn issue_with(
        &self,
        dir: &Path,
        name: &str,
        hosts: &[&str],
        serial: u64,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(hosts).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("serial-{serial}"));
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// A `[[certificate]]` table for `issued`, serving `hosts` (TOML list syntax inside).
pub fn certificate_toml(issued: &Issued, hosts: &str, default: bool) -> String {
    format!(
        "[[certificate]]\nhosts = [{hosts}]\ncert = \"{}\"\nkey = \"{}\"\ndefault = {default}\n",
        issued.cert.display(),
        issued.key.display()
    )
}

/// Runs curl against `https://HOST:PORT/PATH` resolved to 127.0.0.1, trusting `ca`, with
/// `-w '\n%{http_version}'` appended: returns (exit code, body, http version, stderr).
pub fn curl_https(
    port: u16,
    host: &str,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> (i32, String, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\\n%{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = stdout.rsplit_once('\n').unwrap_or((&stdout, ""));
    (
        out.status.code().unwrap_or(-1),
        body.to_string(),
        version.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One handshake with the python client: `sni` None sends no SNI. `get` adds one GET on it.
pub fn probe(
    port: u16,
    ca: &Path,
    sni: Option<&str>,
    alpn: Option<&str>,
    get: Option<(&str, &str)>,
) -> serde_json::Value {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(app_path("tls_client.py"))
        .args(["probe", "--port", &port.to_string(), "--ca"])
        .arg(ca);
    match sni {
        Some(name) => cmd.args(["--sni", name]),
        None => cmd.arg("--no-sni"),
    };
    if let Some(alpn) = alpn {
        cmd.args(["--alpn", alpn]);
    }
    if let Some((host, path)) = get {
        cmd.args(["--host", host, "--get", path]);
    }
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run tests/apps/tls_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "tls_client.py probe printed {stdout:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
