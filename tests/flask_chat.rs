//! The Flask chat app in examples/flask_chat, run the way its README runs
//! it: the seed's gunicorn command line with `forkhorn` in front. Under
//! gunicorn's sync workers this app died of WORKER TIMEOUT mid-reply and
//! served two chats at a time; here a reply streams past the timeout, a
//! truly hung handler is still killed (and says where it hung), and twenty
//! chats stream at once on two workers while `/health` answers at once.
//!
//! Each test needs Flask in the interpreter forkhorn runs (see
//! `common/python.rs`) and returns early without it.

mod common;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::sse::{EventStream, json_post};
use common::{Client, EVENTUALLY, Server, bad, python};

// ---------------------------------------------------------------- the server

/// examples/flask_chat, where app.py lives.
fn app_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/flask_chat")
        .to_str()
        .expect("utf-8 repository path")
        .to_owned()
}

/// Held by each test while it runs: one server at a time. Each server's
/// two workers start an interpreter and import Flask after the fork, and
/// that load counts against `--timeout` (as under gunicorn without
/// --preload); three servers booting at once on a loaded 2-core machine
/// took over the 2 s of `-t 2`, and their workers were timed out before
/// they served.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A test that failed holding the lock poisons it; the next may run.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The seed's command line (examples/flask_chat/README.md) with `timeout`
/// for `--timeout 300`; the harness adds `--bind` and `--worker-tmp-dir`.
fn start(timeout: &str) -> Server {
    let dir = app_dir();
    let args = [
        "--chdir",
        &dir,
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--timeout",
        timeout,
        "--graceful-timeout",
        "30",
        "--keep-alive",
        "5",
        "--max-requests",
        "500",
        "--max-requests-jitter",
        "50",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        "--log-level",
        "info",
        "app:app",
    ];
    let server = python::start(&args, &[]);
    server.wait_for_workers(2);
    server
}

// ---------------------------------------------------------------- an SSE client

/// One event of a reply, as the page's script reads it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// `data: {"token": ...}`
    Token(String),
    /// `data: [DONE]`
    Done,
    /// `data: {"error": ...}`
    Error(String),
    /// `: keepalive`
    Comment,
}

/// A `POST /chat` whose reply is read event by event as it arrives.
type Chat = EventStream<Event>;

impl Chat {
    /// Send `POST /chat` with `body` (JSON) and read the response head.
    fn post(port: u16, body: &serde_json::Value) -> io::Result<Chat> {
        Chat::open(
            port,
            &json_post("/chat", body.to_string().as_bytes()),
            parse_event,
        )
    }
}

fn parse_event(block: &str) -> io::Result<Event> {
    if block.starts_with(':') {
        return Ok(Event::Comment);
    }
    let data = block
        .strip_prefix("data: ")
        .filter(|d| !d.contains('\n'))
        .ok_or_else(|| bad(format!("not one data line: {block:?}")))?;
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|e| bad(format!("{data:?}: {e}")))?;
    match (v["token"].as_str(), v["error"].as_str()) {
        (Some(token), None) => Ok(Event::Token(token.to_owned())),
        (None, Some(error)) => Ok(Event::Error(error.to_owned())),
        _ => Err(bad(format!("unknown event {data}"))),
    }
}

/// The reply's tokens with their arrival times.
fn tokens(events: &[(Instant, Event)]) -> Vec<(Instant, String)> {
    events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Token(t) => Some((*at, t.clone())),
            _ => None,
        })
        .collect()
}

/// `POST /chat` with `body`, read as one whole response.
fn post(port: u16, body: &serde_json::Value) -> io::Result<common::Response> {
    let mut client = Client::connect(port)?;
    client.send(&json_post("/chat", body.to_string().as_bytes()))?;
    client.read_response()
}

/// A short chat, start to `[DONE]`: the server serves chats.
fn assert_chats(server: &Server) {
    let body = serde_json::json!({"message": "still there?", "tokens": 3, "seconds": 0.3});
    let mut chat = Chat::post(server.port, &body).expect("POST /chat");
    assert_eq!(chat.status, 200);
    let events = chat.read_to_end().expect("the whole reply");
    assert_eq!(tokens(&events).len(), 3, "{events:?}");
    assert_eq!(
        events.last().map(|(_, e)| e),
        Some(&Event::Done),
        "{events:?}"
    );
}

