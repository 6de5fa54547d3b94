//! The access log: gunicorn's `--access-logformat` atoms, parsed once at
//! start and rendered once per request.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Literal(String),
    /// Remote address.
    Host,
    /// `http` or `https` (`%(scheme)s`; forkhorn's own atom).
    Scheme,
    /// Always `-` (identd, as in gunicorn).
    Ident,
    /// User name from Basic auth, else `-`.
    User,
    /// Request time, `[10/Oct/2000:13:55:36 -0700]`.
    Time,
    /// Request line, `GET /path?q HTTP/1.1`.
    RequestLine,
    Method,
    /// Path without the query.
    Path,
    /// Query string without `?`.
    Query,
    Protocol,
    Status,
    /// Response body bytes.
    Bytes,
    /// Response body bytes, `-` when 0.
    BytesOrDash,
    Referer,
    UserAgent,
    /// Duration in whole seconds.
    Seconds,
    /// Duration in whole milliseconds.
    Millis,
    /// Duration in whole microseconds.
    Micros,
    /// Duration in decimal seconds.
    DecimalSeconds,
    Pid,
    RequestHeader(String),
    ResponseHeader(String),
    Env(String),
}

/// A parsed `--access-logformat`.
///
/// Parsed when the config is checked and again in each worker; rendering
/// only walks the atoms, so a bad atom is a start-up error rather than a
/// broken log line.
///
/// ```
/// use std::time::Duration;
/// use forkhorn::access_log::{Format, Record};
///
/// let format = Format::parse(r#"%(m)s %(U)s q=%(q)s %(s)s %(b)s "%({x-id}i)s""#).unwrap();
/// let headers = vec![("X-Id".to_owned(), b"42".to_vec())];
/// let line = format.render(&Record {
///     peer: None,
///     method: "GET",
///     target: "/a?b=1",
///     version: "HTTP/1.1",
///     scheme: "https",
///     request_headers: &headers,
///     status: 204,
///     response_headers: &http::HeaderMap::new(),
///     body_bytes: 0,
///     duration: Duration::from_millis(3),
///     time: "[28/Nov/2026:13:11:49 +0000]",
/// });
/// // `%(b)s` prints `-` for an empty body; header names match case-insensitively.
/// assert_eq!(line, r#"GET /a q=b=1 204 - "42""#);
///
/// assert!(Format::parse("%(zz)s").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Format {
    atoms: Vec<Atom>,
}

/// What the worker knows about a finished exchange.
///
/// The worker builds one per response (`worker::exchange`) and drops it once
/// the line is rendered; every field borrows from the finished exchange.
pub struct Record<'a> {
    /// Client address (`%(h)s` prints its IP); `None` when the socket has
    /// no IP peer, e.g. a Unix socket. Renders as `-`.
    pub peer: Option<&'a SocketAddr>,
    /// Request method as sent (`%(m)s`).
    pub method: &'a str,
    /// Request target as sent, query included; `%(U)s` and `%(q)s` split
    /// it at the first `?`.
    pub target: &'a str,
    /// Protocol, e.g. `HTTP/1.1` (`%(H)s`).
    pub version: &'a str,
    /// `http` or `https`, as the app saw it (`%(scheme)s`).
    pub scheme: &'a str,
    /// Request headers in arrival order, names as sent; lookups ignore case.
    pub request_headers: &'a [(String, Vec<u8>)],
    /// Response status code (`%(s)s`).
    pub status: u16,
    /// Response headers, for `%({name}o)s`.
    pub response_headers: &'a http::HeaderMap,
    /// Response body bytes written, excluding head and chunk framing; 0 if
    /// the client went away mid-write (`%(B)s`, `%(b)s`).
    pub body_bytes: u64,
    /// Time from request start to the end of the response (`%(T)s`,
    /// `%(M)s`, `%(D)s`, `%(L)s`).
    pub duration: Duration,
    /// Request start as `[%d/%b/%Y:%H:%M:%S %z]`.
    pub time: &'a str,
}

impl Format {
    /// Parses gunicorn-style `%(atom)s` atoms; any other text is copied
    /// as is. Fails, naming the atom, on an unknown atom or an unclosed
    /// `%(`.
    pub fn parse(format: &str) -> Result<Format, String> {
        let mut atoms = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        while let Some(start) = rest.find("%(") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find(")s") else {
                return Err(format!(
                    "--access-logformat: %( at {:?} is not closed with )s",
                    &rest[start..]
                ));
            };
            let name = &after[..end];
            if !literal.is_empty() {
                atoms.push(Atom::Literal(std::mem::take(&mut literal)));
            }
            atoms.push(atom(name)?);
            rest = &after[end + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            atoms.push(Atom::Literal(literal));
        }
        Ok(Format { atoms })
    }

