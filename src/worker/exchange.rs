//! One request and its response on a connection, in three steps: call the
//! app (`call_app`: the request body is read from the connection as the app
//! asks, a panic becomes a 500), choose how the response is framed
//! (`framing::choose`, pure), and write it out (`write_out`), or hand a
//! detached stream to the worker's loop. Then count and log it.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::body_reader::BodyReader;
use super::clock::Clock;
use super::completion::{Completion, Streaming};
use super::conn::{CLIENT_IDLE_TIMEOUT, Conn};
use super::framing::{self, BodyLength, Plan};
use super::write_out::write_response;
use crate::access_log;
use crate::app::{
    App, Body, ClientCertSubject, LocalAddr, PeerAddr, RawHeaders, RawTarget, Response,
    ResponseBody, Scheme,
};
use crate::forwarded;
use crate::heartbeat::Slot;
use crate::http::response::{error_response, write_head};
use crate::http::{Framing, Limits, RequestHead, Version};

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
    /// Whose forwarded headers are believed, and which.
    pub forwarded: &'a forwarded::Trust,
    pub access_format: Option<&'a access_log::Format>,
    pub clock: &'a mut Clock,
    /// Reused output buffer.
    pub out: &'a mut Vec<u8>,
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
    let client = Client::of(conn, &head.headers, ctx.forwarded);
    match client.addr.filter(|_| client.is_forwarded) {
        Some(forwarded) => {
            ctx.slot
                .begin_request(&head.method, &head.target, &forwarded.to_string())
        }
        None => ctx
            .slot
            .begin_request(&head.method, &head.target, conn.peer_label()),
    }
    // The timeout handler writes its 504 straight to the socket, which on a
    // TLS connection would be bytes the client cannot decrypt (the session's
    // keys die with the worker): that client sees the connection close.
    let answerable = conn.tls.is_none().then(|| conn.fd());
    crate::sys::signals::set_current_request(answerable);
    let after = exchange(conn, head, client, app, ctx, started);
    crate::sys::signals::set_current_request(None);
    conn.served += 1;
    after
}

/// Who a request is from, as far as it can be believed: the connection's
/// peer (the PROXY header's client, on such a bind) and scheme, unless a
/// trusted proxy's forwarded headers say otherwise.
struct Client {
    addr: Option<std::net::SocketAddr>,
    scheme: Scheme,
    /// `addr` came from forwarded headers (its port is 0: they name none).
    is_forwarded: bool,
}

