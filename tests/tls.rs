//! TLS listeners as a client sees them: `-b https://...` with `--certfile`
//! and `--keyfile` serves HTTP/1.1 through TLS beside plain listeners; ALPN
//! selects `http/1.1`; SNI picks among several certificates; a minimum
//! version and client certificates are enforced; bad certificate files stop
//! the master before it forks; HUP puts a renewed certificate live without
//! failing a request (and keeps the old one when the new file is broken);
//! failed handshakes are counted and cost no worker, and stalled ones do not
//! block a one-worker server; WSGI apps see `https` and the client
//! certificate; the public request corpus passes through TLS.
//!
//! Certificates are made fresh for each test (`common::tls::Pki`); clients
//! are rustls over `TcpStream`, plus curl (OpenSSL) where a second TLS stack
//! adds something, and the corpus runner's Python `ssl`.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::Signal;
use rustls::{HandshakeKind, ProtocolVersion};
use serde_json::Value;

use common::corpus::{CORPUS_OPTIONS, passes_in_every_mode};
use common::tls::{
    CLIENT_CN, CLIENT_ORG, Connector, HTTP_1_1, LOCALHOST, OTHER_NAME, Pki, listening_port,
    path_str, start_https, tls_get, tls_request_loop,
};
use common::{
    EVENTUALLY, Response, Server, get, metrics_port, open_sockets, python, read_until_closed,
    request, run_to_exit,
};

/// What a request must not wait longer for while stalled clients are
/// connected (a healthy one takes a few milliseconds).
const AT_ONCE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- helpers

/// `forkhorn -b https://127.0.0.1:0 --certfile ... --keyfile ... EXTRA echo`
/// with one worker (EXTRA may add binds, workers, and TLS flags).
fn echo_server(pki: &Pki, extra: &[&str]) -> Server {
    let mut args = vec!["-w", "1", "-b", "https://127.0.0.1:0"];
    args.extend(pki.server_files.flags());
    args.extend(extra);
    args.push("echo");
    start_https(&args, &[])
}

fn json_of(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.text()))
}

/// `GET path` over a new TLS connection to `localhost`; must answer 200.
fn get_ok(server: &Server, connector: &Connector, path: &str) -> Value {
    let (response, _) = tls_get(connector, server.port, LOCALHOST, path)
        .unwrap_or_else(|e| panic!("GET {path} over TLS: {e}; log:\n{}", server.log));
    assert_eq!(response.status, 200, "{response:?}");
    json_of(&response)
}

/// `GET path` over a new TLS connection must fail (at the handshake, or
/// when a TLS 1.3 server refuses the client's certificate after it); what
/// went wrong, for the failure message of a test that goes on.
fn assert_refused(server: &Server, connector: &Connector, path: &str, why: &str) -> String {
    match tls_get(connector, server.port, LOCALHOST, path) {
        Ok((response, _)) => panic!(
            "{why}: expected a failed handshake, got {response:?}; log:\n{}",
            server.log
        ),
        Err(e) => e.to_string(),
    }
}

/// The echo app's `client_cert_subject`: the subject of the client's
/// certificate, or null.
fn subject(echo: &Value) -> Option<&str> {
    match &echo["client_cert_subject"] {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => panic!("client_cert_subject is {other} in {echo}"),
    }
}

/// Run curl (OpenSSL) with `args`, never through a proxy; its output.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is needed by the TLS tests; install it (apt-get install curl)")
}

/// `https://localhost:PORT/PATH` for curl, resolved to 127.0.0.1.
fn curl_url(port: u16, path: &str) -> [String; 3] {
    [
        "--resolve".to_owned(),
        format!("{LOCALHOST}:{port}:127.0.0.1"),
        format!("https://{LOCALHOST}:{port}{path}"),
    ]
}

/// The value of the metric line `name` (labels included) in `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `forkhorn_tls_handshake_failures_total` from the master's /metrics.
fn handshake_failures(metrics_port: u16) -> Option<f64> {
    let text = get(metrics_port, "/metrics").ok()?.text();
    metric(&text, "forkhorn_tls_handshake_failures_total")
}

fn connect_raw(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, common::IO_TIMEOUT).expect("connect");
    stream.set_nodelay(true).expect("set nodelay");
    stream
}

/// Whether the server has sent anything on, or closed, `stream`.
fn server_spoke(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("set nonblocking");
    let mut byte = [0u8; 1];
    let spoke = !matches!((&*stream).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("set blocking");
    spoke
}

// ---------------------------------------------------------------- listeners

#[test]
fn a_get_over_tls_says_https_and_the_plain_listener_beside_it_says_http() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["-b", "http://127.0.0.1:0"]);
    let plain = listening_port(&server, "http");
    assert_ne!(plain, server.port);

    let mut client = pki
        .connector()
        .connect(server.port, LOCALHOST)
        .unwrap_or_else(|e| panic!("TLS handshake: {e}; log:\n{}", server.log));
    let local = client.local_addr().expect("local addr");
    client
        .send(&request(
            "GET",
            "/over/tls?x=1",
            &[("Connection", "close")],
            b"",
        ))
        .expect("send");
    let response = client.read_response().expect("a response over TLS");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("Server"), Some("forkhorn"), "{response:?}");
    let echo = json_of(&response);
    assert_eq!(echo["scheme"], "https", "{echo}");
    assert_eq!(echo["target"], "/over/tls?x=1", "{echo}");
    assert_eq!(echo["client_addr"], local.to_string(), "{echo}");
    assert_eq!(subject(&echo), None, "no client certificate was sent");
    assert!(
        client.is_closed_by_server(),
        "Connection: close is honoured"
    );

    let response = get(plain, "/in/the/clear").expect("GET on the plain listener");
    assert_eq!(response.status, 200, "{response:?}");
    let echo = json_of(&response);
    assert_eq!(echo["scheme"], "http", "{echo}");
    assert_eq!(subject(&echo), None, "{echo}");
}

