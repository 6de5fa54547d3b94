//! Behind a proxy: the PROXY protocol (v1 text, v2 binary) on `proxy+`
//! binds, and `X-Forwarded-*`/`Forwarded` headers from trusted peers. Each
//! case is raw bytes on a real socket, judged by the client address and
//! scheme the `echo` app saw, the access log line and the server's log,
//! with spoofing attempts from peers that are not trusted.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{EVENTUALLY, Server};

/// How long a raw exchange waits for the server to finish talking.
const WIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request the echo app answers, closing the connection after it.
const REQUEST: &[u8] = b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// v2's fixed signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";

/// A server with a PROXY listener beside the plain one; its proxy port.
fn proxied_server(extra: &[&str]) -> (Server, u16) {
    let mut args = vec![
        "-w",
        "1",
        "--access-logfile",
        "-",
        "-b",
        "proxy+http://127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args.push("echo");
    let server = Server::start(&args);
    let port = common::tls::listening_port(&server, "proxy+http");
    (server, port)
}

/// Send `parts` one write each (with a pause so they arrive apart), then
/// read until the server closes.
fn exchange(port: u16, parts: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for part in parts {
        stream.write_all(part).expect("send");
        stream.flush().expect("flush");
        if parts.len() > 1 {
            // Apart, so the server reads the header in pieces.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    common::read_until_closed(&mut stream, |s| s, WIRE_TIMEOUT)
}

/// The echo app's JSON from a raw response.
fn echo_json(raw: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "not a 200: {text:?}"
    );
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

#[test]
fn a_v1_header_gives_apps_and_the_access_log_the_real_client() {
    let (server, port) = proxied_server(&[]);
    let header = b"PROXY TCP4 198.51.100.7 10.0.0.1 40123 443\r\n";
    let (raw, _) = exchange(port, &[&[header.as_slice(), REQUEST].concat()]);
    let json = echo_json(&raw);
    assert_eq!(json["client_addr"], "198.51.100.7:40123");
    assert_eq!(json["scheme"], "http");
    assert!(
        server
            .stdout
            .wait_for(EVENTUALLY, |l| l.starts_with("198.51.100.7 ")
                && l.contains("GET /who"))
            .is_some(),
        "the access log names the proxied client:\n{}",
        server.stdout
    );
}

#[test]
fn a_v1_tcp6_header_arriving_byte_by_byte_is_read_whole() {
    let (_server, port) = proxied_server(&[]);
    let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 80\r\n";
    let mut parts: Vec<&[u8]> = header.chunks(1).collect();
    parts.push(REQUEST);
    let (raw, _) = exchange(port, &parts);
    assert_eq!(echo_json(&raw)["client_addr"], "[2001:db8::7]:5555");
}

#[test]
fn a_v2_header_split_across_reads_gives_the_real_client() {
    let (_server, port) = proxied_server(&[]);
    // With a TLV after the addresses, which is skipped.
    let mut header = v2_tcp4([203, 0, 113, 5], 6000, [10, 0, 0, 1], 443);
    header[15] += 4;
    header.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
    let (first, rest) = header.split_at(7);
    let (raw, _) = exchange(port, &[first, rest, REQUEST]);
    assert_eq!(echo_json(&raw)["client_addr"], "203.0.113.5:6000");
}

#[test]
fn a_v2_local_command_keeps_the_real_peer() {
    // A proxy's own health check: no client address to take.
    let (_server, port) = proxied_server(&[]);
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let (raw, _) = exchange(port, &[&[header.as_slice(), REQUEST].concat()]);
    let client = echo_json(&raw)["client_addr"].as_str().map(str::to_owned);
    assert!(
        client
            .as_deref()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{client:?}"
    );
}

#[test]
fn bad_proxy_headers_close_the_connection_with_a_log_line() {
    let (server, port) = proxied_server(&[]);
    let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    let cases: [(&str, &[u8]); 4] = [
        ("no header at all", REQUEST),
        (
            "a malformed v1 header",
            b"PROXY TCP4 198.51.100.7  10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n",
        ),
        ("an oversized v1 header", &long),
        (
            "a v2 header of another version",
            b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c",
        ),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let (raw, closed) = exchange(port, &[bytes]);
        assert!(raw.is_empty(), "{what}: nothing is answered, got {raw:?}");
        assert!(closed, "{what}: the connection is closed");
        let logged = common::wait_until(EVENTUALLY, || {
            let lines = server.log.snapshot();
            lines
                .iter()
                .filter(|l| l.contains("closed a connection from 127.0.0.1"))
                .count()
                > i
        });
        assert!(logged, "{what}: a log line says why; log:\n{}", server.log);
    }
    // The worker is unharmed.
    assert_eq!(server.get("/").expect("plain listener").status, 200);
}

#[test]
fn a_peer_not_allowed_to_send_proxy_headers_is_refused() {
    let (server, port) = proxied_server(&["--proxy-allow-from", "10.9.9.9"]);
    let header = b"PROXY TCP4 198.51.100.7 10.0.0.1 40123 443\r\n";
    let (raw, closed) = exchange(port, &[&[header.as_slice(), REQUEST].concat()]);
    assert!(raw.is_empty() && closed, "refused: {raw:?}");
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l
                .contains("not in --proxy-allow-from (10.9.9.9)"))
            .is_some(),
        "{}",
        server.log
    );
}

#[test]
fn forwarded_headers_from_a_trusted_peer_set_client_and_scheme() {
    // 127.0.0.1 is trusted by default; the client's own claim (6.6.6.6)
    // is left of what the proxy appended, and is not believed.
    let server = Server::start(&["-w", "1", "--access-logfile", "-", "echo"]);
    let request = b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
        X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n";
    let (raw, _) = exchange(server.port, &[request]);
    let json = echo_json(&raw);
    assert_eq!(json["client_addr"], "203.0.113.9:0");
    assert_eq!(json["scheme"], "https");
    assert!(
        server
            .stdout
            .wait_for(EVENTUALLY, |l| l.starts_with("203.0.113.9 "))
            .is_some(),
        "{}",
        server.stdout
    );

    // A client's own Forwarded field, which nginx passes on: not read.
    let request = b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
        Forwarded: for=10.1.2.3;proto=https\r\n\r\n";
    let (raw, _) = exchange(server.port, &[request]);
    let json = echo_json(&raw);
    let client = json["client_addr"].as_str().unwrap_or_default();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(json["scheme"], "http");
}

#[test]
fn a_proxy_that_writes_forwarded_is_read_with_forwarded_header() {
    let server = Server::start(&["-w", "1", "--forwarded-header", "Forwarded", "echo"]);
    let request = b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
        X-Forwarded-For: 10.1.2.3\r\n\
        Forwarded: for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https\r\n\r\n";
    let (raw, _) = exchange(server.port, &[request]);
    let json = echo_json(&raw);
    assert_eq!(json["client_addr"], "[2001:db8:cafe::17]:0");
    assert_eq!(json["scheme"], "https");
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_are_passed_on_but_not_believed() {
    let server = Server::start(&["-w", "1", "--forwarded-allow-ips", "10.0.0.0/8", "echo"]);
    let request = b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
        X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n";
    let (raw, _) = exchange(server.port, &[request]);
    let json = echo_json(&raw);
    let client = json["client_addr"].as_str().unwrap_or_default();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(json["scheme"], "http");
    let headers = json["headers"].to_string();
    assert!(
        headers.contains("X-Forwarded-For") && headers.contains("203.0.113.9"),
        "the headers reach the app untouched: {headers}"
    );
}

#[test]
fn proxied_clients_are_checked_for_forwarded_headers_too() {
    // Behind a PROXY header the client is 198.51.100.7, not a trusted
    // proxy: its X-Forwarded-For is its own claim.
    let (_server, port) = proxied_server(&[]);
    let request = b"PROXY TCP4 198.51.100.7 10.0.0.1 40123 443\r\n\
        GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    let (raw, _) = exchange(port, &[request]);
    assert_eq!(echo_json(&raw)["client_addr"], "198.51.100.7:40123");
}

#[test]
fn the_control_socket_names_the_proxied_client_of_a_request_in_flight() {
    let socket = common::TempFile::new("ctl.sock");
    let server = Server::start(&[
        "-w",
        "1",
        "--control-socket",
        socket.as_str(),
        "-b",
        "proxy+http://127.0.0.1:0",
        "chaos",
    ]);
    let port = common::tls::listening_port(&server, "proxy+http");
    let sleeper = std::thread::spawn(move || {
        exchange(
            port,
            &[b"PROXY TCP4 198.51.100.7 10.0.0.1 40123 443\r\n\
                GET /sleep?s=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"],
        )
    });
    let mut peer = String::new();
    let named = common::wait_until(EVENTUALLY, || {
        let rows = common::ctl_json(socket.path(), &["workers"])["workers"].clone();
        peer = rows[0]["request"]["peer"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !peer.is_empty()
    });
    assert!(named, "a request in flight is listed");
    assert_eq!(peer, "198.51.100.7:40123");
    let (raw, _) = sleeper.join().expect("the sleeper");
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn a_v2_header_saying_the_client_spoke_tls_to_the_proxy_makes_the_scheme_https() {
    // A proxy that ends TLS and passes the connection on in TCP mode says
    // so in a PP2_TYPE_SSL TLV.
    let (_server, port) = proxied_server(&[]);
    let mut header = v2_tcp4([203, 0, 113, 5], 6000, [10, 0, 0, 1], 443);
    let ssl_tlv = [0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0];
    header[15] += ssl_tlv.len() as u8;
    header.extend_from_slice(&ssl_tlv);
    let (raw, _) = exchange(port, &[&[header.as_slice(), REQUEST].concat()]);
    let json = echo_json(&raw);
    assert_eq!(json["scheme"], "https");
    assert_eq!(json["client_addr"], "203.0.113.5:6000");
}
