//! One request and its response on a connection: build the `http::Request`,
//! call the app, write the response, log it.

use std::io::{self, Read};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::conn::Conn;
use crate::access_log;
use crate::app::{App, Body, BodySource, PeerAddr, RawHeaders, RawTarget, ResponseBody};
use crate::heartbeat::Slot;
use crate::http::response::{error_response, http_date, write_chunk, write_head, write_last_chunk};
use crate::http::{
    BodyError, ChunkedDecoder, Framing, Limits, RequestHead, ResponseFraming, Version,
};

/// How long a client may pause while sending a body or reading a response.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Body bytes we read and throw away after the app left them unread, so the
/// connection can be kept; past this we close instead.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// What the connection should do after the exchange.
pub enum After {
    /// Wait for the next request.
    KeepAlive,
    /// Shut our side and close (lingering if the client may still send).
    Close,

    /// The head is sent; a detached stream's chunks follow from the
    /// worker's event loop.
    Stream(Box<Streaming>),
}

/// A detached stream the worker's loop is pumping to a client.
pub struct Streaming {
    pub rx: crate::stream::StreamReceiver,
    /// Chunked framing (HTTP/1.1), else the body ends at close.
    pub chunked: bool,
    /// Keep the connection for another request after the stream ends.
    pub keep_alive: bool,
    pub sent: u64,
    pub completion: Completion,
}

/// What is logged and counted when a response is complete.
pub struct Completion {
    peer: Option<std::net::SocketAddr>,
    method: String,
    target: String,
    version: Version,
    request_headers: Vec<(String, Vec<u8>)>,
    status: u16,
    response_headers: HeaderMap,
    started: Instant,
    log_time: String,
}

impl Completion {
    /// Count the response in the slot, warn if it was slow, and write the
    /// access log line.
    pub fn finish(
        self,
        body_bytes: u64,
        slot: &Slot,
        access_format: Option<&access_log::Format>,
        slow_request_threshold: Option<Duration>,
    ) {
        let duration = self.started.elapsed();
        slot.record_response(self.status, duration);
        if slow_request_threshold.is_some_and(|t| duration > t) {
            log::warn!(
                "Slow request: {} {} peer={} status={} took {:.2}s",
                self.method,
                self.target,
                self.peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                self.status,
                duration.as_secs_f64()
            );
        }
        if let Some(format) = access_format {
            let line = format.render(&access_log::Record {
                peer: self.peer.as_ref(),
                method: &self.method,
                target: &self.target,
                version: self.version.as_str(),
                request_headers: &self.request_headers,
                status: self.status,
                response_headers: &self.response_headers,
                body_bytes,
                duration,
                time: &self.log_time,
            });
            crate::logging::access(&line);
        }
    }
}

/// What the worker lends an exchange.
pub struct Context<'a> {
    pub slot: &'a Slot,
    pub limits: &'a Limits,
    pub limit_request_body: Option<u64>,
    /// Whether this response may leave the connection open (keep-alive is on
    /// and the worker is not draining or retiring).
    pub may_keep_alive: bool,
    pub beat_every: Duration,
    /// Requests slower than this get a warning line.
    pub slow_request_threshold: Option<Duration>,
    /// Whether this worker may open another detached stream.
    pub may_open_stream: bool,
    pub access_format: Option<&'a access_log::Format>,
    pub clock: &'a mut Clock,
    /// Reused output buffer.
    pub out: &'a mut Vec<u8>,
}

/// Date strings, formatted at most once a second.
#[derive(Default)]
pub struct Clock {
    second: u64,
    http_date: String,
    log_time: String,
}

impl Clock {
    fn refresh(&mut self) {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.http_date.is_empty() {
            self.second = second;
            self.http_date = http_date(now);
            self.log_time.clear();
        }
    }

    fn log_time(&mut self) -> &str {
        if self.log_time.is_empty() {
            self.log_time = crate::sys::clock::local_time("[%d/%b/%Y:%H:%M:%S %z]");
        }
        &self.log_time
    }
}

