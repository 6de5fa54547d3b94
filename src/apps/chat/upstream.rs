//! An OpenAI-compatible upstream (llama.cpp's server, vLLM, Ollama):
//! `POST BASE/chat/completions` with `"stream": true`, its Server-Sent
//! Events relayed as tokens, over a small HTTP/1.1 client on a std
//! `TcpStream`: `httparse` reads the response head and the server's own
//! `http::ChunkedDecoder` a chunked body, so only the request writing, the
//! timeouts and the event splitting are this file's.
//!
//! Every wait is bounded: connects and writes by a few seconds, reads by
//! the slice the streaming loop asks for (at most a second), so a thread
//! relaying a reply notices within a second that its client left.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::model::{Reply, Step};
use crate::http::{ChunkedDecoder, Limits};

/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long writing a request may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long looking up a model name (`GET BASE/models`) may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the body of an upstream error answer may take to arrive.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest socket read timeout (zero would mean "block forever").
const MIN_WAIT: Duration = Duration::from_millis(1);
/// Largest response head accepted from the upstream.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest SSE line, or whole non-streamed answer, accepted.
const MAX_LINE_BYTES: usize = 1 << 20;
/// How much of an error answer is read to explain it.
const MAX_ERROR_BODY_BYTES: usize = 4096;
/// Largest `GET BASE/models` answer read.
const MAX_MODELS_BODY_BYTES: usize = 256 * 1024;
/// The model name sent when none is configured and none could be found.
const FALLBACK_MODEL: &str = "default";

/// Where an `http://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// The path before `/chat/completions`, without a trailing slash.
    pub base_path: String,
}

/// Parse `http://HOST[:PORT][/PATH]`; the error says what is wrong (the
/// caller names the app spec).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let scheme_len = "http://".len();
    let is_http = url.len() >= scheme_len && url[..scheme_len].eq_ignore_ascii_case("http://");
    if !is_http {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(
                "the upstream must be an http:// URL (https is not supported; \
                        point it at the model server's plain HTTP port)"
                    .to_owned(),
            );
        }
        return Err("the upstream must be an http:// URL".to_owned());
    }
    let rest = &url[scheme_len..];
    if rest.contains(['?', '#']) {
        return Err("the upstream URL must not have a query or fragment".to_owned());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "the upstream URL must not hold credentials; set FORKHORN_CHAT_API_KEY".to_owned(),
        );
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!(
                "the upstream host {authority:?} lacks its closing ]"
            ));
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("the upstream host {authority:?} is not HOST:PORT")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the upstream URL has no host".to_owned());
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("the upstream port {p:?} is not a port number")),
        },
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        base_path: path.trim_end_matches('/').to_owned(),
    })
}

/// An upstream model server, shared by a worker's chats.
pub struct Upstream {
    /// The URL as configured, for messages.
    pub url: String,
    target: Target,
    /// `FORKHORN_CHAT_MODEL`, if set.
    model: Option<String>,
    /// The first model `GET BASE/models` listed, once seen.
    found_model: Mutex<Option<String>>,
    /// `FORKHORN_CHAT_API_KEY`, sent as a bearer token if set.
    api_key: Option<String>,
}

impl Upstream {
    pub fn new(
        url: &str,
        model: Option<String>,
        api_key: Option<String>,
    ) -> Result<Upstream, String> {
        Ok(Upstream {
            url: url.to_owned(),
            target: parse_url(url)?,
            model,
            found_model: Mutex::new(None),
            api_key,
        })
    }

