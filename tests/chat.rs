//! The `chat` app as a person or a browser meets it: the page, a reply
//! streaming in over Server-Sent Events, bad requests, an OpenAI-compatible
//! upstream (working, hung, gone), and reply threads that never outlive
//! their clients or hold up the worker.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::sse::{EventStream, json_post};
use common::{Client, EVENTUALLY, IO_TIMEOUT, Server, bad, run_to_exit, wait_until};

// ---------------------------------------------------------------- an SSE client

/// One event of a reply stream.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Token(String),
    Done,
    Error(String),
    /// A `:` comment line (keepalive).
    Comment(String),
}

/// A `POST /chat` whose response is read event by event as it arrives.
type Sse = EventStream<Event>;

impl Sse {
    fn post(port: u16, body: &str) -> io::Result<Sse> {
        Sse::open(port, &json_post("/chat", body.as_bytes()), parse_event)
    }
}

fn chat_body(message: &str) -> String {
    serde_json::json!({"message": message, "session_id": "test-session"}).to_string()
}

fn parse_event(block: &str) -> io::Result<Event> {
    if let Some(comment) = block.strip_prefix(':') {
        return Ok(Event::Comment(comment.trim().to_owned()));
    }
    let data = block
        .strip_prefix("data: ")
        .filter(|d| !d.contains('\n'))
        .ok_or_else(|| bad(format!("not one data line: {block:?}")))?;
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|e| bad(format!("{data:?}: {e}")))?;
    let text = |key: &str| {
        v[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("no {key} in {data}")))
    };
    match v["type"].as_str() {
        Some("token") => Ok(Event::Token(text("content")?)),
        Some("done") => Ok(Event::Done),
        Some("error") => Ok(Event::Error(text("message")?)),
        _ => Err(bad(format!("unknown event {data}"))),
    }
}