impl Client {
    fn of(conn: &Conn, headers: &[(String, Vec<u8>)], trust: &forwarded::Trust) -> Client {
        let own_scheme = if conn.tls.is_some() || conn.is_tls_at_proxy {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let resolved = match conn.peer {
            Some(peer) => forwarded::resolve(peer.ip(), headers, &trust.peers, trust.fields),
            None => forwarded::resolve_from_trusted(headers, &trust.peers, trust.fields),
        };
        Client {
            addr: resolved
                .client
                .map(|ip| std::net::SocketAddr::new(ip, 0))
                .or(conn.peer),
            scheme: resolved.scheme.unwrap_or(own_scheme),
            is_forwarded: resolved.client.is_some(),
        }
    }
}

fn exchange(
    conn: &mut Conn,
    mut head: RequestHead,
    client: Client,
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
    let (access_headers, log_time) = access_log_fields(&head, ctx);
    let client_cert = conn
        .client_subject()
        .map(|s| ClientCertSubject(s.to_owned()));
    let request = match build_request(
        &mut head,
        client.addr,
        conn.local_addr(),
        client.scheme,
        client_cert,
    ) {
        Ok(r) => r,
        Err(reason) => return reject(conn, 400, &reason, ctx),
    };
    let answer = match call_app(conn, &head, request, app, ctx) {
        Ok(answer) => answer,
        Err((status, reason)) => return reject(conn, status, &reason, ctx),
    };
    let (parts, body) = answer.response.into_parts();
    if matches!(body, ResponseBody::Channel(_)) && !ctx.may_open_stream {
        drop(body);
        return reject(
            conn,
            503,
            "this worker has too many open streams; try again",
            ctx,
        );
    }
    let may_keep_alive = ctx.may_keep_alive
        && head.keep_alive
        && answer.is_body_consumed
        && !asks_to_close(&parts.headers);
    let plan = framing::choose(
        &head.method,
        parts.status,
        head.version,
        BodyLength::of(&body),
        may_keep_alive,
    );
    ctx.out.clear();
    if let Err(e) = write_head(
        ctx.out,
        head.version,
        parts.status,
        &parts.headers,
        plan.framing,
        plan.keep_alive,
        ctx.clock.http_date(),
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
    let completion = Completion {
        peer: client.addr,
        scheme: client.scheme,
        method: head.method,
        target: head.target,
        version: head.version,
        request_headers: access_headers,
        status: parts.status.as_u16(),
        response_headers: parts.headers,
        started,
        log_time,
    };
    match body {
        ResponseBody::Channel(rx) if plan.sends_body => {
            start_stream(conn, rx, plan, completion, ctx)
        }
        body => send(conn, body, plan, completion, ctx),
    }
}

/// The request's fields and the time for the access log line, which is
/// written after the app has consumed the request; copied only when there
/// is an access log (empty otherwise).
fn access_log_fields(
    head: &RequestHead,
    ctx: &mut Context<'_>,
) -> (Vec<(String, Vec<u8>)>, String) {
    if ctx.access_format.is_some() {
        (head.headers.clone(), ctx.clock.log_time().to_owned())
    } else {
        (Vec::new(), String::new())
    }
}

/// What the app made of a request.
struct Answer {
    response: Response,
    /// The request body was read (by the app, or skipped after it) to its
    /// end, so the connection is in step for another request.
    is_body_consumed: bool,
}

/// Call the app with the request, its body read from the connection as the
/// app asks. A panic in the app is one error line naming the request, and a
/// 500. Err is a status and reason that replace the app's response: the
/// request body broke its framing or a limit, or the client stopped sending.
fn call_app(
    conn: &mut Conn,
    head: &RequestHead,
    request: http::Request<()>,
    app: &mut dyn App,
    ctx: &Context<'_>,
) -> Result<Answer, (u16, String)> {
    let mut body = BodyReader::new(
        conn,
        head,
        ctx.slot,
        ctx.limits,
        ctx.limit_request_body,
        ctx.beat_every,
    );
    let response = {
        let mut request = request.map(|()| Body::new(&mut body));
        request
            .extensions_mut()
            .insert(crate::app::Progress::new(ctx.slot.clone()));
        // The panic hook stays silent inside catch_panic: this is the one line.
        match crate::logging::catch_panic(AssertUnwindSafe(|| app.call(request))) {
            Ok(r) => r,
            Err(panic) => {
                log::error!("app panicked on {} {}: {panic}", head.method, head.target);
                crate::app::respond(500, "text/plain", "internal server error\n")
            }
        }
    };
    if let Some(error) = body.take_error() {
        return Err(error);
    }
    let is_body_consumed = body.finish_bounded();
    Ok(Answer {
        response,
        is_body_consumed,
    })
}

/// Whether the app's `Connection` header says `close`.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

/// Write the response whose head is in `ctx.out`, then count and log it.
fn send(
    conn: &mut Conn,
    body: ResponseBody,
    plan: Plan,
    completion: Completion,
    ctx: &mut Context<'_>,
) -> After {
    let sent = write_response(conn, body, plan, ctx.out, ctx.slot, ctx.beat_every);
    let body_bytes = match &sent {
        Ok(n) => *n,
        Err(e) => {
            log::debug!(
                "client went away during {} {}: {e}",
                completion.method,
                completion.target
            );
            0
        }
    };
    completion.finish(
        body_bytes,
        ctx.slot,
        ctx.access_format,
        ctx.slow_request_threshold,
    );
    if plan.keep_alive && sent.is_ok() {
        After::KeepAlive
    } else {
        After::Close
    }
}

/// Send the head of a detached stream and hand the stream to the loop.
fn start_stream(
    conn: &mut Conn,
    rx: crate::stream::StreamReceiver,
    plan: Plan,
    completion: Completion,
    ctx: &mut Context<'_>,
) -> After {
    match conn.write_all_wait(ctx.out, CLIENT_IDLE_TIMEOUT, ctx.slot, ctx.beat_every) {
        Ok(()) => After::Stream(Box::new(Streaming {
            rx,
            chunked: plan.framing == crate::http::ResponseFraming::Chunked,
            keep_alive: plan.keep_alive,
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
    local: Option<std::net::SocketAddr>,
    scheme: Scheme,
    client_cert: Option<ClientCertSubject>,
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
    req.extensions_mut().insert(LocalAddr(local));
    req.extensions_mut().insert(scheme);
    if let Some(subject) = client_cert {
        req.extensions_mut().insert(subject);
    }
    req.extensions_mut().insert(RawTarget(head.target.clone()));
    req.extensions_mut()
        .insert(RawHeaders(std::mem::take(&mut head.headers)));
    Ok(req)
}

/// The target as an `http::Uri`. The `http` crate refuses some bytes that
/// clients do send in paths and queries (`"`, `{`, `|`, ...); those are
/// percent-encoded for the Uri, while `RawTarget` keeps what was sent.
fn parse_uri(target: &str) -> Result<http::Uri, String> {
    // The commonest target, parsed to the same Uri without copying it.
    if target == "/" {
        return Ok(http::Uri::from_static("/"));
    }
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

#[cfg(test)]
mod tests {
    use super::{asks_to_close, parse_uri};

    #[test]
    fn a_target_the_http_crate_takes_is_used_as_sent() {
        let uri = parse_uri("/a/b?x=1&y=2").unwrap();
        assert_eq!(uri.path(), "/a/b");
        assert_eq!(uri.query(), Some("x=1&y=2"));
    }

    #[test]
    fn the_root_target_is_the_root_uri() {
        let uri = parse_uri("/").unwrap();
        assert_eq!(uri, "/".parse::<http::Uri>().unwrap());
        assert_eq!(uri.path(), "/");
        assert_eq!(uri.query(), None);
    }

    #[test]
    fn bytes_the_http_crate_refuses_are_percent_encoded() {
        let uri = parse_uri("/search?q=\"a|b\"&f={x}").unwrap();
        assert_eq!(uri.path(), "/search");
        assert_eq!(uri.query(), Some("q=%22a%7Cb%22&f=%7Bx%7D"));
    }

    #[test]
    fn connection_close_from_the_app_is_found_in_any_case_and_list() {
        let mut headers = http::HeaderMap::new();
        assert!(!asks_to_close(&headers));
        headers.insert(http::header::CONNECTION, "keep-alive".parse().unwrap());
        assert!(!asks_to_close(&headers));
        headers.insert(http::header::CONNECTION, "Upgrade, Close".parse().unwrap());
        assert!(asks_to_close(&headers));
    }
}
