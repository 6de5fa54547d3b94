//! `chat`: a chat web page whose replies stream in token by token over
//! Server-Sent Events, from a built-in simulated model (`chat`) or an
//! OpenAI-compatible model server (`chat:http://HOST:PORT/v1`, e.g.
//! llama.cpp's server, vLLM or Ollama).
//!
//! Routes:
//!
//! - `GET /`: the chat page, one self-contained HTML file (no CDN, no
//!   external fonts) that keeps a `session_id` in localStorage.
//! - `POST /chat` with `{"message": "...", "session_id": "...", "user_id": "..."}`
//!   (the last two optional): `200 text/event-stream` carrying
//!   `data: {"type":"token","content":"..."}` events, then
//!   `data: {"type":"done"}`, or `data: {"type":"error","message":"..."}`
//!   if the reply fails. A `: keepalive` comment goes out while no token
//!   arrives; a reply with no token for the stall limit ends with an error
//!   event. A bad body gets `400 {"error": "..."}` naming the problem.
//! - `GET /health`: `{"status": "ok", "pid": PID, "backend": "simulated" | "ok"}`,
//!   or 503 with `"backend": "unreachable"`, the upstream's URL and the
//!   reason when the last check of `GET URL/models` failed (or
//!   `"backend": "checking"` before the first check ends). The check runs
//!   on a thread of the worker every `FORKHORN_CHAT_HEALTH_MS`
//!   (`chat/health.rs`); `/health` answers at once from its last verdict, so
//!   a hung upstream never holds a worker.
//!
//! Each reply is produced on its own thread and handed to the worker as a
//! detached stream (`ResponseBody::channel_with`), so a reply that takes a
//! minute holds neither the worker nor its heartbeat: the worker serves
//! other requests while it pumps the stream. The thread stops within a
//! second of its client leaving (`send` fails, or `is_closed` between waits).
//!
//! Settings, read from the environment when each worker builds the app
//! (and checked at start):
//!
//! | variable | default | meaning |
//! |----------|---------|---------|
//! | `FORKHORN_CHAT_KEEPALIVE_MS` | 15000 | a `: keepalive` comment after this long without a token |
//! | `FORKHORN_CHAT_STALL_MS` | 30000 | end the reply with an error event after this long without a token |
//! | `FORKHORN_CHAT_TOKEN_MS` | 40 | the simulated model's pause between words |
//! | `FORKHORN_CHAT_MODEL` | the first of `GET URL/models` | the `model` asked of an upstream |
//! | `FORKHORN_CHAT_API_KEY` | none | sent to an upstream as `Authorization: Bearer KEY` |
//! | `FORKHORN_CHAT_HEALTH_MS` | 3000 | how often an upstream is checked for `/health`, and how long one check may take |

mod health;
mod model;
mod upstream;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use health::{HealthWatch, Verdict};
use model::{Reply, Simulated, Step};
use upstream::{Upstream, UpstreamReply};

use crate::app::{App, Request, Response, ResponseBody, respond};
use crate::stream::StreamSender;

/// The chat page; `{{WATCHDOG_MS}}` is filled in when the app is built.
const PAGE: &str = include_str!("chat/page.html");

/// Longest accepted `message`, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Longest accepted `POST /chat` body; more gets 413.
const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Longest accepted `session_id` or `user_id`.
const MAX_ID_BYTES: usize = 256;
/// Replies one worker produces at once; more get 503.
const MAX_LIVE_REPLIES: usize = 256;
/// Chunks a reply may queue ahead of a slow client.
const STREAM_CAPACITY: usize = 64;
/// How far above the stall limit the worker's own inactivity limit for a
/// stream sits (it only fires if the reply thread itself is stuck).
const STREAM_IDLE_MARGIN: Duration = Duration::from_secs(2);
/// The longest a reply thread waits on its backend before it looks again
/// at whether its client is still there.
const POLL_SLICE: Duration = Duration::from_secs(1);
/// Stack for a reply thread (it parses JSON and reads a socket, no more).
const REPLY_THREAD_STACK_BYTES: usize = 256 * 1024;
/// Longest accepted `FORKHORN_CHAT_*_MS` value (a day).
const MAX_SETTING_MS: u64 = 86_400_000;

const KEEPALIVE_COMMENT: &str = ": keepalive\n\n";

/// The intervals a reply runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    /// A keepalive comment after this long without a token.
    keepalive: Duration,
    /// An error event, and the end, after this long without a token.
    stall: Duration,
    /// The simulated model's pause between words.
    token_interval: Duration,
    /// How often an upstream is checked for `/health` (and the time one
    /// check may take).
    health_interval: Duration,
}

