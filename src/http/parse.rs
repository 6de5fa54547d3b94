//! The request head: request line and header fields, checked against RFC 9112.
//!
//! Three passes, each linear in the head:
//! 1. `scan_request_line` and `check_request_line` read the request line
//!    themselves, because its errors carry their own statuses (414, 505) and
//!    the allowed target forms depend on the method.
//! 2. `scan_fields` walks the field lines and enforces what `httparse` is
//!    lenient about or cannot know: CRLF line ends (httparse also takes a bare
//!    LF), obsolete line folding, and the size limits, which must hold for a
//!    head that is still arriving.
//! 3. `httparse` (SIMD, fuzzed) checks the bytes of every field line and
//!    splits names from values; `head_from_fields` then applies the framing and
//!    connection rules.
//!
//! `parse_head` is called again and again on a growing buffer, so it must give
//! the same answer however the bytes were split. Every error is reported as
//! soon as the bytes proving it have arrived, and it is always the first
//! problem in reading order: httparse only ever sees the bytes before the
//! first problem the scan found.

use std::fmt;
use std::mem::MaybeUninit;

/// What a request head may be: size limits a client cannot exceed
/// (gunicorn's names and defaults), and the two leniencies towards RFC 9112
/// an operator may switch on for old clients (both off by default).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line in bytes, CRLF excluded (`--limit-request-line`, 4094; 0 = unlimited).
    /// Empty lines sent before the request line count towards it, so they cannot be sent forever.
    pub request_line: usize,
    /// Most header fields in one head (`--limit-request-fields`, 100). Like gunicorn,
    /// 0 or anything above 32768 means 32768.
    pub fields: usize,
    /// Longest single header field line in bytes, CRLF included as gunicorn counts it
    /// (`--limit-request-field_size`, 8190; 0 = unlimited).
    pub field_size: usize,
    /// Most bytes in a chunked body's trailer section, CRLFs included (8190). The trailer
    /// field count is bounded by `fields`.
    pub trailer_bytes: usize,
    /// Most bytes of chunk extensions in one chunked body (16384). Extensions are parsed and
    /// dropped, so without a cap a client could keep a worker busy sending only them.
    pub chunk_ext_bytes: usize,
    /// Accept an HTTP/1.1 request without a Host field (`--permit-missing-host`,
    /// off). RFC 9112 §3.2 requires 400; gunicorn and its request corpus accept it.
    pub permit_missing_host: bool,
    /// Accept the codings gunicorn knows (`gzip`, `deflate`, `identity`, ...)
    /// before a final `chunked` (`--permit-transfer-codings`, off). The app gets
    /// the de-chunked bytes still coded, since forkhorn decodes none of them;
    /// by default such a request gets 501 (RFC 9112 §6.1).
    pub permit_transfer_codings: bool,
}

/// gunicorn's ceiling on `--limit-request-fields`.
pub const MAX_FIELDS: usize = 32768;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
            trailer_bytes: 8190,
            chunk_ext_bytes: 16384,
            permit_missing_host: false,
            permit_transfer_codings: false,
        }
    }
}

impl Limits {
    /// The field count actually enforced (see `fields`).
    pub fn max_fields(&self) -> usize {
        if self.fields == 0 || self.fields > MAX_FIELDS {
            MAX_FIELDS
        } else {
            self.fields
        }
    }
}

/// The request's HTTP version; the only two a request may carry (others
/// are refused with 505). It decides the keep-alive default and whether
/// chunked framing may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`: closes by default; no transfer codings; `100-continue`
    /// is ignored.
    Http10,
    /// `HTTP/1.1`: keep-alive by default.
    Http11,
}

impl Version {
    /// The version as written on the request line, e.g. `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with `ChunkedDecoder`.
    Chunked,
}

