//! The HTTP/1.1 wire rules of RFC 9112 and RFC 9110 as a client sees them:
//! raw request bytes are written to a real `forkhorn` and judged by the exact
//! status line that comes back, what follows it, and whether the connection
//! and the worker survive.
//!
//! Every rejection case is followed, in the same write, by a well-formed
//! request: a server that rejects and closes never answers it, so an extra
//! response means the connection was desynchronised (request smuggling).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;

use common::{Client, Server};

const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request";
const OK: &str = "HTTP/1.1 200 OK";

/// How long a raw exchange waits for the server to finish talking.
const WIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sent after every rejected request, in the same write; it must never be answered.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

// ---------------------------------------------------------------- raw wire

/// Everything the server sent on one connection.
struct Wire {
    bytes: Vec<u8>,
    /// The server closed the connection (end of stream or reset) within `WIRE_TIMEOUT`.
    closed: bool,
}

/// One response cut from the raw bytes.
#[derive(Debug)]
struct RawResponse {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(server: &Server) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let stream = TcpStream::connect_timeout(&addr, WIRE_TIMEOUT).expect("connect to forkhorn");
    stream
        .set_write_timeout(Some(WIRE_TIMEOUT))
        .expect("set write timeout");
    stream.set_nodelay(true).expect("set nodelay");
    stream
}

/// Read until the server closes or `WIRE_TIMEOUT` passes.
fn read_until_closed(stream: &mut TcpStream) -> Wire {
    let deadline = Instant::now() + WIRE_TIMEOUT;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Wire {
                bytes,
                closed: false,
            };
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set read timeout");
        match stream.read(&mut buf) {
            Ok(0) => {
                return Wire {
                    bytes,
                    closed: true,
                };
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Wire {
                    bytes,
                    closed: true,
                };
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Wire {
                    bytes,
                    closed: false,
                };
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading from forkhorn: {e}"),
        }
    }
}

/// Write `request` in one go on a new connection and read everything the server says.
fn send_raw(server: &Server, request: &[u8]) -> Wire {
    let mut stream = connect(server);
    // The server may close before reading everything (a rejection); that is
    // its right, and what it sent is judged below.
    let _ = stream.write_all(request);
    read_until_closed(&mut stream)
}

/// Cut `bytes` into responses. `head_requests` lists, in order, whether each
/// request was a HEAD (whose response has no body whatever its headers say).
/// Stops at bytes that do not start a response and returns them as the rest.
fn split_responses<'a>(
    mut bytes: &'a [u8],
    head_requests: &[bool],
) -> (Vec<RawResponse>, &'a [u8]) {
    let mut out = Vec::new();
    let mut final_responses = 0;
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        if !status_line.starts_with("HTTP/1.") {
            break;
        }
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut response = RawResponse {
            status_line,
            headers,
            body: Vec::new(),
        };
        let rest = &bytes[end + 4..];
        let interim = response.status_line.starts_with("HTTP/1.1 1");
        let is_head = !interim && head_requests.get(final_responses) == Some(&true);
        let length = match response.header("Content-Length") {
            _ if interim || is_head => 0,
            Some(n) => n.parse::<usize>().expect("numeric Content-Length"),
            None => {
                assert!(
                    response.header("Transfer-Encoding").is_none(),
                    "chunked responses are not expected here: {response:?}"
                );
                rest.len()
            }
        };
        let length = length.min(rest.len());
        response.body = rest[..length].to_vec();
        bytes = &rest[length..];
        if !interim {
            final_responses += 1;
        }
        out.push(response);
    }
    (out, bytes)
}