impl Timing {
    fn from_env() -> Result<Timing, String> {
        Ok(Timing {
            keepalive: env_ms("FORKHORN_CHAT_KEEPALIVE_MS", 15_000, 1)?,
            stall: env_ms("FORKHORN_CHAT_STALL_MS", 30_000, 1)?,
            token_interval: env_ms("FORKHORN_CHAT_TOKEN_MS", 40, 0)?,
            health_interval: env_ms("FORKHORN_CHAT_HEALTH_MS", 3000, 10)?,
        })
    }
}

/// A duration in milliseconds from variable `name`, `default` when unset.
fn env_ms(name: &str, default: u64, min: u64) -> Result<Duration, String> {
    let Ok(raw) = std::env::var(name) else {
        return Ok(Duration::from_millis(default));
    };
    match raw.trim().parse::<u64>() {
        Ok(ms) if (min..=MAX_SETTING_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{name}={raw:?}: expected milliseconds from {min} to {MAX_SETTING_MS}; fix or unset it"
        )),
    }
}

/// A variable's value, if set and not blank.
fn env_text(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Check the app spec's option (`chat` or `chat:URL`) and the settings in
/// the environment, before any worker starts.
pub fn check(option: Option<&str>) -> Result<(), String> {
    if let Some(url) = option {
        upstream::parse_url(url).map_err(|e| format!("app chat:{url}: {e}"))?;
    }
    Timing::from_env()
        .map(|_| ())
        .map_err(|e| format!("app chat: {e}"))
}

/// Where replies come from.
enum Backend {
    Simulated,
    /// An upstream model server, and its health as last checked.
    Upstream(Arc<Upstream>, HealthWatch),
}

/// The chat app of one worker.
pub struct Chat {
    timing: Timing,
    backend: Backend,
    /// The page with its settings filled in.
    page: String,
    /// Reply threads running now; each decrements it as it ends.
    live_replies: Arc<AtomicUsize>,
}

impl Chat {
    /// The app for one worker: the simulated model, or the OpenAI-compatible
    /// upstream at `option` (`chat:URL`); reads the FORKHORN_CHAT_* settings.
    pub fn new(option: Option<&str>) -> Result<Chat, String> {
        check(option)?;
        let timing = Timing::from_env().map_err(|e| format!("app chat: {e}"))?;
        let backend = match option {
            None => Backend::Simulated,
            Some(url) => {
                let upstream = Arc::new(
                    Upstream::new(
                        url,
                        env_text("FORKHORN_CHAT_MODEL"),
                        env_text("FORKHORN_CHAT_API_KEY"),
                    )
                    .map_err(|e| format!("app chat:{url}: {e}"))?,
                );
                // Built in the worker after fork, so the thread never runs in the master.
                let health = HealthWatch::start(upstream.clone(), timing.health_interval)
                    .map_err(|e| format!("app chat:{url}: {e}"))?;
                Backend::Upstream(upstream, health)
            }
        };
        // The page gives up on a reply when nothing at all (not even a
        // keepalive) arrived for longer than the server would stay silent.
        let watchdog =
            timing.keepalive.min(timing.stall) + STREAM_IDLE_MARGIN + Duration::from_secs(10);
        let page = PAGE.replace("{{WATCHDOG_MS}}", &watchdog.as_millis().to_string());
        Ok(Chat {
            timing,
            backend,
            page,
            live_replies: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl App for Chat {
    fn call(&mut self, req: Request<'_>) -> Response {
        let method = req.method().clone();
        match (req.uri().path(), method.as_str()) {
            ("/", "GET" | "HEAD") => {
                let mut resp = respond(200, "text/html; charset=utf-8", self.page.clone());
                set_header(&mut resp, "cache-control", "no-cache");
                resp
            }
            ("/chat", "POST") => self.chat(req),
            ("/health", "GET" | "HEAD") => self.health(),
            ("/", _) => not_allowed("GET, HEAD"),
            ("/chat", _) => not_allowed("POST"),
            ("/health", _) => not_allowed("GET, HEAD"),
            (path, _) => json_error(404, &format!("no such page {path:?}; the chat is at /")),
        }
    }
}

impl Chat {
    /// `POST /chat`: check the body, start a reply thread, return its stream.
    fn chat(&mut self, mut req: Request<'_>) -> Response {
        let mut body = Vec::new();
        if let Err(e) = req
            .body_mut()
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut body)
        {
            return json_error(400, &format!("cannot read the request body: {e}"));
        }
        if body.len() as u64 > MAX_BODY_BYTES {
            return json_error(
                413,
                &format!("the request body is over {} KiB", MAX_BODY_BYTES / 1024),
            );
        }
        let chat = match parse_chat_request(&body) {
            Ok(c) => c,
            Err(problem) => return json_error(400, &problem),
        };
        if self.live_replies.load(Ordering::Relaxed) >= MAX_LIVE_REPLIES {
            return json_error(
                503,
                "this worker is producing too many replies; try again shortly",
            );
        }
        let reply: Box<dyn Reply> = match &self.backend {
            Backend::Simulated => {
                Box::new(Simulated::new(&chat.message, self.timing.token_interval))
            }
            Backend::Upstream(up, _) => Box::new(UpstreamReply::new(up.clone(), chat.message)),
        };
        let (sender, body) =
            ResponseBody::channel_with(STREAM_CAPACITY, self.timing.stall + STREAM_IDLE_MARGIN);
        let timing = self.timing;
        let live = LiveReply::enter(&self.live_replies);
        let spawned = std::thread::Builder::new()
            .name("chat-reply".to_owned())
            .stack_size(REPLY_THREAD_STACK_BYTES)
            .spawn(move || {
                let _live = live;
                stream_reply(reply, &sender, timing);
            });
        if let Err(e) = spawned {
            log::error!("chat: cannot start a reply thread: {e}");
            return json_error(
                503,
                "the server cannot start a reply now; try again shortly",
            );
        }
        let mut resp = respond(200, "text/event-stream", body);
        set_header(&mut resp, "cache-control", "no-cache");
        set_header(&mut resp, "x-accel-buffering", "no");
        resp
    }

    /// `GET /health`: the worker is up, and so is its backend.
    fn health(&self) -> Response {
        let pid = std::process::id();
        let (status, body) = match &self.backend {
            Backend::Simulated => (
                200,
                serde_json::json!({"status": "ok", "pid": pid, "backend": "simulated"}),
            ),
            Backend::Upstream(up, health) => {
                let (verdict, age) = health.last();
                let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                match verdict {
                    Verdict::Up => (
                        200,
                        serde_json::json!({
                            "status": "ok", "pid": pid, "backend": "ok",
                            "upstream": up.url, "checked_ms_ago": age_ms,
                        }),
                    ),
                    Verdict::Down(why) => (
                        503,
                        serde_json::json!({
                            "status": "unavailable", "pid": pid, "backend": "unreachable",
                            "upstream": up.url, "error": why, "checked_ms_ago": age_ms,
                        }),
                    ),
                    Verdict::Pending => (
                        503,
                        serde_json::json!({
                            "status": "unavailable", "pid": pid, "backend": "checking",
                            "upstream": up.url,
                            "error": format!("the first check of the upstream has been running for {age_ms} ms"),
                        }),
                    ),
                }
            }
        };
        let mut resp = respond(status, "application/json", body.to_string());
        set_header(&mut resp, "cache-control", "no-store");
        resp
    }
}

/// Counts a reply thread as live until dropped.
struct LiveReply(Arc<AtomicUsize>);

impl LiveReply {
    fn enter(count: &Arc<AtomicUsize>) -> LiveReply {
        count.fetch_add(1, Ordering::Relaxed);
        LiveReply(count.clone())
    }
}

impl Drop for LiveReply {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A valid `POST /chat` body.
#[derive(Debug, PartialEq, Eq)]
struct ChatRequest {
    message: String,
    session_id: Option<String>,
    user_id: Option<String>,
}

/// Check a `POST /chat` body; the error names the problem and the fix.
fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, String> {
    const EXAMPLE: &str = r#"send {"message": "hello"}"#;
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}); {EXAMPLE}"))?;
    let Some(fields) = value.as_object() else {
        return Err(format!(
            "the body must be a JSON object, not {}; {EXAMPLE}",
            kind_of(&value)
        ));
    };
    let message = match fields.get("message") {
        None | Some(serde_json::Value::Null) => {
            return Err(format!("the body has no \"message\"; {EXAMPLE}"));
        }
        Some(serde_json::Value::String(m)) => m,
        Some(other) => {
            return Err(format!(
                "\"message\" must be a string, not {}",
                kind_of(other)
            ));
        }
    };
    if message.trim().is_empty() {
        return Err("\"message\" is empty; type something to send".to_owned());
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "\"message\" is over {MAX_MESSAGE_BYTES} bytes ({}); send a shorter one",
            message.len()
        ));
    }
    let id = |name: &str| -> Result<Option<String>, String> {
        match fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.len() <= MAX_ID_BYTES => Ok(Some(s.clone())),
            Some(serde_json::Value::String(_)) => {
                Err(format!("\"{name}\" is over {MAX_ID_BYTES} bytes"))
            }
            Some(other) => Err(format!(
                "\"{name}\" must be a string, not {}",
                kind_of(other)
            )),
        }
    };
    Ok(ChatRequest {
        message: message.clone(),
        session_id: id("session_id")?,
        user_id: id("user_id")?,
    })
}