    /// Renders one log line (no trailing newline). Missing values (no
    /// peer, absent header, unset env var) render as `-`.
    pub fn render(&self, r: &Record<'_>) -> String {
        let mut out = String::with_capacity(160);
        for atom in &self.atoms {
            match atom {
                Atom::Literal(s) => out.push_str(s),
                Atom::Host => match r.peer {
                    Some(p) => {
                        let _ = write!(out, "{}", p.ip());
                    }
                    None => out.push('-'),
                },
                Atom::Ident => out.push('-'),
                Atom::User => out.push_str(&basic_auth_user(r).unwrap_or_else(|| "-".into())),
                Atom::Time => out.push_str(r.time),
                Atom::RequestLine => {
                    let _ = write!(out, "{} {} {}", r.method, r.target, r.version);
                }
                Atom::Method => out.push_str(r.method),
                Atom::Path => out.push_str(r.target.split('?').next().unwrap_or("")),
                Atom::Query => out.push_str(r.target.split_once('?').map_or("", |(_, q)| q)),
                Atom::Protocol => out.push_str(r.version),
                Atom::Scheme => out.push_str(r.scheme),
                Atom::Status => {
                    let _ = write!(out, "{}", r.status);
                }
                Atom::Bytes => {
                    let _ = write!(out, "{}", r.body_bytes);
                }
                Atom::BytesOrDash if r.body_bytes == 0 => out.push('-'),
                Atom::BytesOrDash => {
                    let _ = write!(out, "{}", r.body_bytes);
                }
                Atom::Referer => out.push_str(&request_header(r, "referer")),
                Atom::UserAgent => out.push_str(&request_header(r, "user-agent")),
                Atom::Seconds => {
                    let _ = write!(out, "{}", r.duration.as_secs());
                }
                Atom::Millis => {
                    let _ = write!(out, "{}", r.duration.as_millis());
                }
                Atom::Micros => {
                    let _ = write!(out, "{}", r.duration.as_micros());
                }
                Atom::DecimalSeconds => {
                    let _ = write!(out, "{:.6}", r.duration.as_secs_f64());
                }
                Atom::Pid => {
                    let _ = write!(out, "<{}>", std::process::id());
                }
                Atom::RequestHeader(name) => out.push_str(&request_header(r, name)),
                Atom::ResponseHeader(name) => match r.response_headers.get(name.as_str()) {
                    Some(v) => out.push_str(&String::from_utf8_lossy(v.as_bytes())),
                    None => out.push('-'),
                },
                Atom::Env(name) => match std::env::var(name) {
                    Ok(v) => out.push_str(&v),
                    Err(_) => out.push('-'),
                },
            }
        }
        out
    }
}

fn atom(name: &str) -> Result<Atom, String> {
    let braced = |suffix: char| {
        name.strip_prefix('{')
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.strip_suffix('}'))
            .map(|n| n.to_ascii_lowercase())
    };
    Ok(match name {
        "h" => Atom::Host,
        "l" => Atom::Ident,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "scheme" => Atom::Scheme,
        "s" => Atom::Status,
        "B" => Atom::Bytes,
        "b" => Atom::BytesOrDash,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => {
            if let Some(h) = braced('i') {
                Atom::RequestHeader(h)
            } else if let Some(h) = braced('o') {
                Atom::ResponseHeader(h)
            } else if let Some(v) = name.strip_prefix('{').and_then(|n| n.strip_suffix("}e")) {
                Atom::Env(v.to_owned())
            } else {
                return Err(format!(
                    "--access-logformat: unknown atom %({name})s; use h l u t r m U q H s B b f a T M D L p, {{header}}i, {{header}}o or {{var}}e"
                ));
            }
        }
    })
}

fn request_header(r: &Record<'_>, name: &str) -> String {
    r.request_headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or_else(
            || "-".to_owned(),
            |(_, v)| String::from_utf8_lossy(v).into_owned(),
        )
}

fn basic_auth_user(r: &Record<'_>) -> Option<String> {
    use base64::Engine;
    let auth = r
        .request_headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))?;
    let value = std::str::from_utf8(&auth.1).ok()?;
    let (scheme, creds) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(u, _)| u.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gunicorns_default_format() {
        let f = Format::parse(crate::config::DEFAULT_ACCESS_LOG_FORMAT).expect("format");
        let peer: SocketAddr = "10.0.0.7:4000".parse().expect("addr");
        let headers = vec![
            ("User-Agent".to_owned(), b"curl/8".to_vec()),
            ("Referer".to_owned(), b"http://x/".to_vec()),
        ];
        let out = http::HeaderMap::new();
        let line = f.render(&Record {
            peer: Some(&peer),
            method: "GET",
            target: "/a?b=1",
            version: "HTTP/1.1",
            scheme: "http",
            request_headers: &headers,
            status: 200,
            response_headers: &out,
            body_bytes: 14,
            duration: Duration::from_micros(1500),
            time: "[28/Nov/2026:13:11:49 +0000]",
        });
        assert_eq!(
            line,
            r#"10.0.0.7 - - [28/Nov/2026:13:11:49 +0000] "GET /a?b=1 HTTP/1.1" 200 14 "http://x/" "curl/8""#
        );
    }

    #[test]
    fn the_scheme_atom_prints_the_scheme() {
        let f = Format::parse("%(scheme)s://%({host}i)s%(U)s").expect("format");
        let headers = vec![("Host".to_owned(), b"example.com".to_vec())];
        let line = f.render(&Record {
            peer: None,
            method: "GET",
            target: "/a?b=1",
            version: "HTTP/1.1",
            scheme: "https",
            request_headers: &headers,
            status: 200,
            response_headers: &http::HeaderMap::new(),
            body_bytes: 0,
            duration: Duration::ZERO,
            time: "",
        });
        assert_eq!(line, "https://example.com/a");
    }

    #[test]
    fn unknown_atoms_are_refused() {
        let err = Format::parse("%(zz)s").expect_err("unknown");
        assert!(err.contains("unknown atom %(zz)s"), "{err}");
    }
}