fn tokens(events: &[(Instant, Event)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Token(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// `POST /chat` with `body` as-is, read as a whole response.
fn post_raw(port: u16, body: &[u8]) -> common::Response {
    let mut client = Client::connect(port).expect("connect");
    client.send(&json_post("/chat", body)).expect("send");
    client.read_response().expect("a response")
}

fn json_of(resp: &common::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", resp.text()))
}

/// `Threads:` of `pid` in /proc/PID/status.
fn thread_count(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("worker status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

fn only_worker(server: &Server) -> i32 {
    *server
        .wait_for_workers(1)
        .iter()
        .next()
        .expect("one worker")
}

// ---------------------------------------------------------------- a fake OpenAI-compatible upstream

/// What the fake model server does with `POST /v1/chat/completions`.
#[derive(Clone)]
enum Upstream {
    /// Streams these deltas (chunked SSE), then `[DONE]`.
    Streams(Vec<&'static str>),
    /// Sends the response head, then nothing.
    Hangs,
    /// Answers `GET /v1/models` only once the flag is set; until then it
    /// reads each request and never answers it.
    SilentUntil(Arc<AtomicBool>),
}

/// A model server on 127.0.0.1 answering `/v1/models` and
/// `/v1/chat/completions`; its listener closes on drop.
struct FakeUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    /// `METHOD PATH BODY` of each request it got.
    requests: Arc<Mutex<Vec<String>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    fn start(behaviour: Upstream) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            let (stop, requests, behaviour) =
                                (stop.clone(), requests.clone(), behaviour.clone());
                            std::thread::spawn(move || {
                                let _ = serve_fake(sock, &behaviour, &stop, &requests);
                            });
                        }
                        // Polls the nonblocking listener so `stop` is seen.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakeUpstream {
            port,
            stop,
            requests,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_fake(
    sock: TcpStream,
    behaviour: &Upstream,
    stop: &AtomicBool,
    requests: &Mutex<Vec<String>>,
) -> io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut out = sock;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((_, value)) = line
            .split_once(':')
            .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    requests.lock().expect("requests lock").push(format!(
        "{method} {path} {}",
        String::from_utf8_lossy(&body)
    ));
    if let Upstream::SilentUntil(answering) = behaviour {
        let until = Instant::now() + Duration::from_secs(30);
        while !answering.load(Ordering::Relaxed) {
            if stop.load(Ordering::Relaxed) || Instant::now() > until {
                return Ok(());
            }
            // Polls the flag (and `stop`) until the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    match (method, path) {
        ("GET", "/v1/models") => {
            let list = r#"{"object":"list","data":[{"id":"fake-model","object":"model"}]}"#;
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{list}",
                list.len()
            )
        }
        ("POST", "/v1/chat/completions") => {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            match behaviour {
                Upstream::Streams(deltas) => {
                    let chunk = |out: &mut TcpStream, text: &str| -> io::Result<()> {
                        write!(out, "{:x}\r\n{text}\r\n", text.len())?;
                        out.flush()
                    };
                    // The first event arrives split over two chunks.
                    let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
                    chunk(&mut out, &role[..20])?;
                    chunk(&mut out, &role[20..])?;
                    for delta in deltas {
                        let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": null}]});
                        chunk(&mut out, &format!("data: {event}\n\n"))?;
                        // Paces the deltas like a model producing tokens.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    chunk(
                        &mut out,
                        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                    )?;
                    chunk(&mut out, "data: [DONE]\n\n")?;
                    out.write_all(b"0\r\n\r\n")
                }
                Upstream::Hangs | Upstream::SilentUntil(_) => {
                    let until = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        // Polls `stop` until the deadline above.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(())
                }
            }
        }
        _ => out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    }
}

// ---------------------------------------------------------------- the page

#[test]
fn the_page_is_a_self_contained_chat_form() {
    let server = Server::start(&["-w", "1", "chat"]);
    let resp = server.get("/").expect("GET /");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        resp.headers
    );
    let page = resp.text();
    for needle in [
        "<form id=\"chat-form\"",
        "<textarea id=\"message\"",
        "name=\"viewport\"",
        "getReader()",
        "localStorage",
        "session_id",
    ] {
        assert!(page.contains(needle), "the page has {needle}");
    }
    assert!(!page.contains("{{"), "every placeholder is filled in");
    for external in ["http://", "https://", "//fonts.", "src=\"//", "href=\"//"] {
        assert!(
            !page.contains(external),
            "the page refers to {external}: it must work offline"
        );
    }
}

// ---------------------------------------------------------------- streaming

#[test]
fn a_reply_streams_token_by_token_then_done() {
    let server = Server::start_with_env(&["-w", "1", "chat"], &[("FORKHORN_CHAT_TOKEN_MS", "50")]);
    let started = Instant::now();
    let mut sse =
        Sse::post(server.port, &chat_body("what is a prefork server?")).expect("POST /chat");
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));
    let events = sse.read_to_end().expect("the whole stream");
    let words = tokens(&events);
    assert!(words.len() >= 20, "at least 20 tokens, got {events:?}");
    assert_eq!(
        events.last().map(|(_, e)| e),
        Some(&Event::Done),
        "{events:?}"
    );
    let (first_at, last_at) = (events[0].0, events[events.len() - 2].0);
    assert!(
        first_at - started < Duration::from_secs(1),
        "the first token came after {:?}",
        first_at - started
    );
    let spread = last_at - first_at;
    assert!(
        spread >= Duration::from_millis(50 * (words.len() as u64 - 1) * 8 / 10),
        "tokens must arrive as produced, not buffered: first to last took {spread:?}"
    );
    let reply = words.concat();
    assert!(
        reply.contains("what is a prefork server?"),
        "the reply mentions the message: {reply:?}"
    );
}

#[test]
fn bad_bodies_get_400_naming_the_problem() {
    let server = Server::start(&["-w", "1", "chat"]);
    let long = format!(r#"{{"message": "{}"}}"#, "x".repeat(9000));
    let cases: [(&[u8], &str); 7] = [
        (b"hello", "not JSON"),
        (b"[\"hi\"]", "JSON object"),
        (b"{}", "no \"message\""),
        (br#"{"session_id": "s"}"#, "no \"message\""),
        (br#"{"message": 42}"#, "\"message\" must be a string"),
        (br#"{"message": ""}"#, "\"message\" is empty"),
        (long.as_bytes(), "over 8192 bytes"),
    ];
    for (body, problem) in cases {
        let resp = post_raw(server.port, body);
        assert_eq!(
            resp.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            resp.text()
        );
        assert!(
            resp.header("Content-Type")
                .is_some_and(|v| v.starts_with("application/json"))
        );
        let error = json_of(&resp)["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(
            error.contains(problem),
            "{:?} answered {error:?}, expected it to say {problem:?}",
            String::from_utf8_lossy(body)
        );
    }
    let huge = vec![b' '; 100 * 1024];
    assert_eq!(post_raw(server.port, &huge).status, 413);
    let resp = server.get("/chat").expect("GET /chat");
    assert_eq!((resp.status, resp.header("Allow")), (405, Some("POST")));
}

#[test]
fn health_names_the_worker_and_the_simulated_backend() {
    let server = Server::start(&["-w", "1", "chat"]);
    let worker = only_worker(&server);
    let resp = server.get("/health").expect("GET /health");
    assert_eq!(resp.status, 200);
    assert_eq!(
        json_of(&resp),
        serde_json::json!({"status": "ok", "pid": worker, "backend": "simulated"})
    );
}

#[test]
fn a_non_http_upstream_is_refused_at_start() {
    let run = run_to_exit(&["chat:ftp://x"], EVENTUALLY);
    assert_eq!(run.status.code(), Some(2), "{:?}", run.stderr);
    assert!(
        run.stderr
            .iter()
            .any(|l| l.contains("app chat:ftp://x: the upstream must be an http:// URL")),
        "{:?}",
        run.stderr
    );
}

// ---------------------------------------------------------------- an upstream model server

#[test]
fn an_upstream_reply_is_relayed_in_order_and_health_follows_the_upstream() {
    let deltas = vec![
        "Hel",
        "lo",
        ",",
        " wörld",
        " \u{2713}",
        " \"quoted\"\nnew line",
        ".",
    ];
    let upstream = FakeUpstream::start(Upstream::Streams(deltas.clone()));
    let url = upstream.url();
    let server = Server::start_with_env(
        &["-w", "1", &format!("chat:{url}")],
        &[("FORKHORN_CHAT_HEALTH_MS", "300")],
    );
    let (status, body) = wait_for_health(&server, |status, _| status == 200);
    assert_eq!(
        (status, body["backend"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    assert_eq!(body["upstream"], url.as_str());

    let mut sse = Sse::post(server.port, &chat_body("say hello")).expect("POST /chat");
    assert_eq!(sse.status, 200);
    let events = sse.read_to_end().expect("the whole stream");
    assert_eq!(tokens(&events), deltas, "{events:?}");
    assert_eq!(events.last().map(|(_, e)| e), Some(&Event::Done));
    let asked = upstream
        .requests()
        .into_iter()
        .find(|r| r.starts_with("POST /v1/chat/completions "))
        .expect("a completions request");
    let body: serde_json::Value =
        serde_json::from_str(asked.splitn(3, ' ').nth(2).unwrap_or_default()).expect("JSON");
    assert_eq!(
        body["model"], "fake-model",
        "the model the upstream lists: {body}"
    );
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"],
        serde_json::json!([{"role": "user", "content": "say hello"}])
    );

    drop(upstream);
    let (status, body) = wait_for_health(&server, |status, _| status != 200);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["backend"], "unreachable", "{body}");
    assert_eq!(body["upstream"], url.as_str());
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/v1/models")),
        "the error names the check: {body}"
    );
}

/// Longest a `/health` answer may take: it reads the last verdict and
/// never waits on the upstream (generous for a loaded machine; a check of
/// a hung upstream takes the whole check interval).
const HEALTH_ANSWER_LIMIT: Duration = Duration::from_millis(250);

/// Asks `/health` until `done(status, body)`, checking that every answer
/// comes at once; the last status and body.
fn wait_for_health(
    server: &Server,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let mut last = (0, serde_json::Value::Null);
    let finished = wait_until(EVENTUALLY, || {
        let asked = Instant::now();
        let resp = server.get("/health").expect("GET /health");
        let took = asked.elapsed();
        assert!(
            took < HEALTH_ANSWER_LIMIT,
            "/health took {took:?}: {}",
            resp.text()
        );
        last = (resp.status, json_of(&resp));
        done(last.0, &last.1)
    });
    assert!(finished, "/health never got there; last: {last:?}");
    last
}

#[test]
fn health_answers_at_once_while_the_upstream_hangs_and_recovers_with_it() {
    let answering = Arc::new(AtomicBool::new(false));
    let upstream = FakeUpstream::start(Upstream::SilentUntil(answering.clone()));
    let url = upstream.url();
    let server = Server::start_with_env(
        &["-w", "1", "-t", "2", &format!("chat:{url}")],
        &[("FORKHORN_CHAT_HEALTH_MS", "1000")],
    );
    let worker = only_worker(&server);

    // At once, while the first check waits (or once it timed out): 503.
    let (status, body) = wait_for_health(&server, |_, _| true);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["backend"] == "checking" || body["backend"] == "unreachable",
        "{body}"
    );
    assert_eq!(body["upstream"], url.as_str());

    // Once it has: 503, unreachable, naming the upstream and why.
    let (status, body) = wait_for_health(&server, |_, body| body["backend"] != "checking");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["backend"], "unreachable", "{body}");
    assert_eq!(body["upstream"], url.as_str());
    let why = body["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("GET /v1/models") && why.contains("did not answer in time"),
        "{body}"
    );

    // The upstream answers again: 200 at the next check.
    answering.store(true, Ordering::Relaxed);
    let (status, body) = wait_for_health(&server, |status, _| status == 200);
    assert_eq!(
        (status, body["backend"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    assert_lived_on_untimed(&server, worker);
}

#[test]
fn a_hung_upstream_gets_keepalives_then_an_error_within_the_stall_limit() {
    let upstream = FakeUpstream::start(Upstream::Hangs);
    let server = Server::start_with_env(
        &["-w", "1", &format!("chat:{}", upstream.url())],
        &[
            ("FORKHORN_CHAT_STALL_MS", "1500"),
            ("FORKHORN_CHAT_KEEPALIVE_MS", "400"),
        ],
    );
    let started = Instant::now();
    let mut sse = Sse::post(server.port, &chat_body("are you there?")).expect("POST /chat");
    assert_eq!(sse.status, 200);
    let events = sse.read_to_end().expect("the stream ends");
    let took = started.elapsed();
    assert!(
        events
            .iter()
            .any(|(_, e)| *e == Event::Comment("keepalive".to_owned())),
        "{events:?}"
    );
    let Some((error_at, Event::Error(message))) = events.last() else {
        panic!("the stream ends with an error event: {events:?}");
    };
    assert!(message.contains("sent nothing"), "{message:?}");
    let error_after = *error_at - started;
    assert!(
        error_after >= Duration::from_millis(1400) && error_after < Duration::from_millis(3000),
        "the error came after {error_after:?}, the limit is 1.5 s"
    );
    assert!(
        took < Duration::from_secs(4),
        "the stream closed after {took:?}"
    );
}

// ---------------------------------------------------------------- reply threads and the worker

#[test]
fn reply_threads_end_soon_after_their_clients_hang_up() {
    // A whole reply would take 30+ words x 200 ms = 6 s or more; the worker
    // ends a stream after 1.5 s + 2 s without a chunk.
    let server = Server::start_with_env(
        &["-w", "1", "chat"],
        &[
            ("FORKHORN_CHAT_TOKEN_MS", "200"),
            ("FORKHORN_CHAT_STALL_MS", "1500"),
            ("FORKHORN_CHAT_KEEPALIVE_MS", "500"),
        ],
    );
    let inactivity_limit = Duration::from_millis(1500 + 2000);
    let worker = only_worker(&server);
    assert_eq!(server.get("/health").expect("GET /health").status, 200);
    let idle = thread_count(worker);
    let mut most = idle;
    for i in 0..50 {
        let mut sse =
            Sse::post(server.port, &chat_body(&format!("question {i}"))).expect("POST /chat");
        assert_eq!(sse.status, 200);
        let first = sse.next_event().expect("read").expect("an event");
        assert!(matches!(first, Event::Token(_)), "{first:?}");
        most = most.max(thread_count(worker));
        sse.hang_up();
    }
    assert!(
        most > idle,
        "reply threads ran ({idle} idle, {most} at most)"
    );
    let hung_up = Instant::now();
    let settled = wait_until(inactivity_limit + Duration::from_secs(1), || {
        thread_count(worker) <= idle
    });
    assert!(
        settled,
        "{} threads {:?} after the last hang-up, {idle} when idle",
        thread_count(worker),
        hung_up.elapsed()
    );
    assert_eq!(
        server.workers().into_iter().collect::<Vec<_>>(),
        vec![worker],
        "the worker lived on"
    );
}

#[test]
fn a_long_reply_neither_times_out_the_worker_nor_blocks_it() {
    // The reply lasts at least 6 s, twice the timeout: a worker that beat
    // only between requests would be killed halfway through it.
    let server = Server::start_with_env(
        &["-w", "1", "-t", "3", "chat"],
        &[("FORKHORN_CHAT_TOKEN_MS", "300")],
    );
    let worker = only_worker(&server);
    let port = server.port;
    let started = Instant::now();
    // The reader passes each event on as it arrives, so the health checks
    // below can ride on the stream: one after each token, while the reply is
    // provably still streaming.
    let (arrived, events_so_far) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut sse = Sse::post(port, &chat_body("tell me a long story")).expect("POST /chat");
        let mut events = Vec::new();
        while let Some(event) = sse.next_event().expect("the whole stream") {
            let _ = arrived.send(event.clone());
            events.push((Instant::now(), event));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the reply did not end within a minute"
            );
        }
        events
    });
    // While the reply streams, the single worker answers at once.
    let mut health_checks = 0;
    loop {
        match events_so_far.recv_timeout(EVENTUALLY) {
            Ok(Event::Token(_)) => {}
            Ok(Event::Comment(_)) => continue,
            Ok(Event::Done | Event::Error(_)) | Err(_) => break,
        }
        let asked = Instant::now();
        let resp = server.get("/health").expect("GET /health");
        let took = asked.elapsed();
        assert_eq!(resp.status, 200);
        assert!(
            took < Duration::from_secs(1),
            "/health took {took:?} during a reply"
        );
        if !reader.is_finished() {
            health_checks += 1;
        }
    }
    let events = reader.join().expect("reader thread");
    let words = tokens(&events);
    assert!(words.len() >= 20, "{events:?}");
    assert_eq!(events.last().map(|(_, e)| e), Some(&Event::Done));
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the reply took {:?}",
        started.elapsed()
    );
    assert!(
        health_checks >= 5,
        "only {health_checks} health checks ran during the reply"
    );
    assert_lived_on_untimed(&server, worker);
}

#[test]
fn a_reply_thread_waiting_on_a_hung_upstream_ends_soon_after_its_client_hangs_up() {
    let upstream = FakeUpstream::start(Upstream::Hangs);
    let server = Server::start_with_env(
        &["-w", "1", &format!("chat:{}", upstream.url())],
        &[
            ("FORKHORN_CHAT_STALL_MS", "20000"),
            ("FORKHORN_CHAT_KEEPALIVE_MS", "300"),
        ],
    );
    let worker = only_worker(&server);
    // The app (and its health thread) is built once the worker answers.
    wait_for_health(&server, |status, _| status == 200);
    let idle = thread_count(worker);
    let mut sse = Sse::post(server.port, &chat_body("hello?")).expect("POST /chat");
    let first = sse.next_event().expect("read").expect("an event");
    assert_eq!(first, Event::Comment("keepalive".to_owned()));
    assert!(thread_count(worker) > idle, "a reply thread runs");
    sse.hang_up();
    let hung_up = Instant::now();
    // It waits on the upstream at most a keepalive interval (or 1 s) at a time.
    let settled = wait_until(Duration::from_secs(3), || thread_count(worker) <= idle);
    assert!(
        settled,
        "{} threads {:?} after the hang-up, {idle} when idle",
        thread_count(worker),
        hung_up.elapsed()
    );
}

/// The one worker was never timed out and is still the one serving.
fn assert_lived_on_untimed(server: &Server, worker: i32) {
    assert!(
        !server.log.contains("WORKER TIMEOUT"),
        "log:\n{}",
        server.log
    );
    assert_eq!(
        server.workers().into_iter().collect::<Vec<_>>(),
        vec![worker],
        "the worker lived on"
    );
}
