//! TLS for the integration tests: a throwaway PKI made with rcgen when the
//! test runs (written as PEM files for forkhorn's `--certfile`, `--keyfile`
//! and `--ca-certs`), rustls clients that speak HTTP/1.1 through a TLS
//! connection to 127.0.0.1, and starting a forkhorn whose listener is
//! `https://`.
//!
//! Every key is ECDSA P-256; nothing here reads a file it did not write.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, ProtocolVersion,
    RootCertStore, SignatureScheme, StreamOwned, SupportedProtocolVersion,
};

use super::{
    BIN, EVENTUALLY, IO_TIMEOUT, RequestLoop, Response, Server, bad, fresh_dir, request, wait_until,
};

/// The name the main server certificate is for (with IP 127.0.0.1).
pub const LOCALHOST: &str = "localhost";
/// The name of the second server certificate (SNI tests).
pub const OTHER_NAME: &str = "other.forkhorn.test";
/// The common name of the client certificate the test CA signs.
pub const CLIENT_CN: &str = "forkhorn-test-client";
/// The organization in that client certificate's subject.
pub const CLIENT_ORG: &str = "Forkhorn Tests";
/// The common name of the client certificate an untrusted CA signs.
pub const ROGUE_CN: &str = "forkhorn-rogue-client";
/// The ALPN protocol id of HTTP/1.1.
pub const HTTP_1_1: &[u8] = b"http/1.1";

// ---------------------------------------------------------------- certificates

/// Serial numbers, distinct within a test run (a renewed certificate must
/// differ from the one it replaces).
fn next_serial() -> SerialNumber {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    SerialNumber::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A self-signed CA whose subject is `CN=<name>`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(next_serial());
        let key = KeyPair::generate().expect("generate a P-256 key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the test CA");
        Ca { issuer }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names, or IP addresses such as
    /// `127.0.0.1`), with a serial number no other certificate here has.
    pub fn server_cert(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid subject alt names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with subject `CN=<cn>, O=CLIENT_ORG`.
    pub fn client_cert(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, CLIENT_ORG);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        params.serial_number = Some(next_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate a P-256 key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign with the test CA");
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
        }
    }
}

/// An end-entity certificate and its private key.
pub struct Leaf {
    /// The certificate as it goes over the wire, for comparing with what a
    /// server presented.
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    key: KeyPair,
}

impl Leaf {
    /// The private key as a PKCS#8 PEM file holds it.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }

    /// Write `<stem>.pem` (the certificate) and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> PemFiles {
        let files = PemFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        files.write(self);
        files
    }
}

/// Where a certificate and its key are on disk.
#[derive(Clone, Debug)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PemFiles {
    /// Overwrite both files with `leaf` (a renewal: same paths, new pair).
    pub fn write(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert_pem).expect("write a certificate file");
        std::fs::write(&self.key, leaf.key_pem()).expect("write a key file");
    }

    pub fn cert_str(&self) -> &str {
        path_str(&self.cert)
    }

    pub fn key_str(&self) -> &str {
        path_str(&self.key)
    }

    /// `--certfile CERT --keyfile KEY`.
    pub fn flags(&self) -> [&str; 4] {
        ["--certfile", self.cert_str(), "--keyfile", self.key_str()]
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 tmp path")
}