#[test]
fn curl_verifies_the_certificate_against_the_test_ca_and_only_that() {
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    let url = curl_url(server.port, "/from/curl");

    let mut args = vec!["--cacert", pki.ca_str()];
    args.extend(url.iter().map(String::as_str));
    let out = curl(&args);
    assert!(
        out.status.success(),
        "curl --cacert: {}; log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log
    );
    let echo: Value = serde_json::from_slice(&out.stdout).expect("curl got the echo JSON");
    assert_eq!(echo["scheme"], "https", "{echo}");
    assert_eq!(echo["target"], "/from/curl", "{echo}");

    // Trusting another CA, curl refuses the server (exit 60: the peer's
    // certificate cannot be verified): the certificate is really checked.
    let mut args = vec!["--cacert", path_str(&pki.rogue_ca_file)];
    args.extend(url.iter().map(String::as_str));
    let out = curl(&args);
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl trusting another CA: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_a_certfile_and_no_https_bind_every_bind_is_tls() {
    let pki = Pki::new();
    let mut args = vec!["-w", "1", "-b", "127.0.0.1:0", "-b", "127.0.0.1:0"];
    args.extend(pki.server_files.flags());
    args.push("echo");
    let server = start_https(&args, &[]);
    assert!(
        common::wait_until(EVENTUALLY, || server
            .log
            .count(|l| l.contains("Listening at: https://127.0.0.1:"))
            == 2),
        "both binds are TLS; log:\n{}",
        server.log
    );
    assert!(
        !server.log.contains("Listening at: http://"),
        "no plain listener; log:\n{}",
        server.log
    );
    assert_eq!(get_ok(&server, &pki.connector(), "/")["scheme"], "https");
}

// ---------------------------------------------------------------- HTTP through TLS

#[test]
fn several_requests_share_one_tls_connection() {
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    let mut client = pki
        .connector()
        .connect(server.port, LOCALHOST)
        .unwrap_or_else(|e| panic!("TLS handshake: {e}; log:\n{}", server.log));
    let local = client.local_addr().expect("local addr").to_string();
    for i in 0..5 {
        let path = format!("/keep/{i}");
        let response = client
            .get(&path)
            .unwrap_or_else(|e| panic!("request {i} on the kept connection: {e}"));
        assert_eq!(response.status, 200, "{response:?}");
        assert_ne!(response.header("Connection"), Some("close"), "{response:?}");
        let echo = json_of(&response);
        assert_eq!(echo["target"], path, "{echo}");
        assert_eq!(echo["client_addr"], local, "the same connection: {echo}");
    }
    client
        .send(&request("GET", "/last", &[("Connection", "close")], b""))
        .expect("send");
    assert_eq!(client.read_response().expect("last response").status, 200);
    assert!(
        client.is_closed_by_server(),
        "closed after Connection: close"
    );
}

#[test]
fn bodies_of_declared_length_and_chunked_bodies_arrive_whole_over_tls() {
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut client = pki
        .connector()
        .connect(server.port, LOCALHOST)
        .unwrap_or_else(|e| panic!("TLS handshake: {e}; log:\n{}", server.log));

    // Larger than a TLS record (16 KiB), so it spans many.
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let length = body.len().to_string();
    client
        .send(&request(
            "POST",
            "/sized",
            &[("Content-Length", &length)],
            &body,
        ))
        .expect("send");
    let response = client.read_response().expect("response to the sized POST");
    assert_eq!(response.status, 200, "{response:?}");
    let echo = json_of(&response);
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["body_base64"],
        b64(&body),
        "the whole body came through"
    );

    let pieces: [&[u8]; 4] = [b"a", &[b'b'; 1000], &[b'c'; 40_000], b"end"];
    let mut chunked = Vec::new();
    for piece in pieces {
        chunked.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    client
        .send(&request(
            "POST",
            "/chunked",
            &[("Transfer-Encoding", "chunked"), ("Connection", "close")],
            &chunked,
        ))
        .expect("send");
    let response = client
        .read_response()
        .expect("response to the chunked POST");
    assert_eq!(response.status, 200, "{response:?}");
    let echo = json_of(&response);
    assert_eq!(echo["target"], "/chunked");
    assert_eq!(
        echo["body_base64"],
        b64(&pieces.concat()),
        "de-chunked whole"
    );
}

/// Requests pipelined in one write are all answered at once, as on a plain
/// connection, however the TLS records and the worker's reads cut them: the
/// server must not wait on the socket for bytes its TLS session already
/// holds.
#[test]
fn pipelined_requests_in_one_flight_are_all_answered_at_once() {
    let pki = Pki::new();
    // A long keep-alive, so that a stalled connection is not closed early.
    let server = echo_server(&pki, &["--keep-alive", "10"]);
    let mut wrong = Vec::new();
    // (requests, bytes of padding in each head): heads of 2 KB and 7 KB
    // spread over records and reads of 4 KiB and 16 KiB differently.
    for (count, pad) in [(10, 2000), (3, 7000), (8, 7000)] {
        let mut client = pki
            .connector()
            .connect(server.port, LOCALHOST)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}; log:\n{}", server.log));
        client
            .set_read_timeout(Duration::from_secs(4))
            .expect("set read timeout");
        let padding = "x".repeat(pad);
        let flight: Vec<u8> = (0..count)
            .flat_map(|i| {
                request(
                    "GET",
                    &format!("/pipelined/{i}"),
                    &[("X-Pad", &padding)],
                    b"",
                )
            })
            .collect();
        let sent = Instant::now();
        client.send(&flight).expect("send the pipelined requests");
        let mut answered = 0;
        for i in 0..count {
            match client.read_response() {
                Ok(r) if r.status == 200 && json_of(&r)["target"] == format!("/pipelined/{i}") => {
                    answered += 1;
                }
                Ok(r) => {
                    wrong.push(format!("{count} x {pad} B: response {i} is {r:?}"));
                    break;
                }
                Err(e) => {
                    wrong.push(format!(
                        "{count} x {pad} B: {answered} answered, then {e} after {:?}",
                        sent.elapsed()
                    ));
                    break;
                }
            }
        }
        if answered == count && sent.elapsed() >= AT_ONCE {
            wrong.push(format!(
                "{count} x {pad} B: answered after {:?}",
                sent.elapsed()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "pipelined requests over TLS:\n{}\nlog:\n{}",
        wrong.join("\n"),
        server.log
    );
}

/// A client's close_notify ends its side of the connection as a TCP
/// half-close does on a plain one: the server answers what it received and
/// closes at once, even when the alert arrives in the same read as the
/// request (it then sits in the TLS layer, with nothing left on the socket
/// to wake the worker).
#[test]
fn a_close_notify_behind_a_request_ends_the_connection_at_once() {
    let pki = Pki::new();
    // Long idle timeouts, so that waiting for one is plain to see.
    let server = echo_server(&pki, &["--keep-alive", "10", "--header-timeout", "10"]);
    let cases: [(&str, &[u8], bool); 2] = [
        (
            "a whole request",
            b"GET /bye HTTP/1.1\r\nHost: localhost\r\n\r\n",
            true,
        ),
        ("half a request head", b"GET /bye HTTP/1.1\r\nHo", false),
    ];
    let mut wrong = Vec::new();
    for (what, bytes, answered) in cases {
        let mut client = pki
            .connector()
            .connect(server.port, LOCALHOST)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}; log:\n{}", server.log));
        let sent = Instant::now();
        client
            .send_then_close_notify(bytes)
            .expect("send with close_notify");
        // Well short of either timeout.
        let (got, closed) = client.read_until_closed(Duration::from_secs(4));
        let took = sent.elapsed();
        if got.starts_with(b"HTTP/1.1 200 OK") != answered || !closed || took >= AT_ONCE {
            wrong.push(format!(
                "{what} then close_notify: {} after {took:?}, having sent {:?}",
                if closed { "closed" } else { "still open" },
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected the answer (if the request was whole) and the end of the \
         connection within {AT_ONCE:?}:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------- ALPN and SNI

#[test]
fn alpn_selects_http_1_1_and_a_client_without_alpn_is_served_too() {
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    /// What the client offers, and what the server must select.
    struct Case {
        what: &'static str,
        offer: &'static [&'static [u8]],
        selected: Option<&'static [u8]>,
    }
    let cases = [
        Case {
            what: "http/1.1 alone",
            offer: &[HTTP_1_1],
            selected: Some(HTTP_1_1),
        },
        Case {
            what: "h2 first, then http/1.1",
            offer: &[b"h2", HTTP_1_1],
            selected: Some(HTTP_1_1),
        },
        Case {
            what: "nothing",
            offer: &[],
            selected: None,
        },
    ];
    for Case {
        what,
        offer,
        selected,
    } in cases
    {
        let mut client = pki
            .connector()
            .alpn(offer)
            .connect(server.port, LOCALHOST)
            .unwrap_or_else(|e| panic!("offering {what}: {e}; log:\n{}", server.log));
        assert_eq!(
            client.alpn_protocol().as_deref(),
            selected,
            "offering {what}"
        );
        let response = client.get("/alpn").expect("a response");
        assert_eq!(response.status, 200, "offering {what}: {response:?}");
    }
}

#[test]
fn sni_picks_the_certificate_for_the_name_and_the_first_pair_otherwise() {
    let pki = Pki::new();
    let server = echo_server(&pki, &pki.other_files.flags());
    let verifying = pki.connector();
    let observing = pki.connector().accepting_any_cert();
    let cases = [
        ("SNI localhost", &verifying, LOCALHOST, &pki.server.der),
        (
            "SNI of the second pair",
            &verifying,
            OTHER_NAME,
            &pki.other.der,
        ),
        (
            "no SNI",
            &observing.clone().without_sni(),
            LOCALHOST,
            &pki.server.der,
        ),
        (
            "an unknown name",
            &observing,
            "unknown.forkhorn.test",
            &pki.server.der,
        ),
    ];
    for (what, connector, name, expected) in cases {
        let (response, cert) = tls_get(connector, server.port, name, "/sni")
            .unwrap_or_else(|e| panic!("{what}: {e}; log:\n{}", server.log));
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert!(
            cert == *expected,
            "{what}: the server presented another certificate"
        );
    }
}

/// Session tickets are sealed with a key the master makes, so a client
/// resumes its session on a worker that did not issue its ticket: here the
/// one forked after the issuing worker was killed.
#[test]
fn a_session_resumes_on_a_worker_that_did_not_issue_its_ticket() {
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    let issuer = *server.wait_for_workers(1).first().expect("one worker");
    let resuming = pki.connector().sharing_sessions();
    let connect_and_get = |path: &str| {
        let mut client = resuming
            .connect(server.port, LOCALHOST)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}; log:\n{}", server.log));
        // Reading the response also takes in the tickets sent before it.
        let response = client.get(path).expect("a response");
        assert_eq!(response.status, 200, "{response:?}");
        client.handshake_kind()
    };
    assert_eq!(connect_and_get("/first"), Some(HandshakeKind::Full));
    assert_eq!(
        connect_and_get("/again"),
        Some(HandshakeKind::Resumed),
        "the same worker resumes the session"
    );

    common::signal(issuer, Signal::SIGKILL);
    let mut successor = BTreeSet::new();
    assert!(
        common::wait_until(EVENTUALLY, || {
            successor = server.workers();
            successor.len() == 1
                && !successor.contains(&issuer)
                && successor.iter().all(|&w| server.has_booted(w))
        }),
        "no worker replaced {issuer}; log:\n{}",
        server.log
    );
    assert_eq!(
        connect_and_get("/elsewhere"),
        Some(HandshakeKind::Resumed),
        "worker {successor:?} resumes a session worker {issuer} began"
    );
}

// ---------------------------------------------------------------- versions

#[test]
fn tls_min_version_1_3_refuses_a_tls_1_2_client_and_serves_a_1_3_one() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["--tls-min-version", "1.3"]);
    let why = assert_refused(
        &server,
        &pki.connector().tls12_only(),
        "/old",
        "a TLS 1.2-only client",
    );
    assert!(!why.is_empty());
    let mut client = pki
        .connector()
        .tls13_only()
        .connect(server.port, LOCALHOST)
        .unwrap_or_else(|e| panic!("a TLS 1.3 client: {e}; log:\n{}", server.log));
    assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(client.get("/new").expect("a response").status, 200);
}

#[test]
fn by_default_a_tls_1_2_client_is_served() {
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    let mut client = pki
        .connector()
        .tls12_only()
        .connect(server.port, LOCALHOST)
        .unwrap_or_else(|e| panic!("a TLS 1.2 client: {e}; log:\n{}", server.log));
    assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(client.get("/old").expect("a response").status, 200);
}

// ---------------------------------------------------------------- client certificates

#[test]
fn cert_reqs_2_requires_a_client_certificate_the_ca_signed() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["--ca-certs", pki.ca_str(), "--cert-reqs", "2"]);
    assert_refused(
        &server,
        &pki.connector(),
        "/anonymous",
        "no client certificate",
    );
    assert_refused(
        &server,
        &pki.connector().with_client_cert(&pki.rogue_client),
        "/rogue",
        "a client certificate from an untrusted CA",
    );
    let echo = get_ok(
        &server,
        &pki.connector().with_client_cert(&pki.client),
        "/me",
    );
    let dn = subject(&echo).unwrap_or_else(|| panic!("no subject in {echo}"));
    assert!(dn.contains(&format!("CN={CLIENT_CN}")), "{echo}");
    assert!(dn.contains(&format!("O={CLIENT_ORG}")), "{echo}");

    // OpenSSL's client (curl) is refused without a certificate, served with one.
    let url = curl_url(server.port, "/curl");
    let mut args = vec!["--cacert", pki.ca_str()];
    args.extend(url.iter().map(String::as_str));
    let out = curl(&args);
    assert!(
        !out.status.success(),
        "curl without a client certificate got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut args = vec![
        "--cacert",
        pki.ca_str(),
        "--cert",
        pki.client_files.cert_str(),
        "--key",
        pki.client_files.key_str(),
    ];
    args.extend(url.iter().map(String::as_str));
    let out = curl(&args);
    assert!(
        out.status.success(),
        "curl with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: Value = serde_json::from_slice(&out.stdout).expect("curl got the echo JSON");
    assert!(
        subject(&echo).is_some_and(|s| s.contains(&format!("CN={CLIENT_CN}"))),
        "{echo}"
    );
}

#[test]
fn cert_reqs_1_serves_clients_with_and_without_a_certificate() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["--ca-certs", pki.ca_str(), "--cert-reqs", "1"]);
    let echo = get_ok(&server, &pki.connector(), "/anonymous");
    assert_eq!(subject(&echo), None, "{echo}");
    let echo = get_ok(
        &server,
        &pki.connector().with_client_cert(&pki.client),
        "/me",
    );
    assert!(
        subject(&echo).is_some_and(|s| s.contains(&format!("CN={CLIENT_CN}"))),
        "{echo}"
    );
}