    /// Whether the upstream answers `GET BASE/models` with a 2xx within
    /// `timeout`; the error says what went wrong.
    pub fn probe(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let path = format!("{}/models", self.target.base_path);
        let (status, body) = self
            .fetch("GET", &path, deadline, MAX_MODELS_BODY_BYTES)
            .map_err(|e| format!("GET {path} within {:.1} s: {e}", timeout.as_secs_f64()))?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "GET {path} answered {status}: {}",
                explain_error_body(&body)
            ));
        }
        self.remember_model(&body);
        Ok(())
    }

    /// The model name to ask for: configured, else the first one the
    /// upstream lists, else a placeholder (llama.cpp ignores the name).
    fn model(&self) -> String {
        if let Some(m) = &self.model {
            return m.clone();
        }
        if let Some(m) = self.found_model.lock().ok().and_then(|m| m.clone()) {
            return m;
        }
        let path = format!("{}/models", self.target.base_path);
        let deadline = Instant::now() + DISCOVERY_TIMEOUT;
        match self.fetch("GET", &path, deadline, MAX_MODELS_BODY_BYTES) {
            Ok((200..=299, body)) => self.remember_model(&body),
            _ => None,
        }
        .unwrap_or_else(|| FALLBACK_MODEL.to_owned())
    }

    /// Keep the first model id of a `/models` answer; returns it.
    fn remember_model(&self, body: &[u8]) -> Option<String> {
        let list: serde_json::Value = serde_json::from_slice(body).ok()?;
        let first = list["data"][0]["id"]
            .as_str()
            .or_else(|| list["models"][0]["name"].as_str())?;
        if let Ok(mut found) = self.found_model.lock() {
            *found = Some(first.to_owned());
        }
        Some(first.to_owned())
    }

    /// The bytes of a request to the upstream.
    fn request(&self, method: &str, path: &str, accept: &str, body: &[u8]) -> Vec<u8> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: forkhorn-chat\r\nAccept: {accept}\r\n\
             Connection: close\r\n",
            self.target.authority
        );
        if let Some(key) = &self.api_key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// One whole exchange, all of it before `deadline`: the status and up
    /// to `max_body` bytes of the body.
    fn fetch(
        &self,
        method: &str,
        path: &str,
        deadline: Instant,
        max_body: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut conn = Conn::open(&self.target, deadline)?;
        conn.send(&self.request(method, path, "application/json", b""))?;
        let head = conn.read_head(deadline)?;
        let mut decoder = Decoder::new(head.framing);
        let body = conn.read_body(&mut decoder, deadline, max_body)?;
        Ok((head.status, body))
    }
}

// ---------------------------------------------------------------- the connection

/// A connection to the upstream and the bytes read but not yet used.
struct Conn {
    stream: TcpStream,
    raw: Vec<u8>,
    is_eof: bool,
}

/// A response head: the status and how the body is framed.
struct Head {
    status: u16,
    framing: Framing,
    is_event_stream: bool,
}

impl Conn {
    /// Connect to `target` (trying each address), before `deadline`.
    fn open(target: &Target, deadline: Instant) -> Result<Conn, String> {
        let addrs = resolve(&target.host, target.port, deadline)?;
        let mut last_error = format!("{} has no address", target.host);
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left.min(CONNECT_TIMEOUT)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream
                        .set_write_timeout(Some(WRITE_TIMEOUT))
                        .map_err(|e| format!("cannot set a write timeout: {e}"))?;
                    return Ok(Conn {
                        stream,
                        raw: Vec::new(),
                        is_eof: false,
                    });
                }
                Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last_error)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("cannot send the request to the upstream: {e}"))
    }

    /// Read what arrives within `wait`: true if bytes (or the end) came,
    /// false if nothing did.
    fn read_some(&mut self, wait: Duration) -> Result<bool, String> {
        if self.is_eof {
            return Ok(true);
        }
        self.stream
            .set_read_timeout(Some(wait.max(MIN_WAIT)))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.is_eof = true;
                Ok(true)
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(format!("reading from the upstream failed: {e}")),
        }
    }

    /// Take a complete response head from the bytes read, if there is one
    /// (skipping interim 1xx answers).
    fn take_head(&mut self) -> Result<Option<Head>, String> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            let len = match response.parse(&self.raw) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if self.raw.len() > MAX_HEAD_BYTES => {
                    return Err("the upstream's response head is over 64 KiB".to_owned());
                }
                Ok(httparse::Status::Partial) if self.is_eof => {
                    return Err("the upstream closed the connection without answering".to_owned());
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(format!("the upstream's answer is not HTTP: {e}")),
            };
            let status = response.code.unwrap_or(0);
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                    .collect::<Vec<_>>()
            };
            let is_chunked = header("transfer-encoding")
                .iter()
                .any(|v| v.contains("chunked"));
            let length = header("content-length")
                .first()
                .and_then(|v| v.trim().parse::<u64>().ok());
            let is_event_stream = header("content-type")
                .iter()
                .any(|v| v.contains("event-stream"));
            self.raw.drain(..len);
            if (100..200).contains(&status) {
                continue;
            }
            let framing = match (is_chunked, length) {
                _ if status == 204 || status == 304 => Framing::Length(0),
                (true, _) => Framing::Chunked,
                (false, Some(n)) => Framing::Length(n),
                (false, None) => Framing::UntilClose,
            };
            return Ok(Some(Head {
                status,
                framing,
                is_event_stream,
            }));
        }
    }

    /// Wait for the response head until `deadline`.
    fn read_head(&mut self, deadline: Instant) -> Result<Head, String> {
        loop {
            if let Some(head) = self.take_head()? {
                return Ok(head);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the upstream did not answer in time".to_owned());
            }
            self.read_some(left)?;
        }
    }

    /// Read the body until its end, `deadline`, or `max` bytes, whichever
    /// comes first; only an early end of the connection is an error.
    fn read_body(
        &mut self,
        decoder: &mut Decoder,
        deadline: Instant,
        max: usize,
    ) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            decoder.decode(&mut self.raw, &mut body)?;
            if decoder.is_done() || body.len() >= max {
                body.truncate(max);
                return Ok(body);
            }
            if self.is_eof {
                decoder.check_end()?;
                return Ok(body);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the upstream's answer did not finish in time".to_owned());
            }
            self.read_some(left)?;
        }
    }
}