/// Everything a TLS test needs, made fresh for each test and written as PEM
/// files into a fresh directory (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    /// The CA forkhorn's clients trust, and `--ca-certs` names.
    pub ca: Ca,
    pub ca_file: PathBuf,
    /// For `localhost` and IP 127.0.0.1, signed by `ca`.
    pub server: Leaf,
    pub server_files: PemFiles,
    /// For `OTHER_NAME`, signed by `ca`.
    pub other: Leaf,
    pub other_files: PemFiles,
    /// `CN=CLIENT_CN, O=CLIENT_ORG`, signed by `ca`.
    pub client: Leaf,
    pub client_files: PemFiles,
    /// A CA nobody here trusts.
    pub rogue_ca: Ca,
    pub rogue_ca_file: PathBuf,
    /// `CN=ROGUE_CN`, signed by `rogue_ca`.
    pub rogue_client: Leaf,
    pub rogue_client_files: PemFiles,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = fresh_dir();
        let ca = Ca::new("forkhorn test CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA file");
        let server = ca.server_cert(&[LOCALHOST, "127.0.0.1"]);
        let server_files = server.write(&dir, "server");
        let other = ca.server_cert(&[OTHER_NAME]);
        let other_files = other.write(&dir, "other");
        let client = ca.client_cert(CLIENT_CN);
        let client_files = client.write(&dir, "client");
        let rogue_ca = Ca::new("forkhorn rogue CA");
        let rogue_ca_file = dir.join("rogue-ca.pem");
        std::fs::write(&rogue_ca_file, rogue_ca.pem()).expect("write the rogue CA file");
        let rogue_client = rogue_ca.client_cert(ROGUE_CN);
        let rogue_client_files = rogue_client.write(&dir, "rogue-client");
        Pki {
            dir,
            ca,
            ca_file,
            server,
            server_files,
            other,
            other_files,
            client,
            client_files,
            rogue_ca,
            rogue_ca_file,
            rogue_client,
            rogue_client_files,
        }
    }

    pub fn ca_str(&self) -> &str {
        path_str(&self.ca_file)
    }

    /// A client that trusts this PKI's CA, offers `http/1.1`, and has no
    /// client certificate.
    pub fn connector(&self) -> Connector {
        Connector::trusting(&self.ca)
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- clients

/// The crypto provider forkhorn itself is built with (aws-lc-rs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// How a test client connects: whom it trusts, which TLS versions, ALPN
/// ids and client certificate it offers, and whether it sends SNI.
#[derive(Clone)]
pub struct Connector {
    roots: Vec<CertificateDer<'static>>,
    /// Accept any server certificate (to observe what a server presents
    /// under a name it has no certificate for).
    accept_any: bool,
    identity: Option<(CertificateDer<'static>, Arc<PrivateKeyDer<'static>>)>,
    versions: &'static [&'static SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
    sni: bool,
    /// One config for every connection, so its session store carries
    /// tickets from one connection to the next (`sharing_sessions`).
    shared: Option<Arc<ClientConfig>>,
}

/// TLS 1.2 and 1.3, what a client offers by default.
static BOTH_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
static ONLY_TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static ONLY_TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl Connector {
    /// Trusts `ca` only; offers TLS 1.2 and 1.3, ALPN `http/1.1`, and SNI.
    pub fn trusting(ca: &Ca) -> Connector {
        Connector {
            roots: vec![ca.der()],
            accept_any: false,
            identity: None,
            versions: BOTH_VERSIONS,
            alpn: vec![HTTP_1_1.to_vec()],
            sni: true,
            shared: None,
        }
    }

    /// Resumes sessions: every connection made through this connector (or
    /// its clones) offers a ticket an earlier one received. Call it last;
    /// it fixes the settings made before it.
    pub fn sharing_sessions(mut self) -> Connector {
        self.shared = Some(self.config());
        self
    }

    /// Presents `leaf` when the server asks for a client certificate.
    pub fn with_client_cert(mut self, leaf: &Leaf) -> Connector {
        self.identity = Some((leaf.der.clone(), Arc::new(leaf.key_der())));
        self
    }

    pub fn tls12_only(mut self) -> Connector {
        self.versions = ONLY_TLS12;
        self
    }

    pub fn tls13_only(mut self) -> Connector {
        self.versions = ONLY_TLS13;
        self
    }

    /// Offers these ALPN ids (none at all with an empty list).
    pub fn alpn(mut self, ids: &[&[u8]]) -> Connector {
        self.alpn = ids.iter().map(|id| id.to_vec()).collect();
        self
    }

    /// Sends no server name indication.
    pub fn without_sni(mut self) -> Connector {
        self.sni = false;
        self
    }

    /// Accepts whatever certificate the server presents. Only for looking
    /// at that certificate; never for a test about verification.
    pub fn accepting_any_cert(mut self) -> Connector {
        self.accept_any = true;
        self
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        if let Some(shared) = &self.shared {
            return Arc::clone(shared);
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(self.versions)
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3");
        let builder = if self.accept_any {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
        } else {
            let mut roots = RootCertStore::empty();
            for root in &self.roots {
                roots.add(root.clone()).expect("a valid CA certificate");
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(vec![cert.clone()], key.clone_key())
                .expect("a matching client key"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config.enable_sni = self.sni;
        Arc::new(config)
    }

    /// Connect to 127.0.0.1:`port` and finish the handshake for `name`
    /// (checked against the server's certificate unless `accepting_any_cert`).
    /// A failed handshake is an error of kind `InvalidData` naming the TLS
    /// error; with TLS 1.3 a server refusing a client certificate may only
    /// say so at the first read, so tests send a request before concluding.
    pub fn connect(&self, port: u16, name: &str) -> io::Result<TlsClient> {
        self.connect_after(port, name, b"")
    }

    /// `connect`, sending `preamble` in the clear first (a PROXY header).
    pub fn connect_after(&self, port: u16, name: &str, preamble: &[u8]) -> io::Result<TlsClient> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        sock.set_nodelay(true)?;
        sock.write_all(preamble)?;
        let mut conn = ClientConnection::new(self.config(), server_name(name))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(TlsClient {
            reader: BufReader::new(StreamOwned::new(conn, sock)),
        })
    }

    /// The TLS record carrying the ClientHello this connector would send to
    /// `name`: the bytes a stalled client sends part of.
    pub fn client_hello(&self, name: &str) -> Vec<u8> {
        let mut conn =
            ClientConnection::new(self.config(), server_name(name)).expect("a client connection");
        let mut hello = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut hello).expect("write to a Vec");
        }
        hello
    }
}

fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).expect("a DNS name or an IP address")
}