// ---------------------------------------------------------------- bad files

#[test]
fn a_bad_certificate_file_stops_the_master_with_status_2_and_one_line_naming_it() {
    let pki = Pki::new();
    let missing = pki.dir.join("missing.pem");
    let missing_key = pki.dir.join("missing.key");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write garbage");
    let (cert, key) = (&pki.server_files.cert, &pki.server_files.key);
    let other_key = &pki.other_files.key;
    let tmp = common::fresh_dir();
    // (what, certfile, keyfile, extra flags, files of which the line names one)
    let cases = [
        (
            "a missing certificate file",
            &missing,
            key,
            vec![],
            vec![&missing],
        ),
        (
            "a certificate file that is not PEM",
            &garbage,
            key,
            vec![],
            vec![&garbage],
        ),
        (
            "a missing key file",
            cert,
            &missing_key,
            vec![],
            vec![&missing_key],
        ),
        (
            "a key file that is not PEM",
            cert,
            &garbage,
            vec![],
            vec![&garbage],
        ),
        (
            "a key for another certificate",
            cert,
            other_key,
            vec![],
            vec![cert, other_key],
        ),
        (
            "a missing --ca-certs file",
            cert,
            key,
            vec!["--ca-certs", path_str(&missing), "--cert-reqs", "2"],
            vec![&missing],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, certfile, keyfile, extra, named) in cases {
        let mut args = vec![
            "-w",
            "1",
            "-b",
            "https://127.0.0.1:0",
            "--worker-tmp-dir",
            path_str(&tmp),
            "--certfile",
            path_str(certfile),
            "--keyfile",
            path_str(keyfile),
        ];
        args.extend(extra);
        args.push("echo");
        let names_one = |text: &str| named.iter().any(|p| text.contains(path_str(p)));

        let run = run_to_exit(&args, EVENTUALLY);
        let lines: Vec<&String> = run.stderr.iter().filter(|l| !l.trim().is_empty()).collect();
        let one_line =
            lines.len() == 1 && lines[0].starts_with("forkhorn: ") && names_one(lines[0]);
        if run.status.code() != Some(2) || !one_line {
            wrong.push(format!(
                "{what}: {} with stderr {:?}",
                run.status, run.stderr
            ));
        }

        args.insert(0, "--check-config");
        let check = run_to_exit(&args, EVENTUALLY);
        let said = format!("{}\n{}", check.stdout.join("\n"), check.stderr.join("\n"));
        if check.status.success() || !names_one(&said) || said.contains("configuration OK") {
            wrong.push(format!(
                "{what}, --check-config: {} saying {said:?}",
                check.status
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        wrong.is_empty(),
        "expected exit status 2 and one `forkhorn: ...` line naming the file \
         (and --check-config failing, naming it):\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------- HUP

#[test]
fn hup_puts_a_renewed_certificate_live_without_failing_a_request_and_keeps_it_when_the_next_is_broken()
 {
    let pki = Pki::new();
    let server = echo_server(&pki, &["-w", "2"]);
    let first_generation = server.wait_for_workers(2);
    let requests = tls_request_loop(pki.connector(), server.port, LOCALHOST, "/loop");
    assert!(
        requests.wait_for_more_served(10, EVENTUALLY),
        "the loop is not being served: {:?}; log:\n{}",
        requests.outcomes(),
        server.log
    );
    assert!(
        requests
            .outcomes()
            .served_by
            .iter()
            .all(|c| *c == pki.server.der)
    );

    // Renewal: same CA and name, new key, new serial, in the same files.
    let renewed = pki.ca.server_cert(&[LOCALHOST, "127.0.0.1"]);
    pki.server_files.write(&renewed);
    server.signal(Signal::SIGHUP);
    assert!(
        common::wait_until(EVENTUALLY, || requests
            .outcomes()
            .served_by
            .contains(&renewed.der)),
        "no connection saw the renewed certificate; log:\n{}",
        server.log
    );
    // Once the old generation is gone, every new connection sees it.
    assert!(
        common::wait_until(EVENTUALLY, || {
            let workers = server.workers();
            workers.len() == 2 && workers.is_disjoint(&first_generation)
        }),
        "the first generation {first_generation:?} was not replaced: {:?}; log:\n{}",
        server.workers(),
        server.log
    );
    for _ in 0..5 {
        let (response, cert) = tls_get(&pki.connector(), server.port, LOCALHOST, "/renewed")
            .unwrap_or_else(|e| panic!("after the reload: {e}; log:\n{}", server.log));
        assert_eq!(response.status, 200);
        assert!(
            cert == renewed.der,
            "a new connection got the old certificate"
        );
    }

    // A broken renewal: the error is logged and the renewed pair stays.
    std::fs::write(&pki.server_files.cert, "garbage, not a certificate\n").expect("write");
    server.signal(Signal::SIGHUP);
    let error = server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("cannot reload"))
        .unwrap_or_else(|| panic!("no `cannot reload` line; log:\n{}", server.log));
    assert!(
        error.contains(pki.server_files.cert_str()),
        "the error names the file: {error}"
    );
    assert!(
        requests.wait_for_more_served(10, EVENTUALLY),
        "the loop stopped being served after the broken HUP; log:\n{}",
        server.log
    );
    for _ in 0..5 {
        let (response, cert) = tls_get(&pki.connector(), server.port, LOCALHOST, "/kept")
            .unwrap_or_else(|e| panic!("after the broken reload: {e}; log:\n{}", server.log));
        assert_eq!(response.status, 200);
        assert!(cert == renewed.der, "not the certificate that was live");
    }
    assert!(server.log.contains("Listening at: https://"));
    let outcomes = requests.finish();
    assert!(
        outcomes.failures.is_empty(),
        "{} of {} requests failed across the reloads: {:?}; log:\n{}",
        outcomes.failures.len(),
        outcomes.failures.len() + outcomes.served_by.len(),
        outcomes.failures,
        server.log
    );
    assert!(
        outcomes
            .served_by
            .iter()
            .all(|c| *c == pki.server.der || *c == renewed.der),
        "only the two good certificates were ever presented"
    );
}

// ---------------------------------------------------------------- failed and stalled handshakes

#[test]
fn a_failed_handshake_is_counted_and_costs_no_worker() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["--metrics-bind", "127.0.0.1:0"]);
    let metrics = metrics_port(&server.log);
    let workers = server.wait_for_workers(1);
    assert_eq!(
        handshake_failures(metrics),
        Some(0.0),
        "the counter is there from the start; /metrics:\n{}",
        get(metrics, "/metrics")
            .map(|r| r.text())
            .unwrap_or_default()
    );

    // Plain HTTP to the TLS port gets a 400 it can read, and is closed.
    let mut plain = connect_raw(server.port);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send plain HTTP");
    let (bytes, closed) = read_until_closed(&mut plain, |s| s, EVENTUALLY);
    assert!(closed, "the server left a plain-HTTP client hanging");
    let answer = String::from_utf8_lossy(&bytes);
    assert!(
        answer.starts_with("HTTP/1.1 400 ") && answer.contains("https://"),
        "plain HTTP on the TLS port: {answer:?}"
    );

    // A client that does not trust the server's certificate gives up.
    let distrustful = Connector::trusting(&pki.rogue_ca);
    let refused = distrustful.connect(server.port, LOCALHOST);
    assert!(refused.is_err(), "a client trusting another CA connected");

    assert!(
        common::wait_until(EVENTUALLY, || handshake_failures(metrics) == Some(2.0)),
        "expected 2 handshake failures counted, /metrics says {:?}; log:\n{}",
        handshake_failures(metrics),
        server.log
    );
    assert_eq!(
        server.workers(),
        workers,
        "a failed handshake cost a worker"
    );
    get_ok(&server, &pki.connector(), "/still/serving");
    assert_eq!(server.workers(), workers);
}

#[test]
fn stalled_handshakes_do_not_block_a_one_worker_server() {
    const HALF_HELLOS: usize = 6;
    const SILENT: usize = 4;
    let pki = Pki::new();
    let server = echo_server(&pki, &[]);
    let worker = *server.wait_for_workers(1).first().expect("one worker");
    get_ok(&server, &pki.connector(), "/warm");
    let sockets_before = open_sockets(worker);

    let hello = pki.connector().client_hello(LOCALHOST);
    let half = &hello[..hello.len() / 2];
    let stalled: Vec<TcpStream> = (0..HALF_HELLOS)
        .map(|_| {
            let mut stream = connect_raw(server.port);
            stream.write_all(half).expect("send half a ClientHello");
            stream
        })
        .collect();
    let silent: Vec<TcpStream> = (0..SILENT).map(|_| connect_raw(server.port)).collect();
    // The worker really holds the half handshakes (the silent ones may wait
    // in the kernel: the listener defers accepting until data arrives).
    assert!(
        common::wait_until(EVENTUALLY, || open_sockets(worker)
            >= sockets_before + HALF_HELLOS),
        "the worker holds {} sockets, {sockets_before} before {HALF_HELLOS} stalled handshakes",
        open_sockets(worker)
    );

    for i in 0..5 {
        let sent = Instant::now();
        get_ok(&server, &pki.connector(), &format!("/normal/{i}"));
        let took = sent.elapsed();
        assert!(
            took < AT_ONCE,
            "request {i} took {took:?} behind stalled handshakes; log:\n{}",
            server.log
        );
    }
    // They were still stalled (not closed) while the requests were served.
    let cut_off = stalled.iter().filter(|s| server_spoke(s)).count();
    assert_eq!(cut_off, 0, "stalled handshakes were cut off early");
    assert_eq!(server.workers().into_iter().collect::<Vec<_>>(), [worker]);
    drop(silent);
}

#[test]
fn a_stalled_handshake_is_cut_off_by_the_header_timeout() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["--header-timeout", "1"]);
    server.wait_for_workers(1);
    let hello = pki.connector().client_hello(LOCALHOST);
    let mut stalled = connect_raw(server.port);
    let sent = Instant::now();
    stalled
        .write_all(&hello[..hello.len() / 2])
        .expect("send half a ClientHello");
    let (_, closed) = read_until_closed(&mut stalled, |s| s, Duration::from_secs(6));
    let took = sent.elapsed();
    assert!(
        closed,
        "a stalled handshake was still open after {took:?} with --header-timeout 1"
    );
    assert!(
        took >= Duration::from_millis(500),
        "closed after {took:?}, before the header timeout"
    );
    get_ok(&server, &pki.connector(), "/after");
}

// ---------------------------------------------------------------- config file

#[test]
fn the_tls_settings_work_from_a_config_file() {
    let pki = Pki::new();
    let config = pki.dir.join("forkhorn.toml");
    let toml = format!(
        "workers = 1\napp = \"echo\"\n\
         certfile = [{:?}, {:?}]\nkeyfile = [{:?}, {:?}]\n\
         ca_certs = {:?}\ncert_reqs = 2\ntls_min_version = \"1.3\"\n",
        pki.server_files.cert_str(),
        pki.other_files.cert_str(),
        pki.server_files.key_str(),
        pki.other_files.key_str(),
        pki.ca_str(),
    );
    std::fs::write(&config, toml).expect("write the config file");
    let server = start_https(&["-c", path_str(&config), "-b", "https://127.0.0.1:0"], &[]);
    let client = pki.connector().with_client_cert(&pki.client);

    let (response, cert) = tls_get(&client, server.port, OTHER_NAME, "/other")
        .unwrap_or_else(|e| panic!("SNI for the second pair: {e}; log:\n{}", server.log));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(cert == pki.other.der, "certfile as a list gives SNI");
    let echo = get_ok(&server, &client.clone().tls13_only(), "/me");
    assert!(
        subject(&echo).is_some_and(|s| s.contains(&format!("CN={CLIENT_CN}"))),
        "{echo}"
    );
    assert_refused(&server, &pki.connector(), "/anonymous", "cert_reqs = 2");
    assert_refused(
        &server,
        &client.tls12_only(),
        "/old",
        "tls_min_version = \"1.3\"",
    );
}

// ---------------------------------------------------------------- Python

/// Whether forkhorn can run a Python app here: it was built with Python
/// and python3 runs. When it cannot, the test should return early: this
/// prints why, and panics instead when `FORKHORN_REQUIRE_PYTHON_PACKAGES=1`
/// (as in CI).
fn python_is_usable(test: &str) -> bool {
    let why = if !cfg!(feature = "python") {
        Some("forkhorn was built without Python (--no-default-features)")
    } else if !Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("python3 does not run")
    } else {
        None
    };
    let Some(why) = why else { return true };
    if std::env::var("FORKHORN_REQUIRE_PYTHON_PACKAGES").as_deref() == Ok("1") {
        panic!("{test}: {why}");
    }
    eprintln!("skipped {test}: {why}");
    false
}