/// A request head that passed every check; built only by [`parse_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method as sent: a token with no lowercase letters.
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// Fields in the order sent, names as sent, values with surrounding OWS removed.
    pub headers: Vec<(String, Vec<u8>)>,
    /// How the body that follows the head is delimited.
    pub framing: Framing,
    /// Whether the connection may stay open after this exchange (version default + Connection).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (always false for HTTP/1.0, which must ignore it).
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Why a head was rejected. Client bytes inside a variant are shown escaped and
/// shortened (see `shown`), so `Display` output is safe to send back in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No line end within `limit` bytes (leading empty lines included). 414.
    RequestLineTooLong {
        /// `Limits::request_line` in force.
        limit: usize,
    },
    /// A line of the head ends in LF without CR; `line` 1 is the request line.
    BareLf {
        /// Line number in the head, counting from 1.
        line: usize,
    },
    /// A CR not followed by LF; `line` 1 is the request line.
    BareCr {
        /// Line number in the head, counting from 1.
        line: usize,
    },
    /// A control byte, DEL, HTAB or non-ASCII byte in the request line.
    InvalidRequestLineByte(u8),
    /// The request line is not `method SP target SP version`.
    MalformedRequestLine(&'static str),
    /// The method is not a token, or has lowercase letters (`get` is not
    /// GET; gunicorn refuses it too).
    InvalidMethod {
        /// The method as sent, escaped and shortened.
        method: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The target is not in a form the method allows (RFC 9112 §3.2:
    /// `/path`, absolute URI, `*` for OPTIONS, `host:port` for CONNECT).
    InvalidTarget {
        /// The target as sent, escaped and shortened.
        target: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Not of the form `HTTP/<digit>.<digit>`.
    MalformedVersion(String),
    /// Well-formed but not 1.0 or 1.1. 505.
    UnsupportedVersion(String),
    /// More than `limit` field lines. 431.
    TooManyFields {
        /// The field count enforced (`Limits::max_fields`).
        limit: usize,
    },
    /// A field line longer than `limit` bytes. 431.
    FieldTooLong {
        /// Line number in the head; the request line is 1.
        line: usize,
        /// `Limits::field_size` in force, CRLF included.
        limit: usize,
    },
    /// A field line starting with SP or HTAB (RFC 9112 §5.2 lets us reject it).
    ObsoleteLineFolding {
        /// Line number in the head; the request line is 1.
        line: usize,
    },
    /// A field name that is empty or not a token; holds the name up to and
    /// including the first bad byte.
    InvalidFieldName(String),
    /// `Name : value`: whitespace after the name (RFC 9112 §5.1 requires 400).
    WhitespaceAfterFieldName(String),
    /// A field line without a colon; holds the start of the line.
    MissingColon(String),
    /// A control byte (other than HTAB) or DEL in the value of field `name`.
    InvalidFieldValue {
        /// The field name, escaped and shortened.
        name: String,
        /// The first forbidden byte in the value.
        byte: u8,
    },
    /// httparse refused the field section for a reason the diagnosis could not place.
    MalformedFields(&'static str),
    /// A Content-Length that is not 1*DIGIT or does not fit in a u64.
    InvalidContentLength(String),
    /// `Content-Length: 5, 5`: gunicorn's corpus rejects the list form even when values agree.
    ContentLengthList(String),
    /// Two Content-Length fields with different values (first, second): a
    /// classic request-smuggling shape.
    ConflictingContentLength(u64, u64),
    /// Both framings at once (RFC 9112 §6.3): refused rather than picking one,
    /// since a proxy in front may have picked the other.
    ContentLengthWithTransferEncoding,
    /// HTTP/1.0 has no transfer codings (RFC 9112 §6.1).
    TransferEncodingOnHttp10,
    /// A Transfer-Encoding that is empty or has a coding that is not a token.
    MalformedTransferEncoding(String),
    /// `chunked` listed more than once.
    ChunkedTwice,
    /// A coding listed after `chunked`.
    ChunkedNotFinal(String),
    /// A transfer coding before the final `chunked` that forkhorn does not
    /// decode: any, unless `Limits::permit_transfer_codings` lets gunicorn's
    /// list through. 501 (RFC 9112 §6.1).
    UnsupportedTransferCoding(String),
    /// The final transfer coding is not chunked, so the body length cannot be
    /// known. 400 and close (RFC 9112 §6.3).
    FinalCodingNotChunked(String),
    /// An HTTP/1.1 request without a Host field (RFC 9112 §3.2), unless
    /// `Limits::permit_missing_host`.
    MissingHost,
    /// A second Host or Content-Type field: their grammar allows one value, so a
    /// repeat is read differently by different servers (RFC 9110 §5.3).
    DuplicateField(&'static str),
    /// A Host value that is not a valid `host[:port]` (an empty Host is allowed).
    InvalidHost(String),
    /// An `Expect` other than `100-continue`. 417.
    UnsupportedExpectation(String),
}

impl ParseError {
    /// The status code to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::RequestLineTooLong { .. } => 414,
            ParseError::TooManyFields { .. } | ParseError::FieldTooLong { .. } => 431,
            ParseError::UnsupportedVersion(_) => 505,
            ParseError::UnsupportedTransferCoding(_) => 501,
            ParseError::UnsupportedExpectation(_) => 417,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ParseError::*;
        match self {
            RequestLineTooLong { limit } => write!(f, "request line longer than {limit} bytes"),
            BareLf { line } => write!(
                f,
                "line {line} of the head ends in a bare LF; lines must end in CRLF"
            ),
            BareCr { line } => write!(f, "line {line} of the head has a CR not followed by LF"),
            InvalidRequestLineByte(b) => write!(
                f,
                "request line contains byte 0x{b:02x}, which is not allowed there"
            ),
            MalformedRequestLine(why) => write!(f, "malformed request line: {why}"),
            InvalidMethod { method, reason } => write!(f, "invalid method \"{method}\": {reason}"),
            InvalidTarget { target, reason } => {
                write!(f, "invalid request target \"{target}\": {reason}")
            }
            MalformedVersion(v) => write!(
                f,
                "malformed HTTP version \"{v}\"; expected HTTP/1.1 or HTTP/1.0"
            ),
            UnsupportedVersion(v) => write!(
                f,
                "unsupported HTTP version {v}; this server speaks HTTP/1.1 and HTTP/1.0"
            ),
            TooManyFields { limit } => write!(f, "more than {limit} header fields"),
            FieldTooLong { line, limit } => {
                write!(
                    f,
                    "header line {line} is longer than {limit} bytes (CRLF included)"
                )
            }
            ObsoleteLineFolding { line } => {
                write!(
                    f,
                    "header line {line} starts with whitespace; obsolete line folding is not accepted"
                )
            }
            InvalidFieldName(name) if name.is_empty() => write!(f, "empty header field name"),
            InvalidFieldName(name) => write!(f, "invalid header field name \"{name}\""),
            WhitespaceAfterFieldName(name) => {
                write!(
                    f,
                    "whitespace after header field name \"{name}\"; the colon must follow the name"
                )
            }
            MissingColon(line) => write!(f, "header line \"{line}\" has no colon"),
            InvalidFieldValue { name, byte } => {
                write!(f, "header field {name} contains control byte 0x{byte:02x}")
            }
            MalformedFields(why) => write!(f, "malformed header section: {why}"),
            InvalidContentLength(v) => write!(
                f,
                "content-length \"{v}\" is not a decimal number of at most 64 bits"
            ),
            ContentLengthList(v) => {
                write!(f, "content-length \"{v}\" is a list; send a single value")
            }
            ConflictingContentLength(a, b) => {
                write!(f, "content-length values disagree: {a} vs {b}")
            }
            ContentLengthWithTransferEncoding => {
                write!(f, "both content-length and transfer-encoding are present")
            }
            TransferEncodingOnHttp10 => {
                write!(f, "transfer-encoding is not allowed in an HTTP/1.0 request")
            }
            MalformedTransferEncoding(v) => write!(f, "malformed transfer-encoding \"{v}\""),
            ChunkedTwice => write!(f, "transfer-encoding lists chunked more than once"),
            ChunkedNotFinal(c) => write!(
                f,
                "transfer coding \"{c}\" follows chunked; chunked must be the final coding"
            ),
            UnsupportedTransferCoding(c) => write!(
                f,
                "unsupported transfer coding \"{c}\"; send the body with chunked alone"
            ),
            FinalCodingNotChunked(c) => {
                write!(
                    f,
                    "final transfer coding is \"{c}\", not chunked, so the body length is unknown"
                )
            }
            DuplicateField(name) => write!(f, "more than one {name} header field"),
            InvalidHost(v) => write!(f, "invalid host \"{v}\""),
            MissingHost => write!(f, "an HTTP/1.1 request needs a Host header field"),
            UnsupportedExpectation(v) => write!(
                f,
                "unsupported expectation \"{v}\"; only 100-continue is supported"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Client bytes for an error message: escaped to printable ASCII and cut to a
/// length that cannot bloat a log line or an error body.
pub(crate) fn shown(bytes: &[u8]) -> String {
    const MAX_SHOWN_BYTES: usize = 64;
    let mut s: String = bytes[..bytes.len().min(MAX_SHOWN_BYTES)]
        .escape_ascii()
        .to_string();
    if bytes.len() > MAX_SHOWN_BYTES {
        s.push_str("...");
    }
    s
}

/// Parse a request head from the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet (read more). `Ok(Some((head, n)))`:
/// the head is the first `n` bytes. `Err`: reject with `err.status()` and close;
/// this includes a partial head that already breaks a limit.
///
/// ```
/// use forkhorn::http::{Framing, Limits, ParseError, Version, parse_head};
///
/// let limits = Limits::default();
/// let buf = b"POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello";
///
/// // A head that is still arriving asks for more bytes.
/// assert_eq!(parse_head(&buf[..20], &limits), Ok(None));
///
/// let (head, n) = parse_head(buf, &limits).unwrap().unwrap();
/// assert_eq!(head.method, "POST");
/// assert_eq!(head.target, "/upload?x=1");
/// assert_eq!(head.version, Version::Http11);
/// assert_eq!(head.framing, Framing::Length(5));
/// assert!(head.keep_alive);
/// assert_eq!(head.header("content-length"), Some(&b"5"[..]));
/// assert_eq!(&buf[n..], b"hello"); // the body is left to the caller
///
/// // Both framings at once is refused outright, not resolved.
/// let smuggle = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
/// let err = parse_head(smuggle, &limits).unwrap_err();
/// assert_eq!(err, ParseError::ContentLengthWithTransferEncoding);
/// assert_eq!(err.status(), 400);
///
/// // So is an HTTP/1.1 request without Host (RFC 9112 §3.2), unless permitted.
/// let no_host = b"GET / HTTP/1.1\r\n\r\n";
/// assert_eq!(parse_head(no_host, &limits), Err(ParseError::MissingHost));
/// let lenient = Limits { permit_missing_host: true, ..Limits::default() };
/// assert!(parse_head(no_host, &lenient).unwrap().is_some());
/// ```
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, ParseError> {
    let Some(line) = scan_request_line(buf, limits)? else {
        return Ok(None);
    };
    let request = check_request_line(&buf[line.start..line.end])?;
    let scan = scan_fields(buf, line.next, limits);

    // httparse sees the head only up to the first problem the scan found (or
    // the end of what has arrived), so its verdict is about earlier bytes.
    let (region_end, lines) = match scan {
        FieldScan::Complete { end, lines } => (end, lines),
        FieldScan::Partial { region_end, lines }
        | FieldScan::Broken {
            region_end, lines, ..
        } => (region_end, lines),
    };
    let region = &buf[..region_end];
    let mut stack_slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_FIELD_SLOTS];
    let mut heap_slots = Vec::new();
    let slots = if lines <= STACK_FIELD_SLOTS {
        &mut stack_slots[..lines]
    } else {
        heap_slots.resize(lines, MaybeUninit::uninit());
        &mut heap_slots[..]
    };
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(region, slots) {
        Err(e) => Err(diagnose_fields(&buf[line.next..region_end], e)),
        Ok(httparse::Status::Partial) => match scan {
            FieldScan::Partial { .. } => Ok(None),
            FieldScan::Broken { error, .. } => Err(error),
            FieldScan::Complete { .. } => Err(AMBIGUOUS_END),
        },
        Ok(httparse::Status::Complete(n)) => match scan {
            FieldScan::Complete { end, .. } if n == end => Ok(Some((
                head_from_fields(request, parsed.headers, limits)?,
                end,
            ))),
            FieldScan::Broken { error, .. } => Err(error),
            _ => Err(AMBIGUOUS_END),
        },
    }
}

/// The scan and httparse disagree on where the head ends (a bug in one of
/// them): refuse rather than guess which one a proxy in front agreed with.
const AMBIGUOUS_END: ParseError = ParseError::MalformedFields("the end of the head is ambiguous");

/// Field slots kept on the stack; heads with more lines (a raised
/// `--limit-request-fields`) fall back to a heap buffer.
const STACK_FIELD_SLOTS: usize = 128;

/// Where the request line sits in the buffer.
struct LineSpan {
    /// First byte of the request line (after any leading empty lines).
    start: usize,
    /// The line's CR.
    end: usize,
    /// First byte after the line's CRLF.
    next: usize,
}

/// Finds the request line, skipping empty lines before it (RFC 9112 §2.2).
///
/// Checks each byte as it goes, so a line of garbage is refused without waiting
/// for its end.
fn scan_request_line(buf: &[u8], limits: &Limits) -> Result<Option<LineSpan>, ParseError> {
    let limit = if limits.request_line == 0 {
        usize::MAX
    } else {
        limits.request_line
    };
    let mut start = 0;
    loop {
        match buf.get(start) {
            None => return Ok(None),
            Some(b'\r') => match buf.get(start + 1) {
                None => return Ok(None),
                Some(b'\n') => start += 2,
                Some(_) => return Err(ParseError::BareCr { line: 1 }),
            },
            Some(b'\n') => return Err(ParseError::BareLf { line: 1 }),
            Some(_) => break,
        }
        if start > limit {
            return Err(ParseError::RequestLineTooLong { limit });
        }
    }
    for (at, &b) in buf.iter().enumerate().skip(start) {
        match b {
            b'\r' => {
                return match buf.get(at + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(LineSpan {
                        start,
                        end: at,
                        next: at + 2,
                    })),
                    Some(_) => Err(ParseError::BareCr { line: 1 }),
                };
            }
            b'\n' => return Err(ParseError::BareLf { line: 1 }),
            _ if at >= limit => return Err(ParseError::RequestLineTooLong { limit }),
            b' ' | 0x21..=0x7e => {}
            _ => return Err(ParseError::InvalidRequestLineByte(b)),
        }
    }
    Ok(None)
}

struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    version: Version,
}

/// Splits and checks a complete request line (only SP and VCHAR bytes by now).
fn check_request_line(line: &[u8]) -> Result<RequestLine<'_>, ParseError> {
    let Some(sp1) = line.iter().position(|&b| b == b' ') else {
        return Err(ParseError::MalformedRequestLine(
            "expected method, target and version separated by spaces",
        ));
    };
    let (method, rest) = (&line[..sp1], &line[sp1 + 1..]);
    let Some(sp2) = rest.iter().position(|&b| b == b' ') else {
        return Err(ParseError::MalformedRequestLine(
            "missing target or HTTP version",
        ));
    };
    let (target, version) = (&rest[..sp2], &rest[sp2 + 1..]);
    if method.is_empty() {
        return Err(ParseError::MalformedRequestLine("line starts with a space"));
    }
    if target.is_empty() || version.first() == Some(&b' ') {
        return Err(ParseError::MalformedRequestLine(
            "more than one space between parts",
        ));
    }
    if version.contains(&b' ') {
        return Err(ParseError::MalformedRequestLine(
            "extra text after the HTTP version",
        ));
    }
    // The version goes first so that an HTTP/2 connection preface
    // (`PRI * HTTP/2.0`) gets 505 rather than a complaint about its target.
    let version = check_version(version)?;
    check_method(method)?;
    check_target(method, target).map_err(|reason| ParseError::InvalidTarget {
        target: shown(target),
        reason,
    })?;
    Ok(RequestLine {
        method,
        target,
        version,
    })
}

/// `HTTP-version = "HTTP/" DIGIT "." DIGIT` (RFC 9112 §2.3).
fn check_version(v: &[u8]) -> Result<Version, ParseError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(ParseError::UnsupportedVersion(shown(v)))
        }
        _ => Err(ParseError::MalformedVersion(shown(v))),
    }
}

/// Any token, except that lowercase letters are refused as gunicorn does
/// (its corpus case invalid/003c): methods are case-sensitive, so `get` is not
/// GET, and a lowercase method is far likelier a client bug or a probe.
fn check_method(method: &[u8]) -> Result<(), ParseError> {
    let reason = if !method.iter().all(|&b| is_tchar(b)) {
        "not a token"
    } else if method.iter().any(u8::is_ascii_lowercase) {
        "methods are case-sensitive and this server accepts only uppercase ones"
    } else {
        return Ok(());
    };
    Err(ParseError::InvalidMethod {
        method: shown(method),
        reason,
    })
}

/// The four target forms of RFC 9112 §3.2, each only where it is allowed.
/// The bytes are already known to be VCHARs.
fn check_target(method: &[u8], target: &[u8]) -> Result<(), &'static str> {
    if method == b"CONNECT" {
        return check_authority(target, Authority::ConnectTarget)
            .map_err(|_| "CONNECT needs the authority-form host:port");
    }
    match target {
        [b'/', ..] => Ok(()),
        b"*" if method == b"OPTIONS" => Ok(()),
        b"*" => Err("the asterisk-form is only allowed with OPTIONS"),
        _ => match split_scheme(target) {
            Some(rest) => check_absolute(rest),
            None if check_authority(target, Authority::ConnectTarget).is_ok() => {
                Err("the authority-form is only allowed with CONNECT")
            }
            None => Err("expected /path or an absolute URI"),
        },
    }
}