// ---------------------------------------------------------------- the tests

#[test]
fn a_reply_streams_past_the_timeout_to_its_end() {
    if !python::has_package("flask") {
        return;
    }
    let _serial = one_at_a_time();
    // A 6 s reply under a 2 s timeout: gunicorn's sync worker would be
    // killed a third of the way through it.
    let server = start("2");
    let workers = server.workers();
    let reply_tokens = 30;
    let body = serde_json::json!({
        "message": "tell me a long story",
        "tokens": reply_tokens,
        "seconds": 6,
    });
    let started = Instant::now();
    let mut chat = Chat::post(server.port, &body).expect("POST /chat");
    assert_eq!(chat.status, 200);
    let content_type = chat.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type:?}"
    );
    let events = chat.read_to_end().expect("the whole reply");
    let took = started.elapsed();

    let arrived = tokens(&events);
    assert_eq!(arrived.len(), reply_tokens, "{events:?}");
    let text: String = arrived.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        text.starts_with("You said: tell me a long story"),
        "{text:?}"
    );
    assert_eq!(
        events.last().map(|(_, e)| e),
        Some(&Event::Done),
        "{events:?}"
    );
    // One token every 200 ms: the first well inside the timeout, the rest
    // as they are made, not all at the end.
    let (first_at, last_at) = (arrived[0].0, arrived[reply_tokens - 1].0);
    assert!(
        first_at - started < Duration::from_secs(2),
        "the first token came after {:?}",
        first_at - started
    );
    let past_timeout = arrived
        .iter()
        .filter(|(at, _)| *at - started > Duration::from_secs(2))
        .count();
    assert!(
        past_timeout >= reply_tokens / 2,
        "only {past_timeout} tokens came after the 2 s timeout"
    );
    assert!(
        last_at - first_at >= Duration::from_millis(4800),
        "tokens must arrive as made, spread over the 6 s: first to last took {:?}",
        last_at - first_at
    );
    assert!(took < Duration::from_secs(9), "the 6 s reply took {took:?}");
    // Both workers booted before the chat (`start`), so any timeout since
    // would have replaced one.
    assert_eq!(
        server.workers(),
        workers,
        "a worker was replaced during the reply; log:\n{}",
        server.log
    );
    assert_eq!(
        server
            .log
            .count(|l| l.contains("WORKER TIMEOUT") && l.contains("POST /chat")),
        0,
        "the chat was timed out; log:\n{}",
        server.log
    );
}

#[test]
fn a_hung_handler_is_killed_with_a_504_and_its_python_stack_in_the_log() {
    if !python::has_package("flask") {
        return;
    }
    let _serial = one_at_a_time();
    let server = start("2");
    let started = Instant::now();
    // The handler calls wait_for_model(), which sleeps for an hour before
    // the response starts.
    let body = serde_json::json!({"message": "hello", "hang": true});
    let resp = post(server.port, &body).expect("an answer to the hung request");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{:?}", resp.text());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "the 504 came after {took:?}, the timeout is 2 s"
    );

    // The master's line names the request (method and path).
    let timed_out = server.log.wait_for(EVENTUALLY, |l| {
        l.contains("WORKER TIMEOUT") && l.contains("POST /chat")
    });
    assert!(
        timed_out.is_some(),
        "no WORKER TIMEOUT line naming POST /chat; log:\n{}",
        server.log
    );
    // The stack the handler was stuck in, as Python prints a frame
    // (`File ".../app.py", line N, in wait_for_model`, or faulthandler's
    // `File ".../app.py", line N in wait_for_model`).
    let frame = server.log.wait_for(EVENTUALLY, |l| {
        l.contains("app.py") && l.contains("wait_for_model")
    });
    assert!(
        frame.is_some(),
        "no stack frame naming wait_for_model in app.py; log:\n{}",
        server.log
    );

    // A fresh worker takes the dead one's place, and chats go on.
    server.wait_for_workers(2);
    let health = server.get("/health").expect("GET /health");
    assert_eq!(health.status, 200, "{:?}", health.text());
    assert_chats(&server);
}