#[test]
fn a_wsgi_app_sees_https_and_the_client_certificate_subject() {
    if !python_is_usable("a_wsgi_app_sees_https_and_the_client_certificate_subject") {
        return;
    }
    let pki = Pki::new();
    let apps = python::apps_dir();
    let mut args = vec![
        "-w",
        "1",
        "-b",
        "https://127.0.0.1:0",
        "-b",
        "http://127.0.0.1:0",
        "--ca-certs",
        pki.ca_str(),
        "--cert-reqs",
        "1",
        "--chdir",
        path_str(&apps),
    ];
    args.extend(pki.server_files.flags());
    args.push("tls_app:app");
    let venv = python::env();
    let mut env: Vec<(&str, &str)> = venv.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Leave no __pycache__ in the checkout.
    env.push(("PYTHONDONTWRITEBYTECODE", "1"));
    let server = start_https(&args, &env);
    let plain = listening_port(&server, "http");

    let seen = get_ok(&server, &pki.connector().with_client_cert(&pki.client), "/");
    assert_eq!(seen["url_scheme"], "https", "{seen}");
    let dn = seen["ssl_client_s_dn"].as_str().unwrap_or_default();
    assert!(dn.contains(&format!("CN={CLIENT_CN}")), "{seen}");

    let seen = get_ok(&server, &pki.connector(), "/");
    assert_eq!(seen["url_scheme"], "https", "{seen}");
    assert_eq!(
        seen["ssl_client_s_dn"],
        Value::Null,
        "no client certificate"
    );

    let response = get(plain, "/").expect("GET on the plain listener");
    assert_eq!(response.status, 200, "{response:?}");
    let seen = json_of(&response);
    assert_eq!(seen["url_scheme"], "http", "{seen}");
    assert_eq!(seen["ssl_client_s_dn"], Value::Null, "{seen}");
}