fn escaped(bytes: &[u8]) -> String {
    const SHOWN: usize = 160;
    let mut s = bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
    if bytes.len() > SHOWN {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// A value in the IMF-fixdate format, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_imf_fixdate(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 29
        && b[3..5] == *b", "
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':'
        && v.ends_with(" GMT")
        && [5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// Every response carries `Server: forkhorn` and a valid `Date`.
fn assert_server_and_date(case: &str, r: &RawResponse) {
    assert_eq!(
        r.header("Server"),
        Some("forkhorn"),
        "{case}: Server header in {r:?}"
    );
    let date = r.header("Date").unwrap_or_default();
    assert!(is_imf_fixdate(date), "{case}: Date {date:?} in {r:?}");
}

// ---------------------------------------------------------------- judging

fn echo_server() -> Server {
    Server::start(&["-w", "1", "echo"])
}

/// The worker that is serving now; the server must have exactly one.
fn only_worker(server: &Server) -> i32 {
    let workers = server.wait_for_workers(1);
    *workers.first().expect("one worker")
}

/// A request on a new connection is served, by the same worker as before.
fn assert_still_serving(server: &Server, worker: i32, case: &str) {
    let reply = server
        .get("/after")
        .unwrap_or_else(|e| panic!("{case}: the next request failed: {e}"));
    assert_eq!(reply.status, 200, "{case}: the next request");
    assert_eq!(
        server.workers().into_iter().collect::<Vec<_>>(),
        vec![worker],
        "{case}: the worker must survive a bad request; log:\n{}",
        server.log
    );
}

/// `request` (followed by a smuggled one) gets exactly one response, with
/// `status_line`; the server closes the connection; the worker keeps serving.
fn assert_rejected(server: &Server, case: &str, request: &[u8], status_line: &str) {
    let worker = only_worker(server);
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(SMUGGLED);
    let wire = send_raw(server, &bytes);
    let (responses, rest) = split_responses(&wire.bytes, &[]);
    let sent = escaped(request);
    let got = escaped(&wire.bytes);
    let Some(first) = responses.first() else {
        panic!("{case}: no response to {sent:?}; got {got:?}");
    };
    assert_eq!(
        first.status_line, status_line,
        "{case}: status line for {sent:?}; got {got:?}"
    );
    assert_eq!(
        first.header("Connection"),
        Some("close"),
        "{case}: a rejection announces the close"
    );
    assert_server_and_date(case, first);
    assert!(
        responses.len() == 1 && rest.is_empty(),
        "{case}: exactly one response expected for {sent:?}; got {got:?}"
    );
    assert!(
        wire.closed,
        "{case}: the connection must be closed after {status_line}"
    );
    assert_still_serving(server, worker, case);
}

/// The rejections of one rule, each named in failure messages.
fn assert_all_rejected(cases: &[(&str, &[u8])], status_line: &str) {
    let server = echo_server();
    for (case, request) in cases {
        assert_rejected(&server, case, request, status_line);
    }
}

/// The only response in `wire`, which must end with a close.
fn exchange_parts(wire: &Wire) -> RawResponse {
    let (mut responses, rest) = split_responses(&wire.bytes, &[]);
    assert!(
        responses.len() == 1 && rest.is_empty() && wire.closed,
        "one response and a close expected; got {:?}",
        escaped(&wire.bytes)
    );
    responses.remove(0)
}

/// Send `request` (which should ask to close) and return its only response.
fn exchange_one(server: &Server, case: &str, request: &[u8]) -> RawResponse {
    let wire = send_raw(server, request);
    let (mut responses, rest) = split_responses(&wire.bytes, &[]);
    assert!(
        responses.len() == 1 && rest.is_empty(),
        "{case}: one response expected to {:?}; got {:?}",
        escaped(request),
        escaped(&wire.bytes)
    );
    responses.remove(0)
}

/// The `echo` app's description of a request.
struct Echoed {
    json: serde_json::Value,
}

impl Echoed {
    fn of(case: &str, body: &[u8]) -> Echoed {
        let json = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{case}: echo replied with invalid JSON ({e}): {:?}",
                escaped(body)
            )
        });
        Echoed { json }
    }

    fn target(&self) -> &str {
        self.json["target"].as_str().expect("target is a string")
    }

    fn body(&self) -> Vec<u8> {
        let encoded = self.json["body_base64"]
            .as_str()
            .expect("body_base64 is a string");
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("body_base64 is base64")
    }

    fn trailers(&self) -> Vec<(String, String)> {
        self.json["trailers"]
            .as_array()
            .expect("trailers is an array")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().expect("trailer name").to_owned(),
                    pair[1].as_str().expect("trailer value").to_owned(),
                )
            })
            .collect()
    }
}

/// `request` is accepted by `echo` with 200, and this is what the app saw.
fn assert_echoed(server: &Server, case: &str, request: &[u8]) -> Echoed {
    let reply = exchange_one(server, case, request);
    assert_eq!(reply.status_line, OK, "{case}: {reply:?}");
    Echoed::of(case, &reply.body)
}

// ---------------------------------------------------------------- line ends and folding