/// Answer a request whose head could not be parsed, then close.
pub fn reject(conn: &mut Conn, status: u16, reason: &str, ctx: &mut Context<'_>) -> After {
    log::debug!(
        "rejected a request from {}: {reason} ({status})",
        conn.peer_label()
    );
    crate::sys::signals::mark_response_started();
    ctx.slot.record_response(status, Duration::ZERO);
    let bytes = error_response(status, reason);
    let _ = conn.write_all_wait(&bytes, CLIENT_IDLE_TIMEOUT, ctx.slot, ctx.beat_every);
    After::Close
}

/// Serve one request whose head is parsed (and already consumed from the buffer).
pub fn serve(
    conn: &mut Conn,
    head: RequestHead,
    app: &mut dyn App,
    ctx: &mut Context<'_>,
) -> After {
    let started = Instant::now();
    ctx.clock.refresh();
    ctx.slot
        .begin_request(&head.method, &head.target, conn.peer_label());
    crate::sys::signals::set_current_request(Some(conn.fd()));
    let after = exchange(conn, head, app, ctx, started);
    crate::sys::signals::set_current_request(None);
    conn.served += 1;
    after
}

fn exchange(
    conn: &mut Conn,
    mut head: RequestHead,
    app: &mut dyn App,
    ctx: &mut Context<'_>,
    started: Instant,
) -> After {
    if let (Framing::Length(n), Some(limit)) = (head.framing, ctx.limit_request_body)
        && n > limit
    {
        return reject(
            conn,
            413,
            &format!("request body of {n} bytes is over the limit of {limit}"),
            ctx,
        );
    }
    // The access log needs the request's fields after the app has consumed
    // the request; copy them only when there is an access log.
    let access_headers = if ctx.access_format.is_some() {
        head.headers.clone()
    } else {
        Vec::new()
    };
    let request = match build_request(&mut head, conn.peer) {
        Ok(r) => r,
        Err(reason) => return reject(conn, 400, &reason, ctx),
    };
    let log_time = if ctx.access_format.is_some() {
        ctx.clock.log_time().to_owned()
    } else {
        String::new()
    };
    let is_head = head.method == "HEAD";
    let mut body = BodyReader::new(
        conn,
        &head,
        ctx.slot,
        ctx.limits,
        ctx.limit_request_body,
        ctx.beat_every,
    );
    let response = {
        let request = request.map(|()| Body::new(&mut body));
        // The panic hook stays silent inside catch_panic: this is the one line.
        match crate::logging::catch_panic(AssertUnwindSafe(|| app.call(request))) {
            Ok(r) => r,
            Err(panic) => {
                log::error!("app panicked on {} {}: {panic}", head.method, head.target);
                crate::app::respond(500, "text/plain", "internal server error\n")
            }
        }
    };
    if let Some((status, reason)) = body.error.take() {
        drop(body);
        return reject(conn, status, &reason, ctx);
    }
    let body_finished = body.finish_bounded();
    drop(body);

    let (parts, body) = response.into_parts();
    let app_wants_close = parts
        .headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    let mut keep_alive = ctx.may_keep_alive && head.keep_alive && body_finished && !app_wants_close;
    if matches!(body, ResponseBody::Channel(_)) && !ctx.may_open_stream {
        drop(body);
        return reject(
            conn,
            503,
            "this worker has too many open streams; try again",
            ctx,
        );
    }
    let no_body_status = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let framing = match &body {
        _ if no_body_status => ResponseFraming::Length(0),
        ResponseBody::Empty => ResponseFraming::Length(0),
        ResponseBody::Bytes(b) => ResponseFraming::Length(b.len() as u64),
        ResponseBody::Reader { len: Some(n), .. } => ResponseFraming::Length(*n),
        ResponseBody::Reader { len: None, .. }
        | ResponseBody::Stream(_)
        | ResponseBody::Channel(_) => {
            if head.version == Version::Http11 {
                ResponseFraming::Chunked
            } else {
                keep_alive = is_head && keep_alive;
                ResponseFraming::UntilClose
            }
        }
    };
    ctx.out.clear();
    if let Err(e) = write_head(
        ctx.out,
        head.version,
        parts.status,
        &parts.headers,
        framing,
        keep_alive,
        &ctx.clock.http_date,
    ) {
        log::error!(
            "app response to {} {} has an invalid header, answered 500 instead: {e:?}",
            head.method,
            head.target
        );
        return reject(conn, 500, "internal server error", ctx);
    }
    // From here a timeout can no longer prepend its 504 (an interim
    // `100 Continue` does not count: a final response may still follow it).
    crate::sys::signals::mark_response_started();
    let write_body = !is_head && !no_body_status;
    let completion = Completion {
        peer: conn.peer,
        method: head.method,
        target: head.target,
        version: head.version,
        request_headers: access_headers,
        status: parts.status.as_u16(),
        response_headers: parts.headers,
        started,
        log_time,
    };
    let body = match body {
        ResponseBody::Channel(rx) if write_body => {
            return start_stream(conn, rx, framing, keep_alive, completion, ctx);
        }
        other => other,
    };
    // The last response on this connection: a shutdown follows at once.
    let sent = write_response(conn, body, framing, write_body, !keep_alive, ctx);
    let body_bytes = match &sent {
        Ok(n) => *n,
        Err(e) => {
            log::debug!(
                "client went away during {} {}: {e}",
                completion.method,
                completion.target
            );
            keep_alive = false;
            0
        }
    };
    completion.finish(
        body_bytes,
        ctx.slot,
        ctx.access_format,
        ctx.slow_request_threshold,
    );
    if keep_alive && sent.is_ok() {
        After::KeepAlive
    } else {
        After::Close
    }
}

