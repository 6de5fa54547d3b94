//! A request as a WSGI environ (PEP 3333), in two steps: `Environ::of`
//! works out every value in plain Rust (tested without Python), and
//! `Environ::into_dict` makes the Python dict.

use std::borrow::Cow;
use std::net::SocketAddr;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::app::{ClientCertSubject, LocalAddr, PeerAddr, RawHeaders, RawTarget, Scheme};

/// The CGI-style string values of one request's environ, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Environ {
    /// `(key, value)`; values are latin-1 text, one char per byte, as PEP
    /// 3333 wants for "native strings".
    pub vars: Vec<(Cow<'static, str>, String)>,
}

/// Header fields a WSGI app must not see as `HTTP_*` under another name:
/// they have their own CGI keys.
const OWN_KEYS: &[(&str, &str)] = &[
    ("content-type", "CONTENT_TYPE"),
    ("content-length", "CONTENT_LENGTH"),
];

impl Environ {
    /// The environ of a request. `script_name` is the mount point
    /// (`SCRIPT_NAME` in forkhorn's environment, as gunicorn reads it).
    pub fn of<B>(req: &http::Request<B>, script_name: &str) -> Environ {
        let raw_target = req
            .extensions()
            .get::<RawTarget>()
            .map_or_else(|| req.uri().to_string(), |t| t.0.clone());
        let (path, query) = split_target(&raw_target);
        let path = latin1(&percent_decode(path.as_bytes()));
        let (script_name, path_info) = mount(script_name, path);
        let mut vars = Vec::with_capacity(16 + req.headers().len());
        let mut push = |k: &'static str, v: String| vars.push((Cow::Borrowed(k), v));
        push("REQUEST_METHOD", req.method().as_str().to_owned());
        push("SCRIPT_NAME", script_name);
        push("PATH_INFO", path_info);
        push("QUERY_STRING", latin1(query.as_bytes()));
        push("RAW_URI", latin1(raw_target.as_bytes()));
        push(
            "SERVER_PROTOCOL",
            match req.version() {
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            }
            .to_owned(),
        );
        let host = req
            .headers()
            .get(http::header::HOST)
            .map(|h| latin1(h.as_bytes()));
        let local = req.extensions().get::<LocalAddr>().and_then(|l| l.0);
        let (name, port) = server_name_and_port(local, host.as_deref());
        push("SERVER_NAME", name);
        push("SERVER_PORT", port);
        // The constants say "http"; only a secure request changes it.
        if req.extensions().get::<Scheme>() == Some(&Scheme::Https) {
            push("wsgi.url_scheme", "https".to_owned());
            push("HTTPS", "on".to_owned());
        }
        if let Some(subject) = req.extensions().get::<ClientCertSubject>() {
            // mod_ssl's name, which WSGI middleware already reads.
            push("SSL_CLIENT_S_DN", subject.0.clone());
        }
        let peer = req.extensions().get::<PeerAddr>().and_then(|p| p.0);
        let (addr, port) = remote(peer);
        push("REMOTE_ADDR", addr);
        push("REMOTE_PORT", port);
        let raw_headers = req.extensions().get::<RawHeaders>();
        let headers: Vec<(&str, &[u8])> = match raw_headers {
            Some(raw) => raw
                .0
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
            None => req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
                .collect(),
        };
        for (key, value) in header_vars(&headers) {
            vars.push((Cow::Owned(key), value));
        }
        Environ { vars }
    }

    /// These values added to `dict` (a copy of the `wsgi.*` constants).
    pub fn fill<'py>(self, dict: Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let py = dict.py();
        for (k, v) in &self.vars {
            dict.set_item(PyString::intern(py, k), v)?;
        }
        Ok(dict)
    }
}

/// `HTTP_*` keys for the header fields, repeated fields joined with `", "`
/// in the order sent. A field whose name has `_` is dropped (as gunicorn
/// does): `X_Forwarded_For` would otherwise pose as `X-Forwarded-For`.
fn header_vars(headers: &[(&str, &[u8])]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for &(name, value) in headers {
        if name.contains('_') {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let key = match OWN_KEYS.iter().find(|(h, _)| *h == lower) {
            Some((_, key)) => (*key).to_owned(),
            None => {
                let mut key = String::with_capacity(5 + name.len());
                key.push_str("HTTP_");
                key.extend(name.chars().map(|c| {
                    if c == '-' {
                        '_'
                    } else {
                        c.to_ascii_uppercase()
                    }
                }));
                key
            }
        };
        let value = latin1(value);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => out.push((key, value)),
        }
    }
    out
}

/// Path and query of a request target; an absolute-form target
/// (`http://host/path`) gives its path.
fn split_target(target: &str) -> (&str, &str) {
    let (before, query) = target.split_once('?').unwrap_or((target, ""));
    let path = match before.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => before,
    };
    (path, query)
}