#[test]
fn a_bare_lf_line_end_in_the_head_is_rejected_with_400() {
    assert_all_rejected(
        &[
            ("after the request line", b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            (
                "after a field line",
                b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            ),
            ("as the end of the head", b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
            ("everywhere", b"GET / HTTP/1.1\nHost: a\n\n"),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn a_bare_cr_in_the_head_is_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "in the request line",
                b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "ending a field line",
                b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
            ),
            (
                "inside a field value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: y\rz\r\n\r\n",
            ),
            (
                "as the end of the head",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn obsolete_line_folding_is_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "folded with SP",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
            ),
            (
                "folded with HTAB",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tz\r\n\r\n",
            ),
            ("first line folded", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
        ],
        BAD_REQUEST,
    );
}

// ---------------------------------------------------------------- field syntax

#[test]
fn whitespace_between_a_field_name_and_its_colon_is_rejected_with_400() {
    assert_all_rejected(
        &[
            ("SP before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            (
                "HTAB before the colon",
                b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            ),
            (
                "on Content-Length",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
            ),
            (
                "on Transfer-Encoding",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn nul_cr_bel_and_del_in_a_field_value_are_rejected_with_400() {
    assert_all_rejected(
        &[
            ("NUL", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
            ("CR", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
            ("BEL", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x07b\r\n\r\n"),
            ("DEL", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"),
            (
                "ESC at the end",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: ab\x1b\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn a_field_name_that_is_not_a_token_is_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "parenthesis",
                b"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n",
            ),
            ("slash", b"GET / HTTP/1.1\r\nHost: a\r\nX/Y: z\r\n\r\n"),
            ("quotes", b"GET / HTTP/1.1\r\nHost: a\r\n\"X\": z\r\n\r\n"),
            ("at sign", b"GET / HTTP/1.1\r\nHost: a\r\nX@Y: z\r\n\r\n"),
            ("empty name", b"GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n"),
            (
                "non-ASCII",
                b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa4: z\r\n\r\n",
            ),
            (
                "no colon at all",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-No-Colon\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

// ---------------------------------------------------------------- request line

#[test]
fn a_malformed_request_line_is_rejected_with_400() {
    assert_all_rejected(
        &[
            ("no version (HTTP/0.9 style)", b"GET /\r\nHost: a\r\n\r\n"),
            ("method only", b"GET\r\nHost: a\r\n\r\n"),
            ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("leading space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("trailing text", b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n"),
            ("trailing space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
            ("tabs as separators", b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n"),
            ("no method", b"/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("method not a token", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "NUL in the target",
                b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "non-ASCII in the target",
                b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn a_target_in_a_form_the_method_does_not_allow_is_rejected_with_400() {
    assert_all_rejected(
        &[
            ("relative path", b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("query only", b"GET ?q=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "asterisk with POST",
                b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            ),
            (
                "authority with GET",
                b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "path with CONNECT",
                b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "absolute URI without a host",
                b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn the_asterisk_form_with_options_and_the_absolute_form_are_accepted() {
    let server = echo_server();
    for (case, request, target) in [
        (
            "OPTIONS *",
            &b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
            "*",
        ),
        (
            "absolute form",
            b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            "http://example.com/x?y=1",
        ),
    ] {
        assert_eq!(assert_echoed(&server, case, request).target(), target);
    }
}

#[test]
fn a_version_that_is_not_http_digit_dot_digit_is_rejected_with_400() {
    assert_all_rejected(
        &[
            ("lowercase", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            ("trailing letter", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n"),
            ("no minor", b"GET / HTTP/1\r\nHost: a\r\n\r\n"),
            ("two-digit minor", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n"),
            ("no slash", b"GET / HTTP1.1\r\nHost: a\r\n\r\n"),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn a_well_formed_version_other_than_1_0_and_1_1_gets_505() {
    assert_all_rejected(
        &[
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            ("HTTP/3.0", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n"),
            ("the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ],
        "HTTP/1.1 505 HTTP Version Not Supported",
    );
}

// ---------------------------------------------------------------- framing

#[test]
fn a_content_length_that_is_not_only_digits_is_rejected_with_400() {
    let with_length = |value: &str| {
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\nhello").into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>)> = [
        ("plus sign", "+5"),
        ("minus sign", "-5"),
        ("two numbers", "5 5"),
        ("hex", "0x5"),
        ("decimal point", "5.0"),
        ("empty", ""),
        ("beyond 64 bits", "18446744073709551616"),
    ]
    .iter()
    .map(|(case, value)| (*case, with_length(value)))
    .collect();
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(c, r)| (*c, r.as_slice())).collect();
    assert_all_rejected(&cases, BAD_REQUEST);
}

#[test]
fn disagreeing_content_lengths_are_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "repeated field",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ),
            (
                "comma list",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
            ),
        ],
        BAD_REQUEST,
    );
}

#[test]
fn transfer_encoding_with_content_length_is_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "TE first",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            ),
            (
                "CL first",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

/// RFC 9112 §6.3: a request whose final coding is not chunked has no knowable
/// body length: 400 and close, whatever the coding (issue 12).
#[test]
fn transfer_encoding_whose_final_coding_is_not_chunked_is_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "gzip alone",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
            ),
            (
                "an unknown coding alone",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "chunked, gzip",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            ),
            (
                "chunked twice",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

/// RFC 9112 §6.1: a coding the server does not understand gets 501. forkhorn
/// decodes none but chunked, so `gzip, chunked` is refused by default.
#[test]
fn a_coding_before_a_final_chunked_is_refused_with_501_by_default() {
    assert_all_rejected(
        &[
            (
                "gzip, chunked",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            (
                "identity then chunked",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "an unknown coding",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
            ),
        ],
        "HTTP/1.1 501 Not Implemented",
    );
}

#[test]
fn with_permit_transfer_codings_gzip_chunked_reaches_the_app_still_coded() {
    let server = Server::start(&["-w", "1", "--permit-transfer-codings", "echo"]);
    let echoed = assert_echoed(
        &server,
        "gzip, chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(
        echoed.body(),
        b"hello",
        "the coded bytes reach the app as sent"
    );
    for (case, request, status_line) in [
        (
            "gzip alone",
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello"[..],
            BAD_REQUEST,
        ),
        (
            "an unknown coding",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 501 Not Implemented",
        ),
    ] {
        assert_rejected(&server, case, request, status_line);
    }
}

#[test]
fn chunked_on_http_1_0_is_rejected_with_400() {
    assert_all_rejected(
        &[(
            "HTTP/1.0 chunked",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )],
        BAD_REQUEST,
    );
}

fn chunked_post(body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes()
}

#[test]
fn a_chunk_size_with_a_sign_a_0x_prefix_or_too_many_digits_is_rejected_with_400() {
    let cases = [
        ("plus sign", chunked_post("+5\r\nhello\r\n0\r\n\r\n")),
        ("minus sign", chunked_post("-5\r\nhello\r\n0\r\n\r\n")),
        ("0x prefix", chunked_post("0x5\r\nhello\r\n0\r\n\r\n")),
        (
            "17 digits",
            chunked_post("00000000000000005\r\nhello\r\n0\r\n\r\n"),
        ),
        ("leading space", chunked_post(" 5\r\nhello\r\n0\r\n\r\n")),
        ("empty size", chunked_post("\r\nhello\r\n0\r\n\r\n")),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(c, r)| (*c, r.as_slice())).collect();
    assert_all_rejected(&cases, BAD_REQUEST);
}

#[test]
fn chunk_data_not_followed_by_crlf_is_rejected_with_400() {
    let cases = [
        (
            "longer than its size",
            chunked_post("5\r\nhello!\r\n0\r\n\r\n"),
        ),
        ("LF only", chunked_post("5\r\nhello\n0\r\n\r\n")),
        (
            "last chunk right after data",
            chunked_post("5\r\nhello0\r\n\r\n"),
        ),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(c, r)| (*c, r.as_slice())).collect();
    assert_all_rejected(&cases, BAD_REQUEST);
}

#[test]
fn chunk_extensions_are_accepted_and_ignored() {
    let server = echo_server();
    let body = "5;name=value\r\nhello\r\n6 ; quoted=\"a b;c\" ; flag\r\n world\r\n0;last\r\n\r\n";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
    );
    let echoed = assert_echoed(&server, "extensions", request.as_bytes());
    assert_eq!(echoed.body(), b"hello world");
    assert!(echoed.trailers().is_empty());
}

#[test]
fn trailer_fields_are_accepted_and_reported_to_the_app() {
    let server = echo_server();
    let mut client = server.connect().expect("connect");
    // A pipelined request right after the trailers shows the body ended
    // exactly at the trailer section's empty line.
    client
        .send(
            b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other:  1 \r\n\r\n\
              GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .expect("send");
    let first = client.read_response().expect("first response");
    assert_eq!(first.status, 200);
    let echoed = Echoed::of("trailers", &first.body);
    assert_eq!(echoed.body(), b"hello");
    assert_eq!(
        echoed.trailers(),
        vec![
            ("X-Checksum".to_owned(), "abc".to_owned()),
            ("X-Other".to_owned(), "1".to_owned())
        ]
    );
    let second = client.read_response().expect("second response");
    assert_eq!(second.status, 200);
    assert_eq!(Echoed::of("after trailers", &second.body).target(), "/next");
}

#[test]
fn framing_and_routing_fields_in_a_trailer_are_rejected_with_400() {
    let cases = [
        (
            "Content-Length",
            chunked_post("5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"),
        ),
        (
            "Transfer-Encoding",
            chunked_post("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ),
        (
            "Host",
            chunked_post("5\r\nhello\r\n0\r\nHost: evil\r\n\r\n"),
        ),
        (
            "lowercase host",
            chunked_post("5\r\nhello\r\n0\r\nhost: evil\r\n\r\n"),
        ),
        (
            "a folded trailer",
            chunked_post("5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"),
        ),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(c, r)| (*c, r.as_slice())).collect();
    assert_all_rejected(&cases, BAD_REQUEST);
}

// ---------------------------------------------------------------- Host

#[test]
fn a_duplicate_host_is_rejected_with_400() {
    assert_all_rejected(
        &[
            (
                "same value",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            ),
            (
                "different values",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            ),
            (
                "different case",
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            ),
        ],
        BAD_REQUEST,
    );
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without
/// Host (issue 12). HTTP/1.0 has no such rule.
#[test]
fn an_http_1_1_request_without_host_is_rejected_with_400() {
    let server = echo_server();
    assert_rejected(
        &server,
        "no Host",
        b"GET /no-host HTTP/1.1\r\nConnection: close\r\n\r\n",
        BAD_REQUEST,
    );
    let echoed = assert_echoed(&server, "HTTP/1.0", b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(echoed.target(), "/old");
}

/// `--permit-missing-host` keeps gunicorn's leniency for old clients.
#[test]
fn with_permit_missing_host_an_http_1_1_request_without_host_is_served() {
    let server = Server::start(&["-w", "1", "--permit-missing-host", "echo"]);
    let echoed = assert_echoed(
        &server,
        "no Host",
        b"GET /no-host HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(echoed.target(), "/no-host");
}

// ---------------------------------------------------------------- Expect

#[test]
fn expect_100_continue_gets_100_continue_before_the_final_200() {
    let server = echo_server();
    let mut client = server.connect().expect("connect");
    client
        .send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .expect("send the head");
    let interim = client.read_response().expect("interim response");
    assert_eq!(
        (interim.version.as_str(), interim.status),
        ("HTTP/1.1", 100),
        "{interim:?}"
    );
    client.send(b"hello").expect("send the body");
    let last = client.read_response().expect("final response");
    assert_eq!(last.status, 200);
    assert_eq!(Echoed::of("100-continue", &last.body).body(), b"hello");

    // The exact bytes on a raw connection: the interim response is a status
    // line and an empty line, nothing else.
    let mut stream = connect(&server);
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .expect("send the head");
    stream
        .set_read_timeout(Some(WIRE_TIMEOUT))
        .expect("set read timeout");
    let mut interim = [0u8; 25];
    stream
        .read_exact(&mut interim)
        .expect("read the interim response");
    assert_eq!(
        escaped(&interim),
        escaped(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "before any body byte is sent"
    );
    stream.write_all(b"hi").expect("send the body");
    let wire = read_until_closed(&mut stream);
    let reply = exchange_parts(&wire);
    assert_eq!(reply.status_line, OK);
    assert_eq!(Echoed::of("raw 100-continue", &reply.body).body(), b"hi");
}

/// RFC 9110 §10.1.1 lets a server omit 100 (Continue) when the body has
/// already arrived; either way exactly one final response follows.
#[test]
fn expect_100_continue_with_the_body_already_sent_gets_one_final_200() {
    let server = echo_server();
    let wire = send_raw(
        &server,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhi",
    );
    let (responses, rest) = split_responses(&wire.bytes, &[]);
    let got = escaped(&wire.bytes);
    let finals: Vec<&RawResponse> = responses
        .iter()
        .filter(|r| r.status_line != "HTTP/1.1 100 Continue")
        .collect();
    assert!(
        finals.len() == 1 && rest.is_empty() && wire.closed,
        "one final response; got {got:?}"
    );
    assert_eq!(finals[0].status_line, OK, "{got:?}");
    assert_eq!(Echoed::of("body with head", &finals[0].body).body(), b"hi");
}

#[test]
fn an_expectation_other_than_100_continue_gets_417() {
    assert_all_rejected(
        &[
            (
                "something-else",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\nhello",
            ),
            (
                "in a list",
                b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x-more\r\n\r\n",
            ),
        ],
        "HTTP/1.1 417 Expectation Failed",
    );
}

// ---------------------------------------------------------------- pipelining

#[test]
fn pipelined_requests_are_answered_in_order_with_their_own_bodies() {
    let server = echo_server();
    let mut client = server.connect().expect("connect");
    client
        .send(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .expect("send four requests in one write");
    let expected: [(&str, &[u8]); 4] = [
        ("/one", b""),
        ("/two", b"hello"),
        ("/three", b"abc"),
        ("/four", b""),
    ];
    for (target, body) in expected {
        let reply = client
            .read_response()
            .unwrap_or_else(|e| panic!("response to {target}: {e}"));
        assert_eq!(reply.status, 200, "{target}");
        let echoed = Echoed::of(target, &reply.body);
        assert_eq!(echoed.target(), target);
        assert_eq!(echoed.body(), body, "{target}");
    }
    assert!(
        client.is_closed_by_server(),
        "closed after Connection: close"
    );
}

#[test]
fn pipelined_bodies_the_app_does_not_read_are_skipped_exactly() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let worker = only_worker(&server);
    // Each unread body is itself a request: if the server ever took body
    // bytes for the next head, an extra response would appear.
    let inner = "GET /inner HTTP/1.1\r\nHost: a\r\n\r\n";
    let chunked_inner = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let request = format!(
        "POST /pid HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{inner}\
         POST /pid HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_inner}\
         GET /pid HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        inner.len()
    );
    let wire = send_raw(&server, request.as_bytes());
    let (responses, rest) = split_responses(&wire.bytes, &[]);
    let got = escaped(&wire.bytes);
    assert_eq!(responses.len(), 3, "three responses expected; got {got:?}");
    assert!(rest.is_empty(), "{got:?}");
    for r in &responses {
        assert_eq!(r.status_line, OK, "{got:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.body).trim(),
            worker.to_string(),
            "{got:?}"
        );
    }
    assert!(wire.closed, "closed after Connection: close");
}

#[test]
fn an_unread_body_over_64_kib_ends_the_connection_after_its_response_without_desync() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let worker = only_worker(&server);
    const BODY_BYTES: usize = 100 * 1024;
    // The body is made of requests, so a server that lost its place in it
    // would answer one of them.
    let filler = b"GET /inside-the-body HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut body = filler.repeat(BODY_BYTES / filler.len() + 1);
    body.truncate(BODY_BYTES);
    let mut request =
        format!("POST /pid HTTP/1.1\r\nHost: a\r\nContent-Length: {BODY_BYTES}\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(&body);
    request.extend_from_slice(b"GET /pid HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");

    let mut stream = connect(&server);
    let mut writer = stream.try_clone().expect("clone the stream");
    // Written from a thread: the server may stop reading, and the test must
    // still read what it answered.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let wire = read_until_closed(&mut stream);
    drop(stream);
    sender.join().expect("sender thread");

    let (responses, rest) = split_responses(&wire.bytes, &[]);
    let got = escaped(&wire.bytes);
    assert!(
        rest.is_empty() && wire.closed,
        "closed after whole responses; got {got:?}"
    );
    let first = responses
        .first()
        .unwrap_or_else(|| panic!("no response: {got:?}"));
    assert_eq!(first.status_line, OK, "{got:?}");
    match responses.len() {
        // Closed after the first response, which must have said so.
        1 => assert_eq!(first.header("Connection"), Some("close"), "{got:?}"),
        // Or the body was skipped and the GET answered, by the same worker.
        2 => {
            assert_eq!(responses[1].status_line, OK, "{got:?}");
            assert_eq!(
                String::from_utf8_lossy(&responses[1].body).trim(),
                worker.to_string()
            );
        }
        n => panic!("{n} responses to two requests: {got:?}"),
    }
    assert_still_serving(&server, worker, "after a large unread body");
}

// ---------------------------------------------------------------- limits

fn get_with_target_len(len: usize) -> Vec<u8> {
    // "GET " + target + " HTTP/1.1" is the request line.
    let target_len = len - "GET  HTTP/1.1".len();
    let target = format!("/{}", "a".repeat(target_len - 1));
    format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn a_request_line_over_4094_bytes_gets_414() {
    let server = echo_server();
    let at_limit = get_with_target_len(4094);
    assert_echoed(&server, "4094-byte request line", &at_limit);
    assert_rejected(
        &server,
        "4095-byte request line",
        &get_with_target_len(4095),
        "HTTP/1.1 414 URI Too Long",
    );
    assert_rejected(
        &server,
        "64 KiB request line",
        &get_with_target_len(64 * 1024),
        "HTTP/1.1 414 URI Too Long",
    );
}

/// A request whose `X-Big` field line is `line_len` bytes, CRLF included.
fn get_with_field_line(line_len: usize) -> Vec<u8> {
    let value = "v".repeat(line_len - "X-Big: \r\n".len());
    format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {value}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn a_header_field_over_8190_bytes_gets_431() {
    let server = echo_server();
    assert_echoed(&server, "8190-byte field line", &get_with_field_line(8190));
    assert_rejected(
        &server,
        "8191-byte field line",
        &get_with_field_line(8191),
        "HTTP/1.1 431 Request Header Fields Too Large",
    );
}

fn get_with_fields(count: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 2..count {
        head.push_str(&format!("X-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[test]
fn more_than_100_header_fields_get_431() {
    let server = echo_server();
    assert_echoed(&server, "100 fields", &get_with_fields(100));
    assert_rejected(
        &server,
        "101 fields",
        &get_with_fields(101),
        "HTTP/1.1 431 Request Header Fields Too Large",
    );
}

#[test]
fn a_body_over_limit_request_body_gets_413_whether_sized_or_chunked() {
    let server = Server::start(&["-w", "1", "--limit-request-body", "10", "echo"]);
    let sized = |body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let chunked = |body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .into_bytes()
    };
    let ten = "0123456789";
    let eleven = "0123456789A";
    assert_eq!(
        assert_echoed(&server, "10 bytes sized", &sized(ten)).body(),
        ten.as_bytes()
    );
    assert_eq!(
        assert_echoed(&server, "10 bytes chunked", &chunked(ten)).body(),
        ten.as_bytes()
    );
    let too_large = "HTTP/1.1 413 Payload Too Large";
    assert_rejected(&server, "11 bytes sized", &sized(eleven), too_large);
    assert_rejected(&server, "11 bytes chunked", &chunked(eleven), too_large);
    let split = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{}\r\n5\r\n{}\r\n0\r\n\r\n",
        &eleven[..6],
        &eleven[6..]
    );
    assert_rejected(
        &server,
        "11 bytes in two chunks",
        split.as_bytes(),
        too_large,
    );
}

// ---------------------------------------------------------------- timeouts and connections

#[test]
fn a_head_that_stops_arriving_gets_408_and_a_close_after_the_header_timeout() {
    let server = Server::start(&["-w", "1", "--header-timeout", "1", "echo"]);
    let worker = only_worker(&server);
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
        .expect("send a partial head");
    let sent = Instant::now();
    let wire = read_until_closed(&mut stream);
    let waited = sent.elapsed();
    let (responses, rest) = split_responses(&wire.bytes, &[]);
    let got = escaped(&wire.bytes);
    assert!(wire.closed, "closed; got {got:?} after {waited:?}");
    assert!(
        responses.len() == 1 && rest.is_empty(),
        "one response; got {got:?}"
    );
    assert_eq!(responses[0].status_line, "HTTP/1.1 408 Request Timeout");
    assert_server_and_date("408", &responses[0]);
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_millis(2500),
        "408 and close after {waited:?}; --header-timeout is 1 s"
    );
    assert_still_serving(&server, worker, "after a 408");
}

#[test]
fn a_head_request_gets_the_headers_with_content_length_and_no_body() {
    let server = Server::start(&["-w", "1", "hello"]);
    let wire = send_raw(
        &server,
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let got = escaped(&wire.bytes);
    let (responses, rest) = split_responses(&wire.bytes, &[true, false]);
    assert!(
        responses.len() == 2 && rest.is_empty(),
        "two responses; got {got:?}"
    );
    let (head, get) = (&responses[0], &responses[1]);
    assert_eq!(head.status_line, OK);
    assert_eq!(
        head.header("Content-Length"),
        Some("14"),
        "HEAD announces the GET's length; got {got:?}"
    );
    // The HEAD response's head is followed directly by the GET's status line.
    assert_eq!(get.status_line, OK, "{got:?}");
    assert_eq!(get.body, b"Hello, World!\n");
    assert!(wire.closed);
}

#[test]
fn an_http_1_0_request_with_connection_keep_alive_is_kept_alive() {
    let server = Server::start(&["-w", "1", "hello"]);
    let mut client = server.connect().expect("connect");
    for i in 0..3 {
        client
            .send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .expect("send");
        let reply = client
            .read_response()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(
            reply.header("Connection"),
            Some("keep-alive"),
            "request {i}"
        );
        assert_eq!(reply.header("Content-Length"), Some("14"), "request {i}");
    }
    // Without the token, HTTP/1.0 closes after the response.
    client.send(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let reply = client.read_response().expect("last response");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(client.is_closed_by_server());
}

#[test]
fn keep_alive_0_closes_the_connection_after_each_response() {
    let server = Server::start(&["-w", "1", "--keep-alive", "0", "hello"]);
    let mut client = Client::connect(server.port).expect("connect");
    client
        .send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send two requests");
    let reply = client.read_response().expect("first response");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(
        client.is_closed_by_server(),
        "the second request must not be answered on this connection"
    );
}

#[test]
fn every_response_carries_date_and_server_forkhorn() {
    let server = Server::start(&["-w", "1", "--limit-request-body", "4", "echo"]);
    for (case, request, status_line) in [
        (
            "200",
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
            OK,
        ),
        ("200 to HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", OK),
        ("400", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BAD_REQUEST),
        (
            "413",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 413 Payload Too Large",
        ),
        (
            "505",
            b"GET / HTTP/2.0\r\n\r\n",
            "HTTP/1.1 505 HTTP Version Not Supported",
        ),
    ] {
        let reply = exchange_one(&server, case, request);
        assert_eq!(reply.status_line, status_line, "{case}");
        assert_server_and_date(case, &reply);
    }
}

// ---------------------------------------------------------------- more edges

#[test]
fn empty_lines_before_the_request_line_are_ignored_up_to_the_line_limit() {
    let server = echo_server();
    let echoed = assert_echoed(
        &server,
        "two empty lines first",
        b"\r\n\r\nGET /after-blank HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(echoed.target(), "/after-blank");
    // Empty lines count towards the request-line limit, so they cannot go on forever.
    let mut endless = b"\r\n".repeat(3000);
    endless.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_rejected(
        &server,
        "3000 empty lines",
        &endless,
        "HTTP/1.1 414 URI Too Long",
    );
}

#[test]
fn five_hundred_pipelined_requests_in_one_write_are_all_answered_in_order() {
    const REQUESTS: usize = 500;
    let server = echo_server();
    let mut all = Vec::new();
    for i in 0..REQUESTS {
        let close = if i == REQUESTS - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        all.extend_from_slice(
            format!("POST /{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n{close}\r\n{i:03}")
                .as_bytes(),
        );
    }
    let mut client = server.connect().expect("connect");
    // The responses may fill the socket buffers before all the requests are
    // written, so one write_all runs in a thread while this one reads.
    let sender = {
        let mut stream = client.try_clone_stream().expect("clone the stream");
        std::thread::spawn(move || stream.write_all(&all))
    };
    for i in 0..REQUESTS {
        let reply = client
            .read_response()
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(reply.status, 200, "response {i}");
        let echoed = Echoed::of("pipelined", &reply.body);
        assert_eq!(echoed.target(), format!("/{i}"), "response {i}");
        assert_eq!(echoed.body(), format!("{i:03}").as_bytes(), "response {i}");
    }
    sender
        .join()
        .expect("sender thread")
        .expect("send the requests");
    assert!(client.is_closed_by_server());
}

#[test]
fn an_http_1_0_client_never_gets_100_continue() {
    let server = echo_server();
    let mut stream = connect(&server);
    stream
        .write_all(b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .expect("send the head");
    // An HTTP/1.1 server would have answered 100 by now; this client waits a
    // little, as RFC 9110 §10.1.1 tells it to, then sends the body anyway.
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(b"hi").expect("send the body");
    let wire = read_until_closed(&mut stream);
    let reply = exchange_parts(&wire);
    assert_eq!(reply.status_line, OK, "no 100 Continue first");
    assert_eq!(Echoed::of("1.0 expect", &reply.body).body(), b"hi");
}

#[test]
fn expect_100_continue_with_a_body_over_the_limit_gets_413_and_no_100() {
    let server = Server::start(&["-w", "1", "--limit-request-body", "10", "echo"]);
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        )
        .expect("send the head");
    let wire = read_until_closed(&mut stream);
    let reply = exchange_parts(&wire);
    assert_eq!(reply.status_line, "HTTP/1.1 413 Payload Too Large");
}

#[test]
fn expect_100_continue_for_an_app_that_does_not_read_the_body_gets_200_and_a_close() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let worker = only_worker(&server);
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /pid HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .expect("send the head");
    // The app answers without reading, so no 100 is due; the body the client
    // holds back is never read, so the connection cannot be reused.
    let wire = read_until_closed(&mut stream);
    let reply = exchange_parts(&wire);
    assert_eq!(reply.status_line, OK);
    assert_eq!(reply.header("Connection"), Some("close"));
    assert_eq!(
        String::from_utf8_lossy(&reply.body).trim(),
        worker.to_string()
    );
}

#[test]
fn an_unread_chunked_body_over_64_kib_ends_the_connection_without_desync() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let worker = only_worker(&server);
    let inner = b"GET /inside-the-body HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut request =
        b"POST /pid HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3000 {
        request.extend_from_slice(format!("{:x}\r\n", inner.len()).as_bytes());
        request.extend_from_slice(inner);
        request.extend_from_slice(b"\r\n");
    }
    request
        .extend_from_slice(b"0\r\n\r\nGET /pid HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");

    let mut stream = connect(&server);
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let wire = read_until_closed(&mut stream);
    drop(stream);
    sender.join().expect("sender thread");
    let (responses, rest) = split_responses(&wire.bytes, &[]);
    let got = escaped(&wire.bytes);
    assert!(rest.is_empty() && wire.closed, "{got:?}");
    assert!(
        (1..=2).contains(&responses.len()),
        "one or two responses; got {got:?}"
    );
    for r in &responses {
        assert_eq!(r.status_line, OK, "{got:?}");
        assert_eq!(String::from_utf8_lossy(&r.body).trim(), worker.to_string());
    }
    if responses.len() == 1 {
        assert_eq!(responses[0].header("Connection"), Some("close"), "{got:?}");
    }
    assert_still_serving(&server, worker, "after a large unread chunked body");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_silently_after_the_keep_alive_time() {
    let server = Server::start(&["-w", "1", "--keep-alive", "1", "hello"]);
    let mut stream = connect(&server);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    let wire = read_until_closed(&mut stream);
    let waited = started.elapsed();
    let reply = exchange_parts(&wire);
    assert_eq!(reply.status_line, OK);
    assert_eq!(reply.header("Connection"), None, "kept alive at first");
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_millis(2500),
        "closed after {waited:?}; --keep-alive is 1 s"
    );
}

// ---------------------------------------------------------------- limits turned off

/// With the field-size limit off (0), a head far larger than the default
/// limits is still read whole and served (regression: the read buffer was
/// once sized from the raw settings, so it got 408).
#[test]
fn a_large_field_is_served_when_the_field_size_limit_is_off() {
    let server = Server::start(&[
        "-w",
        "1",
        "--header-timeout",
        "2",
        "--limit-request-field_size",
        "0",
        "echo",
    ]);
    let request = get_with_field_line(100_000);
    let reply = exchange_one(&server, "100 KB field, no field limit", &request);
    assert_eq!(reply.status_line, OK, "{reply:?}");
}

/// `--limit-request-fields 0` means 32768 fields: 20 fields of 8000 bytes
/// (160 KB) are served (same regression as above).
#[test]
fn many_large_fields_are_served_when_the_field_count_limit_is_off() {
    let server = Server::start(&[
        "-w",
        "1",
        "--header-timeout",
        "2",
        "--limit-request-fields",
        "0",
        "echo",
    ]);
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 0..20 {
        head.push_str(&format!("X-{i}: {}\r\n", "v".repeat(8000)));
    }
    head.push_str("\r\n");
    let reply = exchange_one(&server, "20 fields of 8000 bytes", head.as_bytes());
    assert_eq!(reply.status_line, OK, "{reply:?}");
}