/// Send the head of a detached stream and hand the stream to the loop.
fn start_stream(
    conn: &mut Conn,
    rx: crate::stream::StreamReceiver,
    framing: ResponseFraming,
    keep_alive: bool,
    completion: Completion,
    ctx: &mut Context<'_>,
) -> After {
    match conn.write_all_wait(ctx.out, CLIENT_IDLE_TIMEOUT, ctx.slot, ctx.beat_every) {
        Ok(()) => After::Stream(Box::new(Streaming {
            rx,
            chunked: framing == ResponseFraming::Chunked,
            keep_alive,
            sent: 0,
            completion,
        })),
        Err(e) => {
            log::debug!("client went away before its stream started: {e}");
            After::Close
        }
    }
}

/// The `http::Request` for the app; the raw fields move into its
/// `RawHeaders` extension (`head.headers` is left empty).
fn build_request(
    head: &mut RequestHead,
    peer: Option<std::net::SocketAddr>,
) -> Result<http::Request<()>, String> {
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", head.method))?;
    let uri = parse_uri(&head.target)?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if head.version == Version::Http10 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    *req.headers_mut() = headers;
    req.extensions_mut().insert(PeerAddr(peer));
    req.extensions_mut().insert(RawTarget(head.target.clone()));
    req.extensions_mut()
        .insert(RawHeaders(std::mem::take(&mut head.headers)));
    Ok(req)
}

/// The target as an `http::Uri`. The `http` crate refuses some bytes that
/// clients do send in paths and queries (`"`, `{`, `|`, ...); those are
/// percent-encoded for the Uri, while `RawTarget` keeps what was sent.
fn parse_uri(target: &str) -> Result<http::Uri, String> {
    if let Ok(uri) = target.parse() {
        return Ok(uri);
    }
    let mut encoded = String::with_capacity(target.len() + 16);
    for b in target.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
        .parse()
        .map_err(|_| format!("invalid request target {target:?}"))
}