/// The addresses of `host`, looked up before `deadline` (a name lookup runs
/// on a helper thread, so a slow resolver cannot hold the caller longer).
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("chat-resolve".to_owned())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>);
            let _ = tx.send(found);
        })
        .map_err(|e| format!("cannot start a thread to look up {host}: {e}"))?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("cannot look up {host}: {e}")),
        Err(_) => Err(format!("looking up {host} took too long")),
    }
}

// ---------------------------------------------------------------- body framing

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    UntilClose,
}

/// Turns the raw bytes of a body into its content, as they arrive. A
/// chunked body goes through the server's own `http::ChunkedDecoder`, so
/// the chunked grammar is written (and tested) in one place.
enum Decoder {
    Chunked(ChunkedDecoder),
    /// Bytes still to come.
    Length(u64),
    UntilClose,
}

impl Decoder {
    fn new(framing: Framing) -> Decoder {
        match framing {
            // The request limits bound what the upstream may send in chunk
            // extensions and trailers, as they bound a client.
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::new(&Limits::default())),
            Framing::Length(n) => Decoder::Length(n),
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Decoder::Chunked(chunked) => chunked.is_done(),
            Decoder::Length(left) => *left == 0,
            Decoder::UntilClose => false,
        }
    }

    /// Move what can be decoded from the front of `raw` to `out`.
    fn decode(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Decoder::UntilClose => out.append(raw),
            Decoder::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(raw.len());
                out.extend(raw.drain(..take));
                *left -= take as u64;
            }
            Decoder::Chunked(chunked) => {
                let used = chunked
                    .decode(raw, out, usize::MAX)
                    .map_err(|e| format!("the upstream sent a bad chunked body: {e}"))?;
                raw.drain(..used);
            }
        }
        Ok(())
    }

    /// The connection ended: fine only where the body may end.
    fn check_end(&self) -> Result<(), String> {
        match self {
            Decoder::UntilClose => Ok(()),
            _ if self.is_done() => Ok(()),
            _ => Err("the upstream closed the connection in the middle of its answer".to_owned()),
        }
    }
}

// ---------------------------------------------------------------- server-sent events

/// Splits a stream of Server-Sent Events into the data of each event.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The `data:` lines of the event so far, joined by newlines.
    data: Option<String>,
}

impl SseParser {
    /// Feed more bytes; the data of each event they complete goes to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), String> {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_LINE_BYTES {
                    return Err("the upstream sent an event line over 1 MiB".to_owned());
                }
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    out.push(data);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            if field == "data" {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        Ok(())
    }
}