/// "a number", "an array", ... for messages.
fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// One Server-Sent Event of the reply stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event<'a> {
    Token(&'a str),
    Done,
    Error(&'a str),
}

impl Event<'_> {
    /// `data: {"type":...}\n\n`, `type` first as the protocol is written
    /// (a JSON string never holds a raw newline).
    fn to_sse(&self) -> String {
        let quoted = |s: &str| serde_json::Value::from(s).to_string();
        match self {
            Event::Token(t) => {
                format!("data: {{\"type\":\"token\",\"content\":{}}}\n\n", quoted(t))
            }
            Event::Done => "data: {\"type\":\"done\"}\n\n".to_owned(),
            Event::Error(m) => {
                format!("data: {{\"type\":\"error\",\"message\":{}}}\n\n", quoted(m))
            }
        }
    }
}

/// Relay `reply` to the client as events, with keepalives while it is
/// silent, until it is done, fails, stalls, or the client leaves.
fn stream_reply(mut reply: Box<dyn Reply>, sender: &StreamSender, timing: Timing) {
    let mut last_token = Instant::now();
    let mut next_keepalive = last_token + timing.keepalive;
    loop {
        if sender.is_closed() {
            log::debug!("chat: the client left before the reply was complete");
            return;
        }
        let now = Instant::now();
        let stall_at = last_token + timing.stall;
        if now >= stall_at {
            let message = format!(
                "the model sent nothing for {}; the reply was cut off",
                seconds(timing.stall)
            );
            log::warn!("chat: {message}");
            let _ = sender.send(Event::Error(&message).to_sse());
            return;
        }
        if now >= next_keepalive {
            if sender.send(KEEPALIVE_COMMENT).is_err() {
                return;
            }
            next_keepalive = now + timing.keepalive;
            continue;
        }
        let wait = (next_keepalive.min(stall_at) - now).min(POLL_SLICE);
        let sent = match reply.next(wait) {
            Step::Token(token) => {
                last_token = Instant::now();
                next_keepalive = last_token + timing.keepalive;
                sender.send(Event::Token(&token).to_sse())
            }
            Step::Pending => Ok(()),
            Step::Done => {
                let _ = sender.send(Event::Done.to_sse());
                return;
            }
            Step::Failed(message) => {
                log::warn!("chat: {message}");
                let _ = sender.send(Event::Error(&message).to_sse());
                return;
            }
        };
        if sent.is_err() {
            log::debug!("chat: the client left before the reply was complete");
            return;
        }
    }
}