/// Write the head in `ctx.out` and then the body. Returns body bytes sent.
/// `is_last` says the connection is shut down right after (see `Conn::send_all_wait`).
fn write_response(
    conn: &mut Conn,
    body: ResponseBody,
    framing: ResponseFraming,
    write_body: bool,
    is_last: bool,
    ctx: &mut Context<'_>,
) -> io::Result<u64> {
    let chunked = framing == ResponseFraming::Chunked;
    let slot = ctx.slot;
    let beat = ctx.beat_every;
    // The whole response in one buffer: one write, and with `is_last` one
    // packet together with the FIN.
    let flags = if is_last { libc::MSG_MORE } else { 0 };
    let write_whole = |conn: &mut Conn, out: &[u8]| {
        conn.send_all_wait(out, flags, CLIENT_IDLE_TIMEOUT, slot, beat)
    };
    match body {
        // A HEAD request or a bodiless status, or a stream for one: only
        // the head is sent.
        _ if !write_body => write_whole(conn, ctx.out).map(|()| 0),
        ResponseBody::Channel(_) | ResponseBody::Empty => write_whole(conn, ctx.out).map(|()| 0),
        ResponseBody::Bytes(bytes) => {
            ctx.out.extend_from_slice(&bytes);
            write_whole(conn, ctx.out)?;
            Ok(bytes.len() as u64)
        }
        ResponseBody::Reader { mut reader, len } => {
            conn.write_all_wait(ctx.out, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            let mut sent = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let mut frame = Vec::with_capacity(buf.len() + 32);
            loop {
                let want = match len {
                    Some(n) if sent >= n => break,
                    Some(n) => buf.len().min((n - sent) as usize),
                    None => buf.len(),
                };
                let n = match reader.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                frame.clear();
                if chunked {
                    write_chunk(&mut frame, &buf[..n]);
                } else {
                    frame.extend_from_slice(&buf[..n]);
                }
                conn.write_all_wait(&frame, CLIENT_IDLE_TIMEOUT, slot, beat)?;
                sent += n as u64;
            }
            if let Some(n) = len
                && sent < n
            {
                // The declared length cannot be honoured: the client must
                // not take a short body for a whole one.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "response body shorter than its length",
                ));
            }
            if chunked {
                frame.clear();
                write_last_chunk(&mut frame);
                conn.write_all_wait(&frame, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            }
            Ok(sent)
        }
        ResponseBody::Stream(produce) => {
            conn.write_all_wait(ctx.out, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            let mut sink = StreamSink {
                conn,
                chunked,
                slot,
                beat,
                sent: 0,
                frame: Vec::new(),
            };
            produce(&mut sink)?;
            if chunked {
                sink.frame.clear();
                write_last_chunk(&mut sink.frame);
                let frame = std::mem::take(&mut sink.frame);
                sink.conn
                    .write_all_wait(&frame, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            }
            Ok(sink.sent)
        }
    }
}

struct StreamSink<'c> {
    conn: &'c mut Conn,
    chunked: bool,
    slot: &'c Slot,
    beat: Duration,
    sent: u64,
    frame: Vec<u8>,
}

impl crate::app::ChunkSink for StreamSink<'_> {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.frame.clear();
        if self.chunked {
            write_chunk(&mut self.frame, data);
        } else {
            self.frame.extend_from_slice(data);
        }
        self.conn
            .write_all_wait(&self.frame, CLIENT_IDLE_TIMEOUT, self.slot, self.beat)?;
        self.sent += data.len() as u64;
        Ok(())
    }
}

enum BodyState {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// Reads a request body from the connection for the app.
struct BodyReader<'c> {
    conn: &'c mut Conn,
    state: BodyState,
    /// Decoded chunked bytes not yet handed to the app.
    decoded: Vec<u8>,
    decoded_pos: usize,
    limit: Option<u64>,
    total: u64,
    /// `Expect: 100-continue` still to be answered when the app first reads.
    continue_pending: bool,
    /// A framing error or limit breach: the response becomes this status.
    error: Option<(u16, String)>,
    slot: &'c Slot,
    beat: Duration,
    trailers: Vec<(String, Vec<u8>)>,
}

