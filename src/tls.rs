//! TLS settings: the certificates and keys, read and checked in the master.
//!
//! The master builds one rustls `ServerConfig` before it forks, so a bad
//! file stops forkhorn at start (exit 2) and `--check-config` finds it too,
//! and key files are read while the master still runs as the user who
//! started it: workers that drop privileges (`-u`) never open them. A HUP
//! builds a new one from the files as they are then; if that fails the
//! workers keep the config they have (`arbiter::reload`).
//!
//! rustls with the aws-lc-rs provider: its default cipher suites (and
//! post-quantum key exchange), TLS 1.2 and 1.3 only. The handshake itself runs in the worker's event loop
//! (`worker/conn.rs`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// What a client must show (`--cert-reqs`, gunicorn's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// 0: none is asked for.
    None,
    /// 1: asked for; a client without one is served, one with a bad one is not.
    Optional,
    /// 2: a client without a certificate signed by `--ca-certs` is refused.
    Required,
}

/// The oldest protocol version served (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (the default).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// The TLS flags as given: which files, and what is asked of clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--certfile`/`--keyfile` pairs, in order; the first one answers
    /// clients whose server name matches no certificate.
    pub pairs: Vec<(PathBuf, PathBuf)>,
    /// `--ca-certs`: the CAs that sign client certificates.
    pub ca_certs: Option<PathBuf>,
    /// `--cert-reqs`.
    pub client_certs: ClientCerts,
    /// `--tls-min-version`.
    pub min_version: MinVersion,
}

/// The TLS settings workers serve with: the files, and the config built
/// from them when they were last read.
#[derive(Clone)]
pub struct Tls {
    /// Where the config came from (read again on HUP).
    pub files: TlsFiles,
    /// What each TLS connection's session is made from.
    pub config: Arc<ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Read and check every file and build the server config. The error is
    /// one line naming the file and the fix.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut named = Vec::new();
        for (cert, key) in &files.pairs {
            named.push(load_pair(cert, key, &provider)?);
        }
        let Some((_, default)) = named.first().cloned() else {
            return Err("--keyfile and --certfile: give at least one pair".to_owned());
        };
        let resolver = Arc::new(ByServerName { named, default });
        let versions: &[&'static rustls::SupportedProtocolVersion] = match files.min_version {
            MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("--tls-min-version: {e}"))?;
        let builder = match (files.client_certs, &files.ca_certs) {
            (ClientCerts::None, _) => builder.with_no_client_auth(),
            (reqs, None) => {
                let n = if reqs == ClientCerts::Required { 2 } else { 1 };
                return Err(format!(
                    "--cert-reqs {n} needs --ca-certs FILE: the CA certificates that sign your clients' certificates"
                ));
            }
            (reqs, Some(ca)) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
                let verifier = if reqs == ClientCerts::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("--ca-certs {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(resolver);
        // Only HTTP/1.1 is spoken; a client offering h2 as well gets http/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Session tickets sealed with a key made here, in the master: every
        // worker inherits it at fork, so a client resumes its session on
        // whichever worker accepts its next connection (a per-process
        // session cache would find it one time in `-w`). Each HUP makes a
        // new key. rustls also rotates it every 6 hours, in each process on
        // its own: from then until the next HUP, a ticket resumes only on
        // the worker that sealed it (a full handshake elsewhere, no error).
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("cannot make a TLS session ticket key: {e}"))?;
        // The ticketer refuses to open a ticket longer than the longest it
        // has sealed itself (so garbage costs no decryption), and a worker
        // fresh from fork has sealed none: it would turn away every ticket
        // until its own first one. One sealed here, as long as a ticket
        // carrying a client certificate chain may be, is inherited.
        let _ = config.ticketer.encrypt(&[0u8; 16 * 1024]);
        Ok(Tls {
            files,
            config: Arc::new(config),
        })
    }
}

/// A certificate chain and its key, checked to belong together, with the
/// DNS names the certificate is for.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(Vec<String>, Arc<CertifiedKey>), String> {
    let chain = load_certs("--certfile", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(e) => format!(
            "cannot read --keyfile {}: {e} (is the path right, and readable by the user starting forkhorn?)",
            key.display()
        ),
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "--keyfile {}: no private key in it (expected a PEM block such as -----BEGIN PRIVATE KEY-----)",
            key.display()
        ),
        e => format!("--keyfile {}: not a valid PEM private key: {e}", key.display()),
    })?;
    let certified = CertifiedKey::from_der(chain, key_der, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "--keyfile {} does not match --certfile {} (give the key the certificate was issued for)",
            key.display(),
            cert.display()
        ),
        e => format!(
            "--keyfile {}: cannot use this key: {e} (RSA, ECDSA P-256/P-384 and Ed25519 keys work)",
            key.display()
        ),
    })?;
    let leaf = certified
        .end_entity_cert()
        .map_err(|e| format!("--certfile {}: {e}", cert.display()))?;
    // `load_certs` parsed every certificate already, so this holds.
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) else {
        return Err(format!(
            "--certfile {}: not an X.509 certificate",
            cert.display()
        ));
    };
    let names = dns_names(&parsed);
    if !parsed.validity().is_valid() {
        // Still served: a client that does not check dates (a health
        // check, say) keeps working while the operator renews it.
        log::warn!(
            "--certfile {}: the certificate is not valid now (valid from {} to {}); renew it and send HUP",
            cert.display(),
            parsed.validity().not_before,
            parsed.validity().not_after
        );
    }
    Ok((names, Arc::new(certified)))
}

/// Every certificate in a PEM file; at least one.
fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(e) => format!(
            "cannot read {flag} {}: {e} (is the path right, and readable by the user starting forkhorn?)",
            path.display()
        ),
        e => format!("{flag} {}: not valid PEM: {e}", path.display()),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected PEM blocks -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    for cert in &certs {
        if x509_parser::parse_x509_certificate(cert).is_err() {
            return Err(format!(
                "{flag} {}: a PEM block in it is not an X.509 certificate",
                path.display()
            ));
        }
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs("--ca-certs", path)? {
        roots
            .add(cert)
            .map_err(|e| format!("--ca-certs {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The subjectAltName DNS names of a certificate, lower-cased.
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The subject of a client's DER certificate, as `CN=name, O=org`.
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

/// Picks the certificate for the name a client asks for (SNI), from the
/// names each certificate is for; the first pair otherwise.
#[derive(Debug)]
struct ByServerName {
    named: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(asked) = hello.server_name() else {
            return Some(Arc::clone(&self.default));
        };
        let chosen = self
            .named
            .iter()
            .find(|(names, _)| names.iter().any(|n| name_matches(n, asked)))
            .map_or(&self.default, |(_, key)| key);
        Some(Arc::clone(chosen))
    }
}

/// Whether a certificate name (`example.com`, `*.example.com`) covers `asked`.
fn name_matches(name: &str, asked: &str) -> bool {
    if let Some(suffix) = name.strip_prefix("*.") {
        // A wildcard covers exactly one label: a.example.com, not example.com
        // nor a.b.example.com.
        return asked
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix));
    }
    name.eq_ignore_ascii_case(asked)
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "A.Example.COM"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("example.com", "EXAMPLE.com"));
        assert!(!name_matches("example.com", "www.example.com"));
    }
}