/// `30 s`, `1.5 s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

fn set_header(resp: &mut Response, name: &'static str, value: &'static str) {
    resp.headers_mut()
        .insert(name, http::HeaderValue::from_static(value));
}

fn json_error(status: u16, message: &str) -> Response {
    respond(
        status,
        "application/json",
        serde_json::json!({"error": message}).to_string(),
    )
}

fn not_allowed(allow: &'static str) -> Response {
    let mut resp = json_error(405, &format!("method not allowed here; use {allow}"));
    set_header(&mut resp, "allow", allow);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Next, StreamReceiver};

    fn error_of(body: &str) -> String {
        parse_chat_request(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn a_chat_request_needs_a_non_empty_string_message() {
        assert_eq!(
            parse_chat_request(br#"{"message": "hi", "session_id": "s1"}"#),
            Ok(ChatRequest {
                message: "hi".to_owned(),
                session_id: Some("s1".to_owned()),
                user_id: None
            })
        );
        assert!(error_of("hello").contains("not JSON"));
        assert!(error_of("[1]").contains("must be a JSON object, not an array"));
        assert!(error_of("{}").contains("no \"message\""));
        assert!(error_of(r#"{"message": null}"#).contains("no \"message\""));
        assert!(
            error_of(r#"{"message": 5}"#).contains("\"message\" must be a string, not a number")
        );
        assert!(error_of(r#"{"message": "  "}"#).contains("\"message\" is empty"));
        let long = format!(r#"{{"message": "{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES + 1));
        assert!(error_of(&long).contains("over 8192 bytes"));
        assert!(
            error_of(r#"{"message": "hi", "user_id": 7}"#).contains("\"user_id\" must be a string")
        );
    }

    #[test]
    fn events_are_one_json_data_line_each() {
        for (event, expected) in [
            (
                Event::Token("a\nb \"c\""),
                serde_json::json!({"type": "token", "content": "a\nb \"c\""}),
            ),
            (Event::Done, serde_json::json!({"type": "done"})),
            (
                Event::Error("boom"),
                serde_json::json!({"type": "error", "message": "boom"}),
            ),
        ] {
            let sse = event.to_sse();
            let data = sse
                .strip_prefix("data: ")
                .and_then(|d| d.strip_suffix("\n\n"))
                .expect("framed");
            assert!(!data.contains('\n'), "{sse:?}");
            assert!(data.starts_with("{\"type\":"), "{sse:?}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(data).expect("json"),
                expected
            );
        }
    }

    #[test]
    fn the_upstream_url_is_checked_with_a_clear_message() {
        assert_eq!(check(None), Ok(()));
        assert_eq!(check(Some("http://127.0.0.1:8080/v1")), Ok(()));
        assert_eq!(
            check(Some("ftp://x")),
            Err("app chat:ftp://x: the upstream must be an http:// URL".to_owned())
        );
        assert!(
            check(Some("http://"))
                .expect_err("no host")
                .contains("no host")
        );
    }

    /// A backend scripted step by step, for the streaming loop.
    struct Script(Vec<Step>, Duration);

    impl Reply for Script {
        fn next(&mut self, wait: Duration) -> Step {
            if self.0.is_empty() {
                std::thread::sleep(wait);
                return Step::Pending;
            }
            std::thread::sleep(self.1.min(wait));
            self.0.remove(0)
        }
    }

    fn drain(rx: &StreamReceiver, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match rx.next() {
                Next::Chunk(c) => out.extend(c),
                Next::Pending => std::thread::sleep(Duration::from_millis(2)),
                Next::Finished | Next::Aborted => break,
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    fn timing(keepalive_ms: u64, stall_ms: u64) -> Timing {
        Timing {
            keepalive: Duration::from_millis(keepalive_ms),
            stall: Duration::from_millis(stall_ms),
            token_interval: Duration::ZERO,
            health_interval: Duration::from_secs(3),
        }
    }

    #[test]
    fn tokens_then_done_are_relayed_in_order() {
        let (tx, rx) = crate::stream::channel(8, Duration::from_secs(5));
        let script = Script(
            vec![
                Step::Token("a".into()),
                Step::Token(" b".into()),
                Step::Done,
            ],
            Duration::ZERO,
        );
        let t = std::thread::spawn(move || stream_reply(Box::new(script), &tx, timing(1000, 5000)));
        let out = drain(&rx, Duration::from_secs(5));
        t.join().expect("join");
        assert_eq!(
            out,
            [
                Event::Token("a").to_sse(),
                Event::Token(" b").to_sse(),
                Event::Done.to_sse()
            ]
            .concat()
        );
    }

    #[test]
    fn a_silent_backend_gets_keepalives_then_a_stall_error() {
        let (tx, rx) = crate::stream::channel(8, Duration::from_secs(5));
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            stream_reply(
                Box::new(Script(vec![], Duration::ZERO)),
                &tx,
                timing(100, 1000),
            )
        });
        let out = drain(&rx, Duration::from_secs(5));
        t.join().expect("join");
        let took = started.elapsed();
        // Bounds wide enough for a loaded machine, where the producer thread
        // may wait for a CPU: the stall is never cut short, and a keepalive
        // goes out at most once per interval, at least once before it.
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let keepalives = out.matches(KEEPALIVE_COMMENT).count();
        assert!((1..=10).contains(&keepalives), "{out:?}");
        assert!(
            out.ends_with("\n\n")
                && out.contains("\"type\":\"error\"")
                && out.contains("sent nothing"),
            "{out:?}"
        );
    }

    #[test]
    fn the_reply_thread_stops_once_the_client_is_gone() {
        let (tx, rx) = crate::stream::channel(8, Duration::from_secs(5));
        let endless = Script(
            (0..10_000).map(|_| Step::Token("x".into())).collect(),
            Duration::from_millis(5),
        );
        let t =
            std::thread::spawn(move || stream_reply(Box::new(endless), &tx, timing(1000, 5000)));
        assert!(matches!(rx.next(), Next::Pending | Next::Chunk(_)));
        drop(rx);
        let started = Instant::now();
        t.join().expect("join");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