/// What one event of an OpenAI-style stream means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Token(String),
    /// A choice finished (`finish_reason`), more may follow until `[DONE]`.
    Finished,
    /// `[DONE]`: the stream is over.
    Done,
    Failed(String),
    /// Nothing for the person (a role-only delta, usage figures).
    Nothing,
}

/// Read the data of one event: `[DONE]`, an error object, or a chunk whose
/// `choices[0].delta.content` is the next token.
pub fn interpret(data: &str) -> Delta {
    let data = data.trim();
    if data == "[DONE]" {
        return Delta::Done;
    }
    let chunk: serde_json::Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(_) => {
            let start: String = data.chars().take(100).collect();
            return Delta::Failed(format!(
                "the upstream sent an event that is not JSON: {start:?}"
            ));
        }
    };
    if !chunk["error"].is_null() {
        return Delta::Failed(format!(
            "the upstream reported an error: {}",
            explain_error(&chunk)
        ));
    }
    let choice = &chunk["choices"][0];
    let content = choice["delta"]["content"]
        .as_str()
        .or_else(|| choice["text"].as_str());
    match content {
        Some(text) if !text.is_empty() => Delta::Token(text.to_owned()),
        _ if choice["finish_reason"].is_string() => Delta::Finished,
        _ => Delta::Nothing,
    }
}

/// The message of an OpenAI-style error object (`{"error": {"message": ..}}`
/// or `{"error": ".."}`), else the whole value.
fn explain_error(v: &serde_json::Value) -> String {
    let e = &v["error"];
    e["message"]
        .as_str()
        .or_else(|| e.as_str())
        .or_else(|| v["message"].as_str())
        .or_else(|| v["detail"].as_str())
        .map_or_else(|| v.to_string(), str::to_owned)
}

/// A short explanation from the body of an error answer.
fn explain_error_body(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => explain_error(&v),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('\u{2026}');
    }
    if short.is_empty() {
        "(no details)".to_owned()
    } else {
        short
    }
}

// ---------------------------------------------------------------- one reply

/// A reply relayed from the upstream, one token per content delta.
pub struct UpstreamReply {
    upstream: std::sync::Arc<Upstream>,
    message: String,
    phase: Phase,
    events: SseParser,
    /// Steps decoded but not yet handed out.
    queue: VecDeque<Step>,
    /// The answer is plain JSON (the server ignored `"stream": true`).
    whole_answer: Option<Vec<u8>>,
    /// A token or a finish reason was seen, so an end without `[DONE]` is
    /// still a complete reply.
    has_content: bool,
}

enum Phase {
    Start,
    Head(Conn),
    Body(Conn, Decoder),
    Ended,
}

impl UpstreamReply {
    pub fn new(upstream: std::sync::Arc<Upstream>, message: String) -> UpstreamReply {
        UpstreamReply {
            upstream,
            message,
            phase: Phase::Start,
            events: SseParser::default(),
            queue: VecDeque::new(),
            whole_answer: None,
            has_content: false,
        }
    }

    /// Connect and send the request (bounded by the connect and write timeouts).
    fn start(&mut self) -> Result<Conn, String> {
        let up = &self.upstream;
        let body = serde_json::json!({
            "model": up.model(),
            "messages": [{"role": "user", "content": self.message}],
            "stream": true,
        })
        .to_string();
        let path = format!("{}/chat/completions", up.target.base_path);
        let mut conn = Conn::open(&up.target, Instant::now() + CONNECT_TIMEOUT)?;
        conn.send(&up.request("POST", &path, "text/event-stream", body.as_bytes()))?;
        Ok(conn)
    }