/// A verifier that accepts every certificate (signatures are still checked,
/// so the server really holds the key of what it presented).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection that can carry several requests (keep-alive).
pub struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    pub fn connection(&self) -> &ClientConnection {
        &self.reader.get_ref().conn
    }

    /// The certificate the server presented (its end-entity certificate).
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        self.connection()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned()
    }

    /// The ALPN id the server selected.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.connection().alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.connection().protocol_version()
    }

    /// Whether the handshake was full or resumed a session.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.connection().handshake_kind()
    }

    /// This end's address, which the server sees as the client's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().sock.local_addr()
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// A keep-alive GET on this connection.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(&request("GET", path, &[], b""))?;
        self.read_response()
    }

    /// Read one response (an interim 1xx counts as one).
    pub fn read_response(&mut self) -> io::Result<Response> {
        super::read_response(&mut self.reader)
    }

    /// How long each read may wait (`IO_TIMEOUT` unless set).
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().sock.set_read_timeout(Some(timeout))
    }

    /// Send `bytes` and a close_notify alert behind them in one write to the
    /// socket, as a client does that has said all it will say (the TLS
    /// half-close; the TCP connection stays open both ways).
    pub fn send_then_close_notify(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.conn.writer().write_all(bytes)?;
        stream.conn.send_close_notify();
        let mut records = Vec::new();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut records)?;
        }
        stream.sock.write_all(&records)
    }

    /// Read until the server ends the connection (end of stream with or
    /// without close_notify, or a reset) or `timeout` passes: the bytes
    /// that arrived, and whether it ended.
    pub fn read_until_closed(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        super::read_until_closed(&mut self.reader, |r| &r.get_ref().sock, timeout)
    }

    /// Whether the server ended the connection: the next read finds the end
    /// of the stream (with or without close_notify) or a reset.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ),
        }
    }
}

/// One `GET path` with `Connection: close` on a new TLS connection to `name`;
/// the response and the certificate the server presented.
pub fn tls_get(
    connector: &Connector,
    port: u16,
    name: &str,
    path: &str,
) -> io::Result<(Response, CertificateDer<'static>)> {
    let mut client = connector.connect(port, name)?;
    client.send(&request("GET", path, &[("Connection", "close")], b""))?;
    let response = client.read_response()?;
    let cert = client
        .peer_certificate()
        .ok_or_else(|| bad("the server presented no certificate".to_owned()))?;
    Ok((response, cert))
}

// ---------------------------------------------------------------- servers

/// Start `forkhorn ARGS --worker-tmp-dir <fresh dir>`, where ARGS carry
/// their own `-b` flags (at least one `https://` bind, or `--certfile` with
/// plain binds), with `env` added for the master; wait until it logs
/// `Listening at: https://127.0.0.1:PORT (PID)`. The server's `port` is
/// that PORT; `listening_port` finds the others.
pub fn start_https(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(BIN);
    command.envs(env.iter().copied()).args(args);
    let mut server = Server::spawn(command);
    // A master that exits instead (a refused flag) fails the test at once.
    let marker = "Listening at: https://127.0.0.1:";
    let mut exited = None;
    wait_until(EVENTUALLY, || {
        exited = server.child.try_wait().ok().flatten();
        exited.is_some() || server.log.contains(marker)
    });
    if let Some(status) = exited {
        wait_until(EVENTUALLY, || server.log.has_ended());
        panic!(
            "forkhorn {args:?} exited ({status}) instead of listening; stderr:\n{}",
            server.log
        );
    }
    server.port = listening_port(&server, "https");
    server
}

/// The port of the server's `Listening at: SCHEME://127.0.0.1:PORT (PID)`
/// line, waiting for it; the first such line if there are several.
pub fn listening_port(server: &Server, scheme: &str) -> u16 {
    let marker = format!("Listening at: {scheme}://127.0.0.1:");
    let Some(line) = server.log.wait_for(EVENTUALLY, |l| l.contains(&marker)) else {
        panic!(
            "forkhorn did not report `{marker}PORT`; stderr:\n{}",
            server.log
        );
    };
    let after = &line[line.find(&marker).expect("marker in line") + marker.len()..];
    let (port, rest) = after
        .split_once(' ')
        .expect("`PORT (PID)` after the marker");
    assert_eq!(
        rest,
        format!("({})", server.master),
        "the listening line names the master pid: {line}"
    );
    port.parse()
        .unwrap_or_else(|_| panic!("no port in {line:?}"))
}

// ---------------------------------------------------------------- a request loop

/// `GET path` back to back, each on a new TLS connection to `name`; each
/// 200 is kept as the certificate the server presented.
pub fn tls_request_loop(
    connector: Connector,
    port: u16,
    name: &str,
    path: &str,
) -> RequestLoop<CertificateDer<'static>> {
    let (name, path) = (name.to_owned(), path.to_owned());
    RequestLoop::start_with(move || tls_get(&connector, port, &name, &path))
}