// ---------------------------------------------------------------- the corpus

#[test]
fn the_public_corpus_passes_over_tls_in_every_send_mode() {
    let pki = Pki::new();
    let mut extra = vec!["-w", "2"];
    extra.extend(CORPUS_OPTIONS);
    let server = echo_server(&pki, &extra);
    passes_in_every_mode(server.port, &["--tls-ca", pki.ca_str()]);
}

#[test]
fn a_proxy_header_before_the_handshake_gives_apps_the_real_client() {
    let pki = Pki::new();
    let server = echo_server(&pki, &["-b", "proxy+https://127.0.0.1:0"]);
    let port = listening_port(&server, "proxy+https");
    let mut client = pki
        .connector()
        .connect_after(
            port,
            LOCALHOST,
            b"PROXY TCP4 198.51.100.7 10.0.0.1 40123 443\r\n",
        )
        .unwrap_or_else(|e| panic!("TLS after a PROXY header: {e}; log:\n{}", server.log));
    client
        .send(&request("GET", "/who", &[("Connection", "close")], b""))
        .expect("send");
    let echo = json_of(&client.read_response().expect("a response"));
    assert_eq!(echo["client_addr"], "198.51.100.7:40123");
    assert_eq!(echo["scheme"], "https");
}

#[test]
fn workers_that_drop_privileges_serve_tls_without_reading_the_key() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: no user nobody on this machine");
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    // Only root may read the key: the master reads it before the workers
    // become nobody.
    let key = pki.server_files.key_str();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let server = echo_server(&pki, &["-u", "nobody"]);
    let workers = server.wait_for_workers(1);
    let echo = get_ok(&server, &pki.connector(), "/");
    assert_eq!(echo["scheme"], "https");
    for w in workers {
        let status = std::fs::read_to_string(format!("/proc/{w}/status")).expect("status");
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        assert_eq!(uid, Some(nobody.uid.as_raw()), "worker {w} runs as nobody");
    }
}

