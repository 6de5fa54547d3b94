//! gunicorn's request corpus (`tests/corpus/gunicorn-requests`, MIT, kept in
//! the repository so these tests always run), replayed through `parse_head`
//! and the body decoders the way a worker would: once with the whole input at
//! hand, once with the input arriving a byte at a time. Only cases for
//! gunicorn's default configuration are used, with the two leniencies
//! gunicorn has by default (see `corpus_limits`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::{ChunkedDecoder, Framing, Limits, RequestHead, Version, parse_head};

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/gunicorn-requests");
    assert!(
        dir.join("manifest.json").is_file(),
        "the request corpus is missing from {}",
        dir.display()
    );
    dir
}

/// Undoes the corpus escaping exactly as `run.py`'s `decode()` does: real
/// newlines dropped, then `\r\n`, `\0`, `\n`, `\t` and `\xHH` replaced in that order.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut data: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\n').collect();
    for (from, to) in [
        (&b"\\r\\n"[..], &b"\r\n"[..]),
        (b"\\0", b"\0"),
        (b"\\n", b"\n"),
        (b"\\t", b"\t"),
    ] {
        data = replace_all(&data, from, to);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let hex = data
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (
            data[i],
            data.get(i + 1),
            hex.and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'\\', Some(b'x'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b'\\', ..) => panic!("unexpected backslash escape at byte {i}"),
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// The defaults plus the two leniencies gunicorn's corpus expects: HTTP/1.1
/// requests without Host (valid/004 and many more) and codings before a
/// final chunked (valid/025, valid/029). `tests/conformance.rs` runs the
/// server with the matching flags.
fn corpus_limits() -> Limits {
    Limits {
        permit_missing_host: true,
        permit_transfer_codings: true,
        ..Limits::default()
    }
}

/// A request as the app would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    version: &'static str,
    body: Vec<u8>,
}

/// How the input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// An error with this status (and message, for failure output).
    Rejected(u16, String),
    /// The input ran out inside a head; holds the bytes left over.
    InHead(Vec<u8>),
    /// The input ran out inside a Content-Length body; holds the request so far
    /// (gunicorn hands such a short body to the app).
    InLengthBody(Seen),
    /// The input ran out inside a chunked body.
    InChunkedBody,
    /// A request without keep-alive ended the connection (later bytes are never read).
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Replay {
    requests: Vec<Seen>,
    end: End,
}

enum Body {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// One connection's worth of parsing state, fed bytes as they arrive.
struct Connection {
    limits: Limits,
    buf: Vec<u8>,
    current: Option<(RequestHead, Body, Vec<u8>)>,
    requests: Vec<Seen>,
}

impl Connection {
    fn new() -> Self {
        Connection {
            limits: corpus_limits(),
            buf: Vec::new(),
            current: None,
            requests: Vec::new(),
        }
    }

    /// Adds bytes and makes all the progress they allow. `Some` once the
    /// connection is over (an error, or a request that does not keep it alive).
    fn receive(&mut self, bytes: &[u8]) -> Option<End> {
        self.buf.extend_from_slice(bytes);
        loop {
            match self.current.take() {
                None => match parse_head(&self.buf, &self.limits) {
                    Err(e) => return Some(End::Rejected(e.status(), e.to_string())),
                    Ok(None) => return None,
                    Ok(Some((head, n))) => {
                        self.buf.drain(..n);
                        let body = match head.framing {
                            Framing::None => Body::Length(0),
                            Framing::Length(n) => Body::Length(n),
                            Framing::Chunked => {
                                Body::Chunked(Box::new(ChunkedDecoder::new(&self.limits)))
                            }
                        };
                        self.current = Some((head, body, Vec::new()));
                    }
                },
                Some((head, mut body, mut content)) => {
                    let done = match &mut body {
                        Body::Length(remaining) => {
                            let n = self
                                .buf
                                .len()
                                .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                            content.extend(self.buf.drain(..n));
                            *remaining -= n as u64;
                            *remaining == 0
                        }
                        Body::Chunked(decoder) => {
                            match decoder.decode(&self.buf, &mut content, usize::MAX) {
                                Err(e) => return Some(End::Rejected(e.status(), e.to_string())),
                                Ok(n) => {
                                    self.buf.drain(..n);
                                    decoder.is_done()
                                }
                            }
                        }
                    };
                    if !done {
                        self.current = Some((head, body, content));
                        return None;
                    }
                    let keep_alive = head.keep_alive;
                    self.requests.push(seen(head, content));
                    if !keep_alive {
                        return Some(End::Closed);
                    }
                }
            }
        }
    }

    /// The input is over (the client shut down its side).
    fn eof(mut self, end: Option<End>) -> Replay {
        let end = end.unwrap_or_else(|| match self.current.take() {
            None => End::InHead(std::mem::take(&mut self.buf)),
            Some((head, Body::Length(_), content)) => End::InLengthBody(seen(head, content)),
            Some((_, Body::Chunked(_), _)) => End::InChunkedBody,
        });
        Replay {
            requests: self.requests,
            end,
        }
    }
}

fn seen(head: RequestHead, body: Vec<u8>) -> Seen {
    let version = match head.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    Seen {
        method: head.method,
        target: head.target,
        version,
        body,
    }
}

fn replay_whole(input: &[u8]) -> Replay {
    let mut conn = Connection::new();
    let end = conn.receive(input);
    conn.eof(end)
}

fn replay_bytewise(input: &[u8]) -> Replay {
    let mut conn = Connection::new();
    let end = input
        .iter()
        .find_map(|b| conn.receive(std::slice::from_ref(b)));
    conn.eof(end)
}

/// The requests a case says the app must see.
fn expected_requests(case: &Value) -> Vec<Seen> {
    let requests = case["requests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    requests
        .iter()
        .map(|r| Seen {
            method: r["method"].as_str().unwrap_or_default().to_owned(),
            target: r["target"].as_str().unwrap_or_default().to_owned(),
            version: match r["version"].as_str() {
                Some("HTTP/1.0") => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            body: base64::engine::general_purpose::STANDARD
                .decode(r["body_base64"].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("bad body_base64 in manifest: {e}")),
        })
        .collect()
}

/// Why a replay does not meet the case's expectation, if it does not.
fn verdict(case: &Value, replay: &Replay) -> Option<String> {
    match case["expect"].as_str() {
        // The server must answer nothing but errors: no request may reach the
        // app, and the input must end in an error or in an unfinished head or
        // chunked body (which the worker closes or answers with 400).
        Some("reject") => {
            let refused = matches!(
                replay.end,
                End::Rejected(..) | End::InHead(_) | End::InChunkedBody
            );
            (!replay.requests.is_empty() || !refused)
                .then(|| format!("expected a rejection, got {replay:?}"))
        }
        Some("accept") => {
            let mut got = replay.requests.clone();
            if let End::InLengthBody(short) = &replay.end {
                got.push(short.clone());
            }
            let clean_end = match &replay.end {
                End::Rejected(..) | End::InChunkedBody => false,
                // Leftovers are fine as long as they are not an error: the
                // client's EOF ends an unfinished head without an answer.
                End::InHead(_) | End::InLengthBody(_) | End::Closed => true,
            };
            let want = expected_requests(case);
            (got != want || !clean_end).then(|| format!("expected {want:?}, got {replay:?}"))
        }
        // Either answer is allowed; only the two feeding modes must agree, which is checked anyway.
        Some("either") => None,
        other => Some(format!("unknown expectation {other:?}")),
    }
}

fn default_config_cases(dir: &Path) -> Vec<Value> {
    let manifest = std::fs::read(dir.join("manifest.json")).expect("read manifest.json");
    let manifest: Value = serde_json::from_slice(&manifest).expect("manifest.json is JSON");
    let cases = manifest["cases"]
        .as_array()
        .expect("manifest has a cases list");
    cases
        .iter()
        .filter(|c| c["config"].as_object().is_none_or(|o| o.is_empty()))
        .cloned()
        .collect()
}

#[test]
fn gunicorn_corpus_default_config_cases_pass_whole_and_bytewise() {
    let dir = corpus_dir();
    let cases = default_config_cases(&dir);
    assert!(
        cases.len() > 100,
        "only {} default-config cases found",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let file = case["file"].as_str().expect("case has a file");
        let input = unescape(&std::fs::read(dir.join(file)).expect("read case file"));
        let whole = replay_whole(&input);
        let bytewise = replay_bytewise(&input);
        if whole != bytewise {
            failures.push(format!(
                "{file}: whole input gives {whole:?}\n  but byte by byte gives {bytewise:?}"
            ));
        } else if let Some(why) = verdict(case, &whole) {
            failures.push(format!("{file}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn unescape_follows_run_py() {
    assert_eq!(
        unescape(b"GET / HTTP/1.1\\r\\n\nHost: a\\x41\\t\\0\\n"),
        b"GET / HTTP/1.1\r\nHost: aA\t\0\n"
    );
}