/// `%XX` decoded; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Bytes as latin-1 text: each byte one char, as PEP 3333's native strings.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// `SCRIPT_NAME` and `PATH_INFO`: the mount point is cut from the path
/// only at a segment boundary (`/app` from `/app/x` or `/app`, never from
/// `/apple`); a path outside the mount keeps it whole, with no SCRIPT_NAME.
fn mount(script_name: &str, path: String) -> (String, String) {
    let script_name = script_name.trim_end_matches('/');
    match path.strip_prefix(script_name) {
        Some(rest) if !script_name.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
            (script_name.to_owned(), rest.to_owned())
        }
        _ => (String::new(), path),
    }
}

/// `SERVER_NAME` and `SERVER_PORT`: the address the client connected to,
/// as gunicorn gives them; on a unix socket, the Host field's name and port
/// (80 when it names none), or `localhost`.
fn server_name_and_port(local: Option<SocketAddr>, host: Option<&str>) -> (String, String) {
    if let Some(local) = local {
        return (local.ip().to_string(), local.port().to_string());
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return ("localhost".to_owned(), "80".to_owned());
    };
    // [v6]:port, [v6], name:port, name
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], &host[i + 1..]),
        _ => (host, "80"),
    };
    (name.to_owned(), port.to_owned())
}

/// `REMOTE_ADDR` and `REMOTE_PORT` (empty on a unix socket, as gunicorn).
fn remote(peer: Option<SocketAddr>) -> (String, String) {
    match peer {
        Some(a) => (a.ip().to_string(), a.port().to_string()),
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environ(target: &str, headers: &[(&str, &str)], script_name: &str) -> Environ {
        let mut req = http::Request::builder().method("POST").uri("/");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let mut req = req.body(()).expect("request");
        req.extensions_mut().insert(RawTarget(target.to_owned()));
        req.extensions_mut()
            .insert(PeerAddr(Some("10.0.0.7:51234".parse().expect("addr"))));
        req.extensions_mut()
            .insert(LocalAddr(Some("10.0.0.1:8080".parse().expect("addr"))));
        Environ::of(&req, script_name)
    }

    fn get<'a>(e: &'a Environ, key: &str) -> Option<&'a str> {
        e.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_cgi_keys_come_from_the_request_line_and_host() {
        let e = environ("/a%20b/c?x=1&y=%20", &[("host", "example.org")], "");
        assert_eq!(get(&e, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&e, "PATH_INFO"), Some("/a b/c"));
        assert_eq!(get(&e, "QUERY_STRING"), Some("x=1&y=%20"));
        assert_eq!(get(&e, "RAW_URI"), Some("/a%20b/c?x=1&y=%20"));
        assert_eq!(get(&e, "SCRIPT_NAME"), Some(""));
        assert_eq!(get(&e, "HTTP_HOST"), Some("example.org"));
        assert_eq!(get(&e, "SERVER_NAME"), Some("10.0.0.1"));
        assert_eq!(get(&e, "SERVER_PORT"), Some("8080"));
        assert_eq!(get(&e, "REMOTE_ADDR"), Some("10.0.0.7"));
        assert_eq!(get(&e, "REMOTE_PORT"), Some("51234"));
        assert_eq!(get(&e, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
    }

    #[test]
    fn path_info_is_latin1_one_char_per_byte() {
        // "é" in UTF-8 is C3 A9: two latin-1 chars, as PEP 3333 says.
        let e = environ("/caf%C3%A9", &[("host", "h")], "");
        assert_eq!(get(&e, "PATH_INFO"), Some("/caf\u{c3}\u{a9}"));
    }

    #[test]
    fn script_name_is_cut_from_path_info_at_a_segment_boundary() {
        let e = environ("/app/users/1", &[("host", "h")], "/app");
        assert_eq!(get(&e, "SCRIPT_NAME"), Some("/app"));
        assert_eq!(get(&e, "PATH_INFO"), Some("/users/1"));
        assert_eq!(mount("/app/", "/app".into()), ("/app".into(), "".into()));
        assert_eq!(mount("/app", "/apple".into()), ("".into(), "/apple".into()));
        assert_eq!(mount("", "/x".into()), ("".into(), "/x".into()));
    }

    #[test]
    fn repeated_headers_join_and_underscored_names_are_dropped() {
        let e = environ(
            "/",
            &[
                ("host", "h"),
                ("x-tag", "a"),
                ("x-tag", "b"),
                ("x_forwarded_for", "spoofed"),
                ("content-type", "text/plain"),
                ("content-length", "3"),
            ],
            "",
        );
        assert_eq!(get(&e, "HTTP_X_TAG"), Some("a, b"));
        assert_eq!(get(&e, "HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(get(&e, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&e, "CONTENT_LENGTH"), Some("3"));
        assert_eq!(get(&e, "HTTP_CONTENT_TYPE"), None);
    }

    #[test]
    fn absolute_form_targets_and_hosts_without_ports() {
        assert_eq!(split_target("http://h:1/p/q?z"), ("/p/q", "z"));
        assert_eq!(split_target("http://h"), ("/", ""));
        // On a unix socket only the Host field can say.
        let on_unix = |host| server_name_and_port(None, host);
        assert_eq!(on_unix(Some("[::1]:81")), ("[::1]".into(), "81".into()));
        assert_eq!(on_unix(Some("[::1]")), ("[::1]".into(), "80".into()));
        assert_eq!(on_unix(None), ("localhost".into(), "80".into()));
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4".to_vec());
    }
}