#[test]
fn a_timed_out_tls_request_sees_the_connection_end_not_plain_text() {
    // The timeout's 504 is written from a signal handler, which cannot
    // encrypt; plain bytes inside the session would be a protocol error.
    let pki = Pki::new();
    let mut args = vec!["-w", "1", "-t", "1", "-b", "https://127.0.0.1:0"];
    args.extend(pki.server_files.flags());
    args.push("chaos");
    let server = start_https(&args, &[]);
    let mut client = pki
        .connector()
        .connect(server.port, LOCALHOST)
        .expect("handshake");
    client
        .send(&request(
            "GET",
            "/sleep?s=30",
            &[("Connection", "close")],
            b"",
        ))
        .expect("send");
    let err = client
        .read_response()
        .expect_err("no response from a killed worker");
    assert_eq!(
        err.kind(),
        ErrorKind::UnexpectedEof,
        "the connection ends without a TLS error: {err}"
    );
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l.contains("WORKER TIMEOUT"))
            .is_some(),
        "{}",
        server.log
    );
}

#[test]
fn an_upgrade_keeps_each_listener_as_the_old_master_served_it() {
    // The new master is told by the old one which socket is TLS and which
    // expects a PROXY header: not guessed from a configuration file that
    // may have changed since (here: its binds reordered before USR2).
    let pki = Pki::new();
    let file = pki.dir.join("forkhorn.toml");
    let pidfile = pki.dir.join("forkhorn.pid");
    let config = |binds: &str| {
        format!(
            "bind = [{binds}]\ncertfile = [\"{}\"]\nkeyfile = [\"{}\"]\npid = \"{}\"\nworkers = 1\napp = \"echo\"\n",
            pki.server_files.cert_str(),
            pki.server_files.key_str(),
            pidfile.display()
        )
    };
    std::fs::write(
        &file,
        config(r#""https://127.0.0.1:0", "proxy+http://127.0.0.1:0""#),
    )
    .expect("write the config");
    let mut server = start_https(&["-c", path_str(&file)], &[]);
    let proxied = listening_port(&server, "proxy+http");
    std::fs::write(
        &file,
        config(r#""proxy+http://127.0.0.1:0", "https://127.0.0.1:0""#),
    )
    .expect("rewrite the config");
    let new = server.upgrade(&pidfile);
    let echo = get_ok(&server, &pki.connector(), "/");
    assert_eq!(echo["scheme"], "https", "the TLS socket still speaks TLS");
    let mut stream = TcpStream::connect(("127.0.0.1", proxied)).expect("connect");
    stream
        .write_all(b"PROXY TCP4 198.51.100.7 10.0.0.1 40123 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("send");
    let (raw, _) = read_until_closed(&mut stream, |s| s, EVENTUALLY);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("198.51.100.7:40123"),
        "the PROXY socket still reads PROXY headers: {text}"
    );
    common::signal(new, Signal::SIGTERM);
    assert!(common::wait_until(EVENTUALLY, || !common::is_alive(new)));
}