impl<'c> BodyReader<'c> {
    fn new(
        conn: &'c mut Conn,
        head: &RequestHead,
        slot: &'c Slot,
        limits: &Limits,
        limit: Option<u64>,
        beat: Duration,
    ) -> BodyReader<'c> {
        let state = match head.framing {
            Framing::None | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Box::new(ChunkedDecoder::new(limits))),
        };
        let continue_pending = head.expect_continue
            && head.version == Version::Http11
            && !matches!(state, BodyState::Done);
        BodyReader {
            conn,
            state,
            decoded: Vec::new(),
            decoded_pos: 0,
            limit,
            total: 0,
            continue_pending,
            error: None,
            slot,
            beat,
            trailers: Vec::new(),
        }
    }

    fn fail(&mut self, status: u16, reason: String) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, reason.clone());
        self.error = Some((status, reason));
        self.state = BodyState::Done;
        err
    }

    /// Get more bytes from the client into the connection buffer.
    fn fill(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            self.conn.write_all_wait(
                b"HTTP/1.1 100 Continue\r\n\r\n",
                CLIENT_IDLE_TIMEOUT,
                self.slot,
                self.beat,
            )?;
        }
        match self
            .conn
            .read_wait(CLIENT_IDLE_TIMEOUT, self.slot, self.beat)
        {
            // The client closed its side mid-body. It may still read our
            // answer, so the app decides what to make of a short body (it sees
            // UnexpectedEof); the connection closes after the response.
            Ok(0) if matches!(self.state, BodyState::Chunked(_)) => Err(self.fail(
                400,
                "the chunked request body ended before its last chunk".into(),
            )),
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of the request body",
            )),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.fail(408, "client stopped sending the request body".into()))
            }
            Err(e) => Err(e),
        }
    }

    fn count(&mut self, n: usize) -> io::Result<()> {
        self.total += n as u64;
        match self.limit {
            Some(limit) if self.total > limit => Err(self.fail(
                413,
                format!("request body is over the limit of {limit} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// After the app: skip what it left unread if that is cheap. Returns
    /// whether the body was consumed to its end (so the connection may be kept).
    fn finish_bounded(&mut self) -> bool {
        let mut sink = [0u8; 8192];
        let mut skipped = 0u64;
        loop {
            if matches!(self.state, BodyState::Done) && self.decoded_pos >= self.decoded.len() {
                return self.error.is_none();
            }
            let remaining_known = match self.state {
                BodyState::Length(n) => Some(n),
                _ => None,
            };
            if remaining_known.is_some_and(|n| n > DRAIN_LIMIT) || skipped > DRAIN_LIMIT {
                return false;
            }
            // Only what has already arrived or arrives promptly is worth
            // waiting for; a client still uploading a large body gets closed.
            if self.conn.buf.is_empty() && self.decoded_pos >= self.decoded.len() {
                let _ = self.conn.read_available(usize::MAX);
                if self.conn.buf.is_empty() && !self.conn.read_eof {
                    return false;
                }
            }
            match self.read(&mut sink) {
                Ok(0) => return self.error.is_none() && matches!(self.state, BodyState::Done),
                Ok(n) => skipped += n as u64,
                Err(_) => return false,
            }
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.decoded_pos < self.decoded.len() {
                let n = out.len().min(self.decoded.len() - self.decoded_pos);
                out[..n].copy_from_slice(&self.decoded[self.decoded_pos..self.decoded_pos + n]);
                self.decoded_pos += n;
                return Ok(n);
            }
            match &mut self.state {
                BodyState::Done => {
                    return match &self.error {
                        Some((_, reason)) => {
                            Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone()))
                        }
                        None => Ok(0),
                    };
                }
                BodyState::Length(remaining) => {
                    if self.conn.buf.is_empty() {
                        self.fill()?;
                        continue;
                    }
                    let n = out.len().min(self.conn.buf.len()).min(*remaining as usize);
                    out[..n].copy_from_slice(&self.conn.buf[..n]);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = BodyState::Done;
                    }
                    self.conn.consume(n);
                    self.count(n)?;
                    return Ok(n);
                }
                BodyState::Chunked(decoder) => {
                    if self.conn.buf.is_empty() {
                        self.fill()?;
                        continue;
                    }
                    self.decoded.clear();
                    self.decoded_pos = 0;
                    let result = decoder.decode(&self.conn.buf, &mut self.decoded, 64 * 1024);
                    let consumed = match result {
                        Ok(c) => c,
                        Err(e) => {
                            let e: BodyError = e;
                            return Err(self.fail(e.status(), e.to_string()));
                        }
                    };
                    let done = decoder.is_done();
                    if done {
                        self.trailers = decoder.trailers().to_vec();
                    }
                    self.conn.consume(consumed);
                    if done {
                        self.state = BodyState::Done;
                    }
                    let produced = self.decoded.len();
                    self.count(produced)?;
                    if produced == 0 && !done && consumed == 0 {
                        self.fill()?;
                    }
                }
            }
        }
    }
}

impl BodySource for BodyReader<'_> {
    fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }
}
