//! Response heads and body framing on the wire.
//!
//! Framing headers (Content-Length, Transfer-Encoding, Connection) are always
//! ours: the worker knows how it will send the body and whether it will close
//! the connection, so an app's values for them could only contradict it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::parse::{Version, is_tchar};

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 only).
    Chunked,
    /// No length: the body ends when the connection closes (HTTP/1.0 streaming).
    UntilClose,
}

/// Why [`write_head`] refused to write a head. Each one is an app or caller
/// bug, never the client's; the worker answers 500 instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// A header name that is not a token (possible only through unchecked constructors).
    InvalidHeaderName(String),
    /// A header value containing CR, LF or NUL, which would split or cut the head.
    InvalidHeaderValue {
        /// The header's name (the value is not echoed: it is the bad part).
        name: String,
    },
    /// The `date` argument contains CR, LF or NUL.
    InvalidDate,
    /// HTTP/1.0 clients do not know the chunked coding.
    ChunkedForHttp10,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::InvalidHeaderName(name) => {
                write!(f, "response header name \"{name}\" is not a token")
            }
            ResponseError::InvalidHeaderValue { name } => {
                write!(
                    f,
                    "response header {name} contains CR, LF or NUL; remove them from the value"
                )
            }
            ResponseError::InvalidDate => write!(f, "date value contains CR, LF or NUL"),
            ResponseError::ChunkedForHttp10 => {
                write!(
                    f,
                    "chunked framing cannot be sent to an HTTP/1.0 client; use UntilClose"
                )
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// The interim response sent before reading a body the client is holding back
/// (`Expect: 100-continue`).
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Append the status line and headers to `out`.
///
/// The status line always says HTTP/1.1 (RFC 9110 §6.2: a server sends its own
/// highest version); `version` is the request's, which decides whether chunked
/// is allowed and whether keep-alive must be announced. `Server` and `Date` are
/// written unless the app set them. For 1xx, 204 and 304 no framing header is
/// written, and a 1xx carries no Connection header (it is not the final
/// response). After an `UntilClose` body the caller must close the connection
/// whatever `keep_alive` says (it may be true for a HEAD response, which has no
/// body). On error `out` is left as it was.
pub fn write_head(
    out: &mut Vec<u8>,
    version: Version,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    framing: ResponseFraming,
    keep_alive: bool,
    date: &str,
) -> Result<(), ResponseError> {
    let start = out.len();
    let result = write_head_unchecked(out, version, status, headers, framing, keep_alive, date);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_head_unchecked(
    out: &mut Vec<u8>,
    version: Version,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    framing: ResponseFraming,
    keep_alive: bool,
    date: &str,
) -> Result<(), ResponseError> {
    let interim = status.is_informational();
    let bodiless = interim
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    if !bodiless && framing == ResponseFraming::Chunked && version == Version::Http10 {
        return Err(ResponseError::ChunkedForHttp10);
    }
    if has_forbidden_byte(date.as_bytes()) {
        return Err(ResponseError::InvalidDate);
    }

    write_status_line(out, status.as_u16());
    if !headers.contains_key(http::header::SERVER) {
        out.extend_from_slice(b"Server: forkhorn\r\n");
    }
    if !headers.contains_key(http::header::DATE) {
        push_field(out, b"Date", date.as_bytes());
    }
    for (name, value) in headers {
        if is_framing_header(name) {
            continue;
        }
        let name = name.as_str();
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ResponseError::InvalidHeaderName(
                name.escape_default().to_string(),
            ));
        }
        if has_forbidden_byte(value.as_bytes()) {
            return Err(ResponseError::InvalidHeaderValue {
                name: name.to_owned(),
            });
        }
        push_field(out, name.as_bytes(), value.as_bytes());
    }
    if !bodiless {
        match framing {
            ResponseFraming::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            ResponseFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            ResponseFraming::UntilClose => {}
        }
    }
    if !interim {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if version == Version::Http10 {
            // HTTP/1.0 closes by default; staying open must be announced.
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn is_framing_header(name: &http::HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH
        || name == http::header::TRANSFER_ENCODING
        || name == http::header::CONNECTION
}

/// CR and LF would end the field line early (response splitting); NUL cuts
/// it short in C clients.
pub(crate) fn has_forbidden_byte(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// `HTTP/1.1 <code> <reason>\r\n`; an unknown code gets an empty reason, which
/// the grammar allows.
fn write_status_line(out: &mut Vec<u8>, code: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(code).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn reason_phrase(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// One chunk of a chunked body: hex size, CRLF, data, CRLF. Nothing for empty
/// `data`, because a zero-size chunk would end the body.
///
/// ```
/// use forkhorn::http::{write_chunk, write_last_chunk};
///
/// let mut out = Vec::new();
/// write_chunk(&mut out, b"hello, world");
/// write_chunk(&mut out, b""); // skipped: `0\r\n` here would end the body early
/// write_last_chunk(&mut out);
/// assert_eq!(out, b"c\r\nhello, world\r\n0\r\n\r\n");
/// ```
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section: the end of a chunked body.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
/// Times before 1970 are shown as the epoch.
pub fn http_date(t: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let second_of_day = secs % 86_400;
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        // 1970-01-01 was a Thursday.
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// (year, month 1-12, day 1-31) of the proleptic Gregorian calendar for a day
/// count since 1970-01-01: Howard Hinnant's `civil_from_days`, for days >= 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so leap days fall at the end of a year,
    // and work in 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// A complete response for a request we refuse or cannot finish (parse errors,
/// the worker timeout's 504): `Connection: close` and `message` as a text body.
/// A `status` outside 100..=999 is sent as 500.
pub fn error_response(status: u16, message: &str) -> Vec<u8> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let mut out = Vec::with_capacity(160 + message.len());
    write_status_line(&mut out, status);
    out.extend_from_slice(b"Server: forkhorn\r\n");
    push_field(&mut out, b"Date", http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"Connection: close\r\nContent-Type: text/plain\r\nContent-Length: ");
    push_decimal(&mut out, message.len() as u64 + 1);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
    out
}