    /// Advance by at most one read of up to `wait`.
    fn advance(&mut self, wait: Duration) -> Result<(), String> {
        match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Start => self.phase = Phase::Head(self.start()?),
            Phase::Head(mut conn) => match conn.take_head()? {
                Some(head) if (200..300).contains(&head.status) => {
                    if !head.is_event_stream {
                        self.whole_answer = Some(Vec::new());
                    }
                    self.phase = Phase::Body(conn, Decoder::new(head.framing));
                }
                Some(head) => {
                    let mut decoder = Decoder::new(head.framing);
                    let deadline = Instant::now() + ERROR_BODY_TIMEOUT;
                    let body = conn
                        .read_body(&mut decoder, deadline, MAX_ERROR_BODY_BYTES)
                        .unwrap_or_default();
                    return Err(format!(
                        "the upstream answered {}: {}",
                        head.status,
                        explain_error_body(&body)
                    ));
                }
                None => {
                    conn.read_some(wait)?;
                    self.phase = Phase::Head(conn);
                }
            },
            Phase::Body(mut conn, mut decoder) => {
                let mut content = Vec::new();
                decoder.decode(&mut conn.raw, &mut content)?;
                self.take_content(&content)?;
                if decoder.is_done() || conn.is_eof {
                    decoder.check_end()?;
                    self.end_of_answer()?;
                } else if self.queue.is_empty() {
                    conn.read_some(wait)?;
                    self.phase = Phase::Body(conn, decoder);
                } else {
                    self.phase = Phase::Body(conn, decoder);
                }
            }
            Phase::Ended => {}
        }
        Ok(())
    }

    /// Turn decoded body bytes into steps.
    fn take_content(&mut self, content: &[u8]) -> Result<(), String> {
        if let Some(whole) = &mut self.whole_answer {
            whole.extend_from_slice(content);
            if whole.len() > MAX_LINE_BYTES {
                return Err("the upstream's answer is over 1 MiB".to_owned());
            }
            return Ok(());
        }
        let mut events = Vec::new();
        self.events.feed(content, &mut events)?;
        for data in events {
            match interpret(&data) {
                Delta::Token(t) => {
                    self.has_content = true;
                    self.queue.push_back(Step::Token(t));
                }
                Delta::Finished => self.has_content = true,
                Delta::Done => {
                    self.queue.push_back(Step::Done);
                    break;
                }
                Delta::Failed(e) => return Err(e),
                Delta::Nothing => {}
            }
        }
        Ok(())
    }

    /// The body ended: a plain JSON answer gives its whole content as one
    /// token; an event stream without `[DONE]` is complete if it said anything.
    fn end_of_answer(&mut self) -> Result<(), String> {
        if let Some(whole) = self.whole_answer.take() {
            let answer: serde_json::Value = serde_json::from_slice(&whole).map_err(|_| {
                format!(
                    "the upstream's answer is not JSON: {}",
                    explain_error_body(&whole)
                )
            })?;
            let content = answer["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default();
            if !content.is_empty() {
                self.queue.push_back(Step::Token(content.to_owned()));
            }
            self.queue.push_back(Step::Done);
            return Ok(());
        }
        if !self.has_content && !self.queue.contains(&Step::Done) {
            return Err("the upstream ended its stream without a reply".to_owned());
        }
        self.queue.push_back(Step::Done);
        Ok(())
    }
}