/// What one of the concurrent chats saw.
struct ChatRun {
    first_token_at: Instant,
    done_at: Instant,
    tokens: usize,
    last: Option<Event>,
}

#[test]
fn twenty_chats_stream_at_once_on_two_sync_workers_while_health_answers_at_once() {
    if !python::has_package("flask") {
        return;
    }
    let _serial = one_at_a_time();
    // Each worker pumps its text/event-stream responses on a thread, at
    // most --max-streams-per-worker at once (default 100): room for the 10
    // chats each of the 2 workers gets on average, and for all 20 on one.
    let server = start("300");
    let chats = 20;
    let reply_tokens = 20;
    let reply = serde_json::json!({"message": "hi", "tokens": reply_tokens, "seconds": 4});
    let done = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(Barrier::new(chats));
    let started = Instant::now();
    let runs: Vec<_> = (0..chats)
        .map(|_| {
            let (port, reply, done, go) = (server.port, reply.clone(), done.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let result = (|| {
                    let mut chat = Chat::post(port, &reply)?;
                    if chat.status != 200 {
                        return Err(bad(format!("status {}", chat.status)));
                    }
                    let mut first_token_at = None;
                    let mut count = 0;
                    let mut last = None;
                    while let Some(event) = chat.next_event()? {
                        if let Event::Token(_) = event {
                            first_token_at.get_or_insert_with(Instant::now);
                            count += 1;
                        }
                        last = Some(event);
                        if started.elapsed() > Duration::from_secs(60) {
                            return Err(bad("the reply did not end within a minute".to_owned()));
                        }
                    }
                    Ok(ChatRun {
                        first_token_at: first_token_at.ok_or_else(|| bad("no token".to_owned()))?,
                        done_at: Instant::now(),
                        tokens: count,
                        last,
                    })
                })();
                done.fetch_add(1, Ordering::SeqCst);
                result
            })
        })
        .collect();

    // /health, again and again while the chats stream (each check counts
    // only if no chat had finished when it was sent, so all 20 were open).
    let mut health_ms = Vec::new();
    let health_deadline = started + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) == 0 && Instant::now() < health_deadline {
        let asked = Instant::now();
        let resp = server.get("/health").expect("GET /health");
        let took = asked.elapsed();
        assert_eq!(resp.status, 200, "{:?}", resp.text());
        if done.load(Ordering::SeqCst) == 0 {
            health_ms.push(took.as_secs_f64() * 1000.0);
        }
        // Paces the checks (about 10 a second); it synchronises nothing.
        std::thread::sleep(Duration::from_millis(100));
    }

    let runs: Vec<ChatRun> = runs
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.join()
                .expect("chat thread")
                .unwrap_or_else(|e| panic!("chat {i}: {e}; log:\n{}", server.log))
        })
        .collect();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.tokens, reply_tokens, "chat {i}");
        assert_eq!(run.last, Some(Event::Done), "chat {i}");
    }
    // All at once: every chat had its first token before any had its last
    // (two at a time, as under gunicorn, would take 10 x 4 s).
    let last_first_token = runs
        .iter()
        .map(|r| r.first_token_at)
        .max()
        .expect("20 runs");
    let first_done = runs.iter().map(|r| r.done_at).min().expect("20 runs");
    assert!(
        last_first_token < first_done,
        "some chat began only {:?} after another had ended",
        last_first_token - first_done
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "20 4 s chats took {took:?}");

    // /health within 50 ms. On a loaded 2-core machine one check can lose
    // the CPU for a scheduler slice or two, so: the median under 50 ms and
    // none over 500 ms.
    assert!(
        health_ms.len() >= 10,
        "only {} health checks while all the chats streamed",
        health_ms.len()
    );
    let mut sorted = health_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let slowest = sorted[sorted.len() - 1];
    assert!(
        median < 50.0 && slowest < 500.0,
        "/health took {health_ms:.1?} ms (median {median:.1}, slowest {slowest:.1})"
    );
    assert!(
        !server.log.contains("WORKER TIMEOUT"),
        "log:\n{}",
        server.log
    );
}