/// For `scheme://rest`, returns `rest`.
fn split_scheme(target: &[u8]) -> Option<&[u8]> {
    let colon = target.iter().position(|&b| b == b':')?;
    let (scheme, rest) = (&target[..colon], &target[colon + 1..]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = rest.strip_prefix(b"//")?;
    scheme_ok.then_some(rest)
}

/// The part of an absolute-form target after `scheme://`: an authority with a
/// non-empty host, then path, query or nothing.
fn check_absolute(rest: &[u8]) -> Result<(), &'static str> {
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    check_authority(&rest[..end], Authority::InUri)
        .map_err(|_| "the absolute URI has an invalid authority")
}

/// Where an authority appears, which decides what it may contain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// In an absolute URI: optional userinfo, optional port.
    InUri,
    /// The CONNECT target: `host:port`, both required.
    ConnectTarget,
    /// A Host field value: host and optional port.
    HostField,
}

/// Checks `[userinfo@]host[:port]` (RFC 3986 §3.2); the host must not be empty.
fn check_authority(auth: &[u8], form: Authority) -> Result<(), ()> {
    let hostport = match auth.iter().rposition(|&b| b == b'@') {
        Some(at) if form == Authority::InUri => {
            let userinfo = &auth[..at];
            if !all_uri_chars(userinfo, |b| is_unreserved_or_sub_delim(b) || b == b':') {
                return Err(());
            }
            &auth[at + 1..]
        }
        Some(_) => return Err(()),
        None => auth,
    };
    let (host, port) = if hostport.first() == Some(&b'[') {
        let close = hostport.iter().position(|&b| b == b']').ok_or(())?;
        let literal = &hostport[1..close];
        let literal_ok = !literal.is_empty()
            && literal.iter().all(|&b| {
                b.is_ascii_hexdigit() || b == b':' || b == b'.' || is_unreserved_or_sub_delim(b)
            });
        if !literal_ok {
            return Err(());
        }
        match &hostport[close + 1..] {
            [] => (&hostport[..=close], None),
            [b':', port @ ..] => (&hostport[..=close], Some(port)),
            _ => return Err(()),
        }
    } else {
        match hostport.iter().position(|&b| b == b':') {
            Some(colon) => (&hostport[..colon], Some(&hostport[colon + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() || (host[0] != b'[' && !all_uri_chars(host, is_unreserved_or_sub_delim)) {
        return Err(());
    }
    match port {
        None if form == Authority::ConnectTarget => Err(()),
        None => Ok(()),
        // RFC 3986 allows an empty port after the colon, except where one is required.
        Some([]) if form != Authority::ConnectTarget => Ok(()),
        // At most 5 digits, so the value cannot overflow before the range check.
        Some(port)
            if !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit) =>
        {
            let value = port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            if value <= u32::from(u16::MAX) {
                Ok(())
            } else {
                Err(())
            }
        }
        Some(_) => Err(()),
    }
}

/// Every byte passes `allowed` or is part of a `%XX` escape.
fn all_uri_chars(bytes: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let escape_ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !escape_ok {
                return false;
            }
            i += 3;
        } else if allowed(bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// What the line scan of the field section found.
enum FieldScan {
    /// The empty line ending the head was found; the head is `buf[..end]`.
    Complete { end: usize, lines: usize },
    /// More bytes are needed; everything in `buf[..region_end]` is well-formed
    /// so far (a trailing CR is left out until its LF arrives).
    Partial { region_end: usize, lines: usize },
    /// `error` was found at `region_end`; the bytes before it still need httparse's check.
    Broken {
        region_end: usize,
        lines: usize,
        error: ParseError,
    },
}

/// Walks the field lines from `p`: CRLF line ends, no folding, and the limits.
/// `lines` counts the field lines started, which is how many slots httparse needs.
fn scan_fields(buf: &[u8], mut p: usize, limits: &Limits) -> FieldScan {
    // gunicorn counts the CRLF in the limit (its corpus cases 008 and 017
    // refuse an 8189-byte line under the default 8190).
    let max_line = if limits.field_size == 0 {
        usize::MAX
    } else {
        limits.field_size.saturating_sub(2)
    };
    let max_fields = limits.max_fields();
    let mut lines = 0;
    loop {
        // Head line numbers count the request line as 1.
        let line = lines + 2;
        let rest = &buf[p..];
        match rest {
            [] => {
                return FieldScan::Partial {
                    region_end: p,
                    lines,
                };
            }
            [b'\r'] => {
                return FieldScan::Partial {
                    region_end: p,
                    lines,
                };
            }
            [b'\r', b'\n', ..] => return FieldScan::Complete { end: p + 2, lines },
            [b'\r', ..] => {
                return FieldScan::Broken {
                    region_end: p,
                    lines,
                    error: ParseError::BareCr { line },
                };
            }
            [b'\n', ..] => {
                return FieldScan::Broken {
                    region_end: p,
                    lines,
                    error: ParseError::BareLf { line },
                };
            }
            [b' ' | b'\t', ..] => {
                return FieldScan::Broken {
                    region_end: p,
                    lines,
                    error: ParseError::ObsoleteLineFolding { line },
                };
            }
            _ => {}
        }
        if lines == max_fields {
            return FieldScan::Broken {
                region_end: p,
                lines,
                error: ParseError::TooManyFields { limit: max_fields },
            };
        }
        lines += 1;
        let window = &rest[..rest.len().min(max_line.saturating_add(1))];
        match find_cr_or_lf(window) {
            Some(i) if rest[i] == b'\n' => {
                return FieldScan::Broken {
                    region_end: p + i,
                    lines,
                    error: ParseError::BareLf { line },
                };
            }
            Some(i) => match rest.get(i + 1) {
                None => {
                    return FieldScan::Partial {
                        region_end: p + i,
                        lines,
                    };
                }
                Some(b'\n') => p += i + 2,
                Some(_) => {
                    return FieldScan::Broken {
                        region_end: p + i,
                        lines,
                        error: ParseError::BareCr { line },
                    };
                }
            },
            None if window.len() > max_line => {
                let error = ParseError::FieldTooLong {
                    line,
                    limit: limits.field_size,
                };
                return FieldScan::Broken {
                    region_end: p + max_line,
                    lines,
                    error,
                };
            }
            None => {
                return FieldScan::Partial {
                    region_end: buf.len(),
                    lines,
                };
            }
        }
    }
}

/// Index of the first CR or LF in `bytes`, eight bytes at a time: field lines
/// are most of a head, and every one is searched.
fn find_cr_or_lf(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Nonzero when some byte of `v` is zero (the classic SWAR test; a hit is
    // confirmed byte by byte below).
    let has_zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        if has_zero_byte(word ^ (ONES * u64::from(b'\r')))
            | has_zero_byte(word ^ (ONES * u64::from(b'\n')))
            != 0
        {
            break;
        }
        offset += 8;
    }
    bytes[offset..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|i| offset + i)
}

/// Names the field line httparse refused. `section` holds CRLF-terminated
/// field lines, the last possibly incomplete.
fn diagnose_fields(section: &[u8], e: httparse::Error) -> ParseError {
    let mut rest = section;
    while !rest.is_empty() {
        let (line, complete, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], true, &rest[i + 2..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        if let Err(error) = split_field_line(line, complete) {
            return error;
        }
        rest = next;
    }
    match e {
        httparse::Error::TooManyHeaders => {
            ParseError::MalformedFields("more field lines than expected")
        }
        httparse::Error::HeaderName => ParseError::MalformedFields("invalid header name"),
        httparse::Error::HeaderValue => ParseError::MalformedFields("invalid header value"),
        _ => ParseError::MalformedFields("invalid header section"),
    }
}

/// Checks one field line (CRLF excluded) and returns its name and its value
/// without surrounding whitespace. With `complete` false the line is still
/// arriving, and only problems visible in the bytes so far are reported.
/// Shared with the trailer section, which has the same syntax.
pub(crate) fn split_field_line(line: &[u8], complete: bool) -> Result<(&[u8], &[u8]), ParseError> {
    let name_end = line
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    match line.get(name_end) {
        Some(b':') if name.is_empty() => Err(ParseError::InvalidFieldName(String::new())),
        Some(b':') => {
            let value = trim_ows(&line[name_end + 1..]);
            match value
                .iter()
                .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                Some(&byte) => Err(ParseError::InvalidFieldValue {
                    name: shown(name),
                    byte,
                }),
                None => Ok((name, value)),
            }
        }
        Some(b' ' | b'\t') if !name.is_empty() => {
            Err(ParseError::WhitespaceAfterFieldName(shown(name)))
        }
        Some(_) => Err(ParseError::InvalidFieldName(shown(&line[..=name_end]))),
        None if complete => Err(ParseError::MissingColon(shown(line))),
        None => Ok((name, &[])),
    }
}

/// Strips optional whitespace (SP, HTAB) from both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Elements of a comma-separated field value (RFC 9110 §5.6.1), trimmed, empty ones skipped.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// `bytes` as a String, invalid UTF-8 replaced. The request line's bytes
/// are ASCII once checked, so the plain UTF-8 check (faster than the lossy
/// decoder's) nearly always takes them as they are.
fn owned_text(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes).map_or_else(
        |_| String::from_utf8_lossy(bytes).into_owned(),
        str::to_owned,
    )
}

/// Applies the framing and connection rules to a head whose syntax is valid.
fn head_from_fields(
    request: RequestLine<'_>,
    fields: &[httparse::Header<'_>],
    limits: &Limits,
) -> Result<RequestHead, ParseError> {
    let mut content_length: Option<u64> = None;
    let mut has_transfer_encoding = false;
    let (mut seen_host, mut seen_content_type) = (false, false);
    let (mut close, mut keep_alive_token, mut expect_continue) = (false, false, false);
    let mut headers = Vec::with_capacity(fields.len());
    for field in fields {
        let (name, value) = (field.name, field.value);
        // Dispatch on length first: most fields are none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if seen_host {
                    return Err(ParseError::DuplicateField("host"));
                }
                seen_host = true;
                if !value.is_empty() && check_authority(value, Authority::HostField).is_err() {
                    return Err(ParseError::InvalidHost(shown(value)));
                }
            }
            6 if name.eq_ignore_ascii_case("expect") => {
                for expectation in list_elements(value) {
                    if !expectation.eq_ignore_ascii_case(b"100-continue") {
                        return Err(ParseError::UnsupportedExpectation(shown(value)));
                    }
                    expect_continue = true;
                }
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for option in list_elements(value) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            12 if name.eq_ignore_ascii_case("content-type") => {
                if seen_content_type {
                    return Err(ParseError::DuplicateField("content-type"));
                }
                seen_content_type = true;
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let n = parse_content_length(value)?;
                match content_length {
                    Some(first) if first != n => {
                        return Err(ParseError::ConflictingContentLength(first, n));
                    }
                    _ => content_length = Some(n),
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => has_transfer_encoding = true,
            _ => {}
        }
        headers.push((name.to_owned(), value.to_vec()));
    }

    if request.version == Version::Http11 && !seen_host && !limits.permit_missing_host {
        return Err(ParseError::MissingHost);
    }
    let framing = if has_transfer_encoding {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings, so framing built on
        // one is faulty; §6.3: with Content-Length too, it is a smuggling attempt.
        if request.version == Version::Http10 {
            return Err(ParseError::TransferEncodingOnHttp10);
        }
        if content_length.is_some() {
            return Err(ParseError::ContentLengthWithTransferEncoding);
        }
        check_transfer_codings(fields, limits.permit_transfer_codings)?;
        Framing::Chunked
    } else {
        content_length.map_or(Framing::None, Framing::Length)
    };
    let keep_alive = match request.version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    Ok(RequestHead {
        method: owned_text(request.method),
        target: owned_text(request.target),
        version: request.version,
        headers,
        framing,
        keep_alive,
        // RFC 9110 §10.1.1: a server must ignore 100-continue from an HTTP/1.0 client.
        expect_continue: expect_continue && request.version == Version::Http11,
    })
}

/// `Content-Length = 1*DIGIT`, fitting in a u64. Lists (`5, 5`) and signs are refused.
fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    if value.contains(&b',') {
        return Err(ParseError::ContentLengthList(shown(value)));
    }
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidContentLength(shown(value)));
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| ParseError::InvalidContentLength(shown(value)))
}

/// Transfer codings `--permit-transfer-codings` lets a request list before
/// `chunked`. Their bytes reach the app as they came (de-chunked, not
/// decompressed); gunicorn accepts the same list.
const KNOWN_CODINGS: [&[u8]; 7] = [
    b"identity",
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"br",
];

/// RFC 9112 §6.3: the final coding must be chunked, and chunked must appear
/// once, or the body length is unknowable (or ambiguous between servers):
/// 400. §6.1: a coding the server does not understand gets 501; forkhorn
/// decodes none, so by default the only accepted value is `chunked` alone.
fn check_transfer_codings(
    fields: &[httparse::Header<'_>],
    permit_known_codings: bool,
) -> Result<(), ParseError> {
    let values = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|f| f.value);
    let mut last: Option<&[u8]> = None;
    let mut seen_chunked = false;
    // The first coding before chunked that is not accepted; reported only
    // once the list is known to end in chunked (else the 400 wins).
    let mut unsupported: Option<&[u8]> = None;
    for value in values {
        for coding in list_elements(value) {
            if !coding.iter().all(|&b| is_tchar(b)) {
                return Err(ParseError::MalformedTransferEncoding(shown(value)));
            }
            if seen_chunked {
                return Err(if coding.eq_ignore_ascii_case(b"chunked") {
                    ParseError::ChunkedTwice
                } else {
                    ParseError::ChunkedNotFinal(shown(coding))
                });
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                seen_chunked = true;
            } else if unsupported.is_none() && !(permit_known_codings && is_known_coding(coding)) {
                unsupported = Some(coding);
            }
            last = Some(coding);
        }
    }
    match (last, unsupported) {
        (None, _) => Err(ParseError::MalformedTransferEncoding(String::new())),
        (Some(coding), _) if !seen_chunked => Err(ParseError::FinalCodingNotChunked(shown(coding))),
        (Some(_), Some(coding)) => Err(ParseError::UnsupportedTransferCoding(shown(coding))),
        (Some(_), None) => Ok(()),
    }
}

fn is_known_coding(coding: &[u8]) -> bool {
    KNOWN_CODINGS
        .iter()
        .any(|known| coding.eq_ignore_ascii_case(known))
}