impl Reply for UpstreamReply {
    fn next(&mut self, wait: Duration) -> Step {
        if self.queue.is_empty() {
            if matches!(self.phase, Phase::Ended) {
                return Step::Done;
            }
            if let Err(e) = self.advance(wait) {
                self.phase = Phase::Ended;
                self.queue.clear();
                return Step::Failed(e);
            }
        }
        match self.queue.pop_front() {
            Some(Step::Done) => {
                self.phase = Phase::Ended;
                self.queue.clear();
                Step::Done
            }
            Some(step) => step,
            None => Step::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn urls_name_host_port_and_base_path() {
        let t = parse_url("http://127.0.0.1:8080/v1/").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("127.0.0.1", 8080, "/v1")
        );
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = parse_url("HTTP://localhost").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("localhost", 80, "")
        );
        let t = parse_url("http://[::1]:11434/v1").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 11434));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("ftp://x", "must be an http:// URL"),
            ("https://x", "https is not supported"),
            ("", "must be an http:// URL"),
            ("http://", "has no host"),
            ("http://:80/v1", "has no host"),
            ("http://x:port", "is not a port number"),
            ("http://x:0", "is not a port number"),
            ("http://x/v1?key=1", "query or fragment"),
            ("http://user:pw@x", "FORKHORN_CHAT_API_KEY"),
            ("http://[::1/v1", "closing ]"),
        ];
        for (url, needle) in cases {
            let err = parse_url(url).expect_err(url);
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_are_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 1..wire.len() {
            let mut decoder = Decoder::new(Framing::Chunked);
            let (mut raw, mut out) = (wire[..split].to_vec(), Vec::new());
            decoder.decode(&mut raw, &mut out).expect("first part");
            raw.extend_from_slice(&wire[split..]);
            decoder.decode(&mut raw, &mut out).expect("second part");
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(decoder.is_done(), "split at {split}");
        }
    }

    #[test]
    fn a_bad_chunked_body_is_an_error_that_says_why() {
        let mut decoder = Decoder::new(Framing::Chunked);
        let (mut raw, mut out) = (b"5\r\nhello\r\nzz\r\n".to_vec(), Vec::new());
        let err = decoder
            .decode(&mut raw, &mut out)
            .expect_err("zz is no size");
        assert_eq!(
            err,
            "the upstream sent a bad chunked body: chunk size starts with byte 0x7a; expected hex digits"
        );
        assert_eq!(out, b"hello", "the good chunk before it was kept");
    }

    #[test]
    fn a_chunked_body_cut_short_is_an_early_close_and_what_follows_it_is_left() {
        let mut decoder = Decoder::new(Framing::Chunked);
        let (mut raw, mut out) = (b"5\r\nhel".to_vec(), Vec::new());
        decoder.decode(&mut raw, &mut out).expect("decode");
        assert!(raw.is_empty(), "every byte it could use was taken");
        assert!(!decoder.is_done());
        assert!(decoder.check_end().is_err());
        raw.extend_from_slice(b"lo\r\n0\r\n\r\nextra");
        decoder.decode(&mut raw, &mut out).expect("decode");
        assert_eq!(out, b"hello");
        assert!(decoder.is_done() && decoder.check_end().is_ok());
        assert_eq!(raw, b"extra", "bytes after the body are not body");
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_an_early_close_is_an_error() {
        let mut decoder = Decoder::new(Framing::Length(5));
        let (mut raw, mut out) = (b"abc".to_vec(), Vec::new());
        decoder.decode(&mut raw, &mut out).expect("decode");
        assert!(!decoder.is_done());
        assert!(decoder.check_end().is_err());
        raw.extend_from_slice(b"defg");
        decoder.decode(&mut raw, &mut out).expect("decode");
        assert_eq!(out, b"abcde");
        assert!(decoder.is_done());
    }

    #[test]
    fn sse_events_are_split_on_blank_lines_and_comments_skipped() {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        parser
            .feed(
                b": hello\r\ndata: {\"a\":1}\r\n\r\ndata:x\ndata: y\n",
                &mut out,
            )
            .expect("feed");
        assert_eq!(out, vec!["{\"a\":1}".to_owned()]);
        parser
            .feed(b"\nevent: ignored\ndata: [DONE]\n\n", &mut out)
            .expect("feed");
        assert_eq!(
            out,
            vec![
                "{\"a\":1}".to_owned(),
                "x\ny".to_owned(),
                "[DONE]".to_owned()
            ]
        );
    }

    #[test]
    fn openai_chunks_become_tokens_and_done() {
        let token = r#"{"id":"1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        assert_eq!(interpret(token), Delta::Token("Hel".to_owned()));
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#;
        assert_eq!(interpret(role), Delta::Nothing);
        let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(interpret(stop), Delta::Finished);
        assert_eq!(interpret("[DONE]"), Delta::Done);
        let error = r#"{"error":{"message":"model not found","type":"invalid_request_error"}}"#;
        assert_eq!(
            interpret(error),
            Delta::Failed("the upstream reported an error: model not found".to_owned())
        );
        assert!(matches!(interpret("nonsense"), Delta::Failed(e) if e.contains("not JSON")));
    }

    /// A one-connection server on 127.0.0.1 that answers with `answer`.
    fn answering(answer: &'static str) -> Arc<Upstream> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            // Read the request body too, so closing does not reset the connection.
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length = head
                .split("content-length:")
                .nth(1)
                .and_then(|rest| rest.lines().next()?.trim().parse().ok())
                .unwrap_or(0);
            let _ = sock.read_exact(&mut vec![0u8; length]);
            let _ = sock.write_all(answer.as_bytes());
        });
        Arc::new(Upstream::new(&url, Some("m".to_owned()), None).expect("valid url"))
    }

    fn run(reply: &mut UpstreamReply) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..1000 {
            match reply.next(Duration::from_millis(100)) {
                Step::Pending => continue,
                step @ (Step::Done | Step::Failed(_)) => {
                    steps.push(step);
                    return steps;
                }
                step => steps.push(step),
            }
        }
        panic!("no end after 1000 steps: {steps:?}");
    }

    #[test]
    fn a_close_delimited_event_stream_is_relayed() {
        let up = answering(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n\
             data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
             data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
        );
        let steps = run(&mut UpstreamReply::new(up, "hi".to_owned()));
        assert_eq!(
            steps,
            vec![Step::Token("a".into()), Step::Token("b".into()), Step::Done]
        );
    }

    #[test]
    fn a_chunked_event_stream_split_across_chunks_is_relayed() {
        let up = answering(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
             14\r\ndata: {\"choices\":[{\"\r\n\
             1b\r\ndelta\":{\"content\":\"a\"}}]}\n\n\r\n\
             e\r\ndata: [DONE]\n\n\r\n\
             0\r\n\r\n",
        );
        let steps = run(&mut UpstreamReply::new(up, "hi".to_owned()));
        assert_eq!(steps, vec![Step::Token("a".into()), Step::Done]);
    }

    #[test]
    fn a_bad_chunk_fails_the_reply_with_the_reason() {
        let up = answering(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
             -5\r\nhello\r\n",
        );
        let steps = run(&mut UpstreamReply::new(up, "hi".to_owned()));
        assert!(
            matches!(&steps[..], [Step::Failed(e)] if e.contains("bad chunked body: chunk size starts with byte 0x2d")),
            "{steps:?}"
        );
    }

    #[test]
    fn an_answer_that_is_not_streamed_comes_as_one_token() {
        let up = answering(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n\
             {\"choices\":[{\"message\":{\"content\":\"whole\"}}]}",
        );
        let steps = run(&mut UpstreamReply::new(up, "hi".to_owned()));
        assert_eq!(steps, vec![Step::Token("whole".into()), Step::Done]);
    }

    #[test]
    fn an_error_answer_is_explained() {
        let up = answering(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 39\r\n\r\n\
             {\"error\":{\"message\":\"no model m here\"}}",
        );
        let steps = run(&mut UpstreamReply::new(up, "hi".to_owned()));
        assert_eq!(
            steps,
            vec![Step::Failed(
                "the upstream answered 404: no model m here".into()
            )]
        );
    }

    #[test]
    fn a_refused_connection_fails_the_reply() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let up = Arc::new(
            Upstream::new(&format!("http://127.0.0.1:{port}"), None, None).expect("valid url"),
        );
        let steps = run(&mut UpstreamReply::new(up.clone(), "hi".to_owned()));
        assert!(
            matches!(&steps[..], [Step::Failed(e)] if e.contains("cannot connect")),
            "{steps:?}"
        );
        assert!(up.probe(Duration::from_secs(2)).is_err());
    }

    #[test]
    fn error_bodies_are_explained_briefly() {
        assert_eq!(
            explain_error_body(br#"{"error":{"message":"no such model"}}"#),
            "no such model"
        );
        assert_eq!(
            explain_error_body(br#"{"detail":"Not Found"}"#),
            "Not Found"
        );
        assert_eq!(explain_error_body(b"  plain text \n"), "plain text");
        assert_eq!(explain_error_body(b""), "(no details)");
        assert!(explain_error_body("x".repeat(1000).as_bytes()).ends_with('\u{2026}'));
    }
}
