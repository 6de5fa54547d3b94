//! Python WSGI apps served by a real forkhorn (`forkhorn [flags] module:app`):
//! how the app is named and loaded, the environ it gets, wsgi.input,
//! start_response and its header rules, response framing and flushing,
//! close() on every path, errors, detached streams, worker recycling and
//! signals, wsgiref.validate, the public request corpus through a Python
//! echo app, and Flask and Django.
//!
//! The apps live in `tests/python_apps`; the plain-WSGI ones need only the
//! standard library, so those tests always run. Tests that need Flask or
//! Django return early (saying why) when the package is missing, unless
//! `FORKHORN_REQUIRE_PYTHON_PACKAGES=1` makes that a failure.
//!
//! Routes that block wait for a "gate" file the test creates; response
//! iterables with a close() write a "closed" file when it runs, so a test can
//! see from outside that forkhorn called it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::corpus::{CORPUS_OPTIONS, run_corpus, summary};
use common::{
    Client, EVENTUALLY, IO_TIMEOUT, Response, Server, TempFile, USER_AGENT, python, request,
    run_to_exit, wait_until,
};

/// The plain-WSGI app, and the same app inside wsgiref.validate.validator.
const BASIC: &str = "wsgi_basic:app";
const VALIDATED: &str = "wsgi_basic:validated_app";

/// What a request must not wait longer for while a stream holds the worker.
const AT_ONCE: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------- helpers

fn apps_dir() -> String {
    python::apps_dir()
        .to_str()
        .expect("utf-8 checkout path")
        .to_owned()
}

/// `forkhorn FLAGS --chdir tests/python_apps APP` in the test interpreter's
/// environment, plus `extra_env` for the master.
fn serve_with_env(flags: &[&str], app: &str, extra_env: &[(&str, &str)]) -> Server {
    let apps = apps_dir();
    let mut args = flags.to_vec();
    args.extend(["--chdir", &apps, app]);
    // Leave no __pycache__ in the checkout.
    let mut env = vec![("PYTHONDONTWRITEBYTECODE", "1")];
    env.extend_from_slice(extra_env);
    python::start(&args, &env)
}

fn serve(flags: &[&str], app: &str) -> Server {
    serve_with_env(flags, app, &[])
}

/// One request with `Connection: close` on a new connection.
fn send(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let mut client = Client::connect(server.port).expect("connect");
    client
        .send(&request(method, path, &all, body))
        .expect("send request");
    client
        .read_response()
        .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", server.log))
}

fn get(server: &Server, path: &str) -> Response {
    send(server, "GET", path, &[], b"")
}

/// `GET path` answers `status` with exactly `text`; the response.
fn assert_answers(server: &Server, path: &str, status: u16, text: &str) -> Response {
    let response = get(server, path);
    assert_eq!(
        response.status, status,
        "GET {path}: {response:?}; log:\n{}",
        server.log
    );
    assert_eq!(response.text(), text, "GET {path}");
    response
}

/// `first`, then `GET /` with `Connection: close` pipelined behind it.
fn then_hello(mut first: Vec<u8>) -> Vec<u8> {
    first.extend(request("GET", "/", &[("Connection", "close")], b""));
    first
}

/// Everything the server sends for `raw` until it closes the connection.
fn exchange_raw(server: &Server, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.write_all(raw).expect("send request");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read until close");
    out
}

/// `GET path` with `GET /` pipelined behind it on one connection: all the
/// server sent, as text; and split at the first blank line, the first
/// head and what follows it.
fn get_with_hello_behind(server: &Server, path: &str) -> (String, String, Vec<u8>) {
    let raw = exchange_raw(server, &then_hello(request("GET", path, &[], b"")));
    let (head, rest) = split_head(&raw);
    (String::from_utf8_lossy(&raw).into_owned(), head, rest)
}

/// A raw response split at the blank line: the head as text, and the rest.
fn split_head(raw: &[u8]) -> (String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        raw[end + 4..].to_vec(),
    )
}

/// The value of header `name` in a raw head (case-insensitive name).
fn head_header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn json_of(response: &Response) -> serde_json::Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.text()))
}

/// A path for a gate or closed-marker file, removed on drop.
fn marker(name: &str) -> TempFile {
    TempFile::new(name)
}

/// The app's response iterable wrote `closed` from its close() (`when`
/// says after what).
fn assert_close_called(server: &Server, closed: &TempFile, when: &str) {
    assert!(
        wait_until(EVENTUALLY, || closed.path().exists()),
        "close() was not called ({when}); log:\n{}",
        server.log
    );
}

/// A log line that `is_it` arrives; otherwise fail saying `missing`.
fn assert_logged(server: &Server, missing: &str, is_it: impl Fn(&str) -> bool) {
    assert!(
        server.log.wait_for(EVENTUALLY, is_it).is_some(),
        "{missing}; log:\n{}",
        server.log
    );
}

/// `GET path` gets a 500 without the app's body ("must not be sent"), and
/// a new log line that `is_it` says why.
fn assert_500_and_logged(server: &Server, path: &str, is_it: impl Fn(&str) -> bool) {
    let before = server.log.count(&is_it);
    let response = get(server, path);
    assert_eq!(response.status, 500, "{path}: {response:?}");
    assert!(
        !response.text().contains("must not be sent"),
        "{path}: the app's body went out"
    );
    assert!(
        logs_more(server, before, is_it),
        "{path}: no new log line says why; log:\n{}",
        server.log
    );
}

/// Whether more log lines than the `before` counted earlier come to
/// satisfy `is_it`: the request since then was logged.
fn logs_more(server: &Server, before: usize, is_it: impl Fn(&str) -> bool) -> bool {
    wait_until(EVENTUALLY, || server.log.count(&is_it) > before)
}

/// Whether `line` has `word` as a whole word (letters, digits and `-`),
/// ignoring case: `TE` matches `TE: trailers` but not `Listening`.
fn mentions_word(line: &str, word: &str) -> bool {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// A connection read bit by bit, for responses that arrive in stages.
struct Stream {
    socket: TcpStream,
    got: Vec<u8>,
}

impl Stream {
    fn open(server: &Server, raw: &[u8]) -> Stream {
        let mut socket = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        socket.write_all(raw).expect("send request");
        Stream {
            socket,
            got: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }

    /// Read until what arrived holds `needle`; false when `timeout` passes
    /// or the server closes first.
    fn read_until(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            if self.text().contains(needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.socket.read(&mut buf) {
                Ok(0) => return self.text().contains(needle),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return self.text().contains(needle),
            }
        }
    }

    /// Read until the server closes (or `IO_TIMEOUT`); everything that arrived.
    fn read_to_close(&mut self) -> String {
        self.socket
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = self.socket.read_to_end(&mut rest);
        self.got.extend_from_slice(&rest);
        self.text()
    }
}

/// `GET path` with Connection: close, as raw bytes.
fn raw_get(path: &str) -> Vec<u8> {
    request("GET", path, &[("Connection", "close")], b"")
}

/// A request to a route that sends a first part, then waits for its gate
/// file before it sends the rest; its response iterable's close() writes
/// the `closed` file.
struct Gated {
    stream: Stream,
    gate: TempFile,
    closed: TempFile,
}

impl Gated {
    /// `GET route` with a gate and a closed marker, read until `first`
    /// arrived while the app waits.
    fn open(server: &Server, route: &str, first: &str) -> Gated {
        let gate = marker("gate");
        let closed = marker("closed");
        let mut stream = Stream::open(
            server,
            &raw_get(&format!(
                "{route}?gate={}&closed={}",
                gate.as_str(),
                closed.as_str()
            )),
        );
        assert!(
            stream.read_until(first, EVENTUALLY),
            "{route}: {first:?} did not arrive while the app waits; got {:?}; log:\n{}",
            stream.text(),
            server.log
        );
        Gated {
            stream,
            gate,
            closed,
        }
    }

    /// Let the app go on past its wait; everything it sends to the close.
    fn open_gate(&mut self) -> String {
        std::fs::write(self.gate.path(), b"go").expect("open the gate");
        self.stream.read_to_close()
    }

    /// Open the gate: `last` arrives, the chunked body ends properly, and
    /// close() is called.
    fn finish(mut self, server: &Server, last: &str) {
        let all = self.open_gate();
        assert!(all.contains(last), "{all:?}");
        assert!(
            all.ends_with("0\r\n\r\n"),
            "the chunked body ends properly: {all:?}"
        );
        assert_close_called(server, &self.closed, "at the end of the stream");
    }
}

/// The pid of the worker serving `/pid`.
fn worker_pid(server: &Server) -> i32 {
    let response = get(server, "/pid");
    assert_eq!(response.status, 200, "GET /pid: {response:?}");
    response.pid()
}

/// Log lines that show wsgiref.validate caught a breach of PEP 3333.
fn validator_complaints(server: &Server) -> Vec<String> {
    server
        .log
        .snapshot()
        .into_iter()
        .filter(|l| {
            l.contains("AssertionError")
                || l.contains("Traceback")
                || l.contains("WSGIWarning")
                || l.contains("without being closed")
        })
        .collect()
}

// ---------------------------------------------------------------- checks shared by the plain and validated app

fn check_hello(server: &Server) {
    let response = assert_answers(server, "/", 200, "hello from wsgi\n");
    assert_eq!(response.header("Content-Type"), Some("text/plain"));
}

fn check_keep_alive(server: &Server) {
    let mut client = Client::connect(server.port).expect("connect");
    for n in 0..3 {
        let response = client
            .get("/")
            .unwrap_or_else(|e| panic!("request {n} on one connection: {e}; log:\n{}", server.log));
        assert_eq!(response.status, 200, "request {n}: {response:?}");
        assert_eq!(response.text(), "hello from wsgi\n", "request {n}");
    }
}

fn check_environ(server: &Server) {
    let mut client = Client::connect(server.port).expect("connect");
    let local_port = client
        .try_clone_stream()
        .expect("clone")
        .local_addr()
        .expect("local addr")
        .port();
    let target = "/environ/caf%C3%A9%20x?b=1&a=%20";
    client
        .send(&request(
            "GET",
            target,
            &[
                ("X-Repeat", "a"),
                ("X-Repeat", "b"),
                ("Connection", "close"),
            ],
            b"",
        ))
        .expect("send");
    let response = client.read_response().expect("response");
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", server.log);
    let env = json_of(&response);
    let expect = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        // Percent-decoded, then each byte one latin-1 character (PEP 3333).
        ("PATH_INFO", "/environ/caf\u{c3}\u{a9} x"),
        ("QUERY_STRING", "b=1&a=%20"),
        ("RAW_URI", target),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", &server.port.to_string()),
        ("HTTP_HOST", "127.0.0.1"),
        ("HTTP_USER_AGENT", USER_AGENT),
        ("HTTP_X_REPEAT", "a, b"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", &local_port.to_string()),
        ("wsgi.url_scheme", "http"),
    ];
    for (key, want) in expect {
        assert_eq!(env[key], want, "environ[{key:?}] in {env:#}");
    }
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]), "{env:#}");
    assert_eq!(env["wsgi.multithread"], false, "{env:#}");
    assert_eq!(env["wsgi.multiprocess"], true, "{env:#}");
    assert_eq!(env["wsgi.run_once"], false, "{env:#}");
    let offers = |key: &str| -> Vec<String> {
        env[key]["offers"]
            .as_array()
            .unwrap_or_else(|| panic!("environ[{key:?}] is not an object: {env:#}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    for method in ["read", "readline", "readlines", "__iter__"] {
        assert!(
            offers("wsgi.input").iter().any(|m| m == method),
            "wsgi.input lacks {method}: {env:#}"
        );
    }
    for method in ["write", "writelines", "flush"] {
        assert!(
            offers("wsgi.errors").iter().any(|m| m == method),
            "wsgi.errors lacks {method}: {env:#}"
        );
    }
    assert_eq!(env["wsgi.file_wrapper"]["callable"], true, "{env:#}");
    assert_eq!(env["forkhorn.progress"]["callable"], true, "{env:#}");
    // The app sets forkhorn.detach to ask for a detached stream; it is
    // not set to True before the app runs.
    assert!(
        env.get("forkhorn.detach").is_none_or(|v| *v == false),
        "forkhorn.detach is set before the app asked: {env:#}"
    );
    for key in ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        assert!(env.get(key).is_none(), "{key} must not be set: {env:#}");
    }
    // CGI-style keys (no dot) hold native strings.
    for (key, value) in env.as_object().expect("an object") {
        if !key.contains('.') {
            assert!(value.is_string(), "environ[{key:?}] is not a str: {value}");
        }
    }
}

fn check_post_environ(server: &Server) {
    let response = send(
        server,
        "POST",
        "/environ",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "7"),
        ],
        b"a=1&b=2",
    );
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", server.log);
    let env = json_of(&response);
    assert_eq!(env["REQUEST_METHOD"], "POST", "{env:#}");
    assert_eq!(
        env["CONTENT_TYPE"], "application/x-www-form-urlencoded",
        "{env:#}"
    );
    assert_eq!(env["CONTENT_LENGTH"], "7", "{env:#}");
    assert_eq!(env["QUERY_STRING"], "", "{env:#}");
    assert_eq!(env["PATH_INFO"], "/environ", "{env:#}");
}

const BODY: &[u8] = b"one\ntwo\nthree";

/// The pieces each reading mode must give for `BODY`.
fn expected_pieces(mode: &str) -> Vec<&'static str> {
    match mode {
        "read" => vec!["one\ntwo\nthree"],
        "readn" => vec!["one", "\ntw", "o\nt", "hre", "e"],
        "readline" | "readlines" | "iter" => vec!["one\n", "two\n", "three"],
        "readline-limit" => vec!["one\n", "two\n", "thre", "e"],
        "past" => vec!["one\ntwo\nthree", "", ""],
        other => panic!("no expectation for mode {other}"),
    }
}

fn check_input_modes(server: &Server, modes: &[&str]) {
    for &mode in modes {
        let path = format!("/input?mode={mode}");
        let with_length = send(server, "POST", &path, &[("Content-Length", "13")], BODY);
        // The same body in three chunks of other sizes.
        let chunked_body = b"4\r\none\n\r\n5\r\ntwo\nt\r\n4\r\nhree\r\n0\r\n\r\n";
        let chunked = send(
            server,
            "POST",
            &path,
            &[("Transfer-Encoding", "chunked")],
            chunked_body,
        );
        for (framing, response) in [("Content-Length", with_length), ("chunked", chunked)] {
            assert_eq!(
                response.status, 200,
                "mode {mode}, {framing} body: {response:?}; log:\n{}",
                server.log
            );
            let reply = json_of(&response);
            let pieces: Vec<&str> = reply["pieces"]
                .as_array()
                .expect("pieces")
                .iter()
                .map(|p| p.as_str().expect("a string"))
                .collect();
            assert_eq!(pieces, expected_pieces(mode), "mode {mode}, {framing} body");
        }
    }
}

fn check_length(server: &Server) {
    let response = get(server, "/length");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("Content-Length"),
        Some("11"),
        "{response:?}"
    );
    assert_eq!(response.header("Transfer-Encoding"), None, "{response:?}");
    assert_eq!(response.text(), "hello world");
}

fn check_chunked(server: &Server) {
    let response = get(server, "/chunks?n=3");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("Transfer-Encoding"),
        Some("chunked"),
        "{response:?}"
    );
    assert_eq!(response.header("Content-Length"), None, "{response:?}");
    assert_eq!(response.text(), "chunk 0\nchunk 1\nchunk 2\n");
}

fn check_http10(server: &Server) {
    // Also when the client asks to keep the connection: without a length
    // the close is the only way to end the body.
    for extra in ["", "Connection: keep-alive\r\n"] {
        check_http10_with(server, extra);
    }
}

fn check_http10_with(server: &Server, extra_headers: &str) {
    let raw = exchange_raw(
        server,
        format!("GET /chunks?n=3 HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n").as_bytes(),
    );
    let (head, body) = split_head(&raw);
    assert!(head.contains(" 200 "), "{head}");
    assert_eq!(
        head_header(&head, "Transfer-Encoding"),
        None,
        "no chunked for HTTP/1.0: {head}"
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        "chunk 0\nchunk 1\nchunk 2\n",
        "the body runs to the close"
    );
}

fn check_head(server: &Server) {
    let closed = marker("head-closed");
    let raw = exchange_raw(
        server,
        &request(
            "HEAD",
            &format!("/chunks?n=3&closed={}", closed.as_str()),
            &[("Connection", "close")],
            b"",
        ),
    );
    let (head, rest) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        rest.is_empty(),
        "HEAD got body bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_close_called(server, &closed, "after HEAD");

    let raw = exchange_raw(
        server,
        &request("HEAD", "/length", &[("Connection", "close")], b""),
    );
    let (head, rest) = split_head(&raw);
    assert_eq!(
        head_header(&head, "Content-Length").as_deref(),
        Some("11"),
        "{head}"
    );
    assert!(
        rest.is_empty(),
        "HEAD got body bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

fn check_flush(server: &Server) {
    let gated = Gated::open(server, "/block", "first\n");
    let got = gated.stream.text();
    assert!(!got.contains("second"), "{got:?}");
    gated.finish(server, "second\n");
}

fn check_close_at_end(server: &Server) {
    let closed = marker("end-closed");
    let response = get(server, &format!("/chunks?n=2&closed={}", closed.as_str()));
    assert_eq!(response.status, 200);
    assert_close_called(server, &closed, "at the end of the body");
}

fn check_write(server: &Server) {
    assert_answers(server, "/write", 200, "written then returned\n");
}

fn check_exc_info(server: &Server) {
    assert_answers(server, "/exc-info", 503, "recovered\n");
}

fn check_file_wrapper(server: &Server) {
    let file = marker("file-wrapper.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(file.path(), &content).expect("write the file");
    for (query, want) in [
        ("", &content[..]),
        ("&offset=1000", &content[1000..]),
        ("&kind=bytesio", &content[..]),
        ("&kind=bytesio&offset=1000", &content[1000..]),
    ] {
        let response = get(server, &format!("/file?path={}{query}", file.as_str()));
        assert_eq!(
            response.status, 200,
            "{query}: {:?}; log:\n{}",
            response.status, server.log
        );
        assert!(
            response.body == want,
            "{query}: {} bytes came back, {} expected",
            response.body.len(),
            want.len()
        );
    }
}

/// With one worker, an event stream that waits must not keep `/health` waiting.
fn check_stream_frees_the_worker(server: &Server, route: &str, first: &str, last: &str) {
    let gated = Gated::open(server, route, first);
    let started = Instant::now();
    let health = get(server, "/health");
    let took = started.elapsed();
    assert_eq!(health.status, 200, "{health:?}");
    assert!(
        took < AT_ONCE,
        "/health took {took:?} while {route} was open: the stream pins the worker"
    );
    let got = gated.stream.text();
    assert!(!got.contains(last), "the stream ended early: {got:?}");
    gated.finish(server, last);
}

/// Tests that each run one check against the plain app on one worker:
/// `test_name => check;`. The validated app runs the same checks in
/// `the_main_cases_pass_under_wsgiref_validate`.
macro_rules! on_the_plain_app {
    ($($name:ident => $check:ident;)*) => {$(
        #[test]
        fn $name() {
            $check(&serve(&["-w", "1"], BASIC));
        }
    )*};
}

// ---------------------------------------------------------------- naming and loading the app

#[test]
fn a_module_callable_serves_requests_on_kept_alive_connections() {
    let server = serve(&["-w", "1"], BASIC);
    check_hello(&server);
    check_keep_alive(&server);
    let missing = get(&server, "/no/such/route");
    assert_eq!(missing.status, 404, "the app's own status passes through");
}

#[test]
fn a_factory_call_builds_the_app() {
    let server = serve(&["-w", "1"], "wsgi_factory:create_app()");
    assert_answers(&server, "/", 200, "factory: default\n");
}

#[test]
fn a_factory_call_takes_literal_positional_and_keyword_arguments() {
    let server = serve(&["-w", "1"], "wsgi_factory:create_app('custom', punct='!')");
    assert_answers(&server, "/", 200, "factory: custom!\n");
}

#[test]
fn a_dotted_module_names_an_app_inside_a_package() {
    let server = serve(&["-w", "1"], "wsgi_pkg.sub:application");
    assert_answers(&server, "/", 200, "from wsgi_pkg.sub\n");
}

#[test]
fn pythonpath_puts_each_listed_directory_on_sys_path() {
    let apps = python::apps_dir();
    let dirs = format!(
        "{},{}",
        apps.join("elsewhere").display(),
        apps.join("elsewhere_too").display()
    );
    let server = serve(&["-w", "1", "--pythonpath", &dirs], "pathapp:app");
    assert_answers(&server, "/", 200, "pathapp with pathhelper\n");
}

#[test]
fn the_app_can_be_named_in_the_config_file() {
    let config = TempFile::new("wsgi.toml");
    std::fs::write(
        config.path(),
        format!(
            "wsgi_app = \"{BASIC}\"\nchdir = {:?}\nworkers = 1\n",
            apps_dir()
        ),
    )
    .expect("write config");
    let server = python::start(&["-c", config.as_str()], &[]);
    check_hello(&server);
}

#[test]
fn env_flags_set_the_workers_os_environ() {
    let server = serve(
        &[
            "-w",
            "1",
            "--env",
            "FORKHORN_TEST_GREETING=hello there",
            "--env",
            "FORKHORN_TEST_EQUATION=a=b",
        ],
        BASIC,
    );
    let greeting = get(&server, "/osenv?key=FORKHORN_TEST_GREETING");
    assert_eq!(greeting.text(), "hello there", "log:\n{}", server.log);
    let equation = get(&server, "/osenv?key=FORKHORN_TEST_EQUATION");
    assert_eq!(equation.text(), "a=b", "only the first `=` splits");
}

/// `/imported-in` answers `IMPORTER WORKER`.
fn importer_and_worker(server: &Server) -> (i32, i32) {
    let response = get(server, "/imported-in");
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", server.log);
    let text = response.text();
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{text:?}");
    (pids[0], pids[1])
}

#[test]
fn without_preload_each_worker_imports_the_app_itself() {
    let server = serve(&["-w", "1"], BASIC);
    let (importer, worker) = importer_and_worker(&server);
    assert_eq!(importer, worker, "the module was imported before the fork");
}

#[test]
fn preload_imports_the_app_once_before_the_workers_fork() {
    let server = serve(&["-w", "1", "--preload"], BASIC);
    let (importer, worker) = importer_and_worker(&server);
    assert_ne!(
        importer, worker,
        "with --preload the worker imported the app itself"
    );
    // The master, or whatever process forks the workers for it.
    let parent = common::proc_stat(worker).expect("the worker is alive").ppid;
    assert_eq!(
        importer, parent,
        "the app was imported by the process that forked the worker"
    );
}

/// `forkhorn --chdir tests/python_apps APP`, which must end by itself.
fn run_failing_app(app: &str) -> common::Finished {
    let apps = apps_dir();
    run_to_exit(
        &["-b", "127.0.0.1:0", "-w", "1", "--chdir", &apps, app],
        EVENTUALLY,
    )
}

/// The exit status for "the app could not be loaded" (README, Exit status;
/// gunicorn's too).
const EXIT_APP_LOAD_FAILED: i32 = 4;

fn assert_load_failure(app: &str, needles: &[&str]) {
    let run = run_failing_app(app);
    let log = run.stderr.join("\n");
    assert_eq!(
        run.status.code(),
        Some(EXIT_APP_LOAD_FAILED),
        "{app}: exit status {}; log:\n{log}",
        run.status
    );
    for needle in needles {
        assert!(
            log.contains(needle),
            "{app}: the log does not say {needle:?}; log:\n{log}"
        );
    }
}

#[test]
fn a_missing_module_stops_forkhorn_as_an_app_load_failure_naming_it() {
    assert_load_failure(
        "no_such_module_here:app",
        &["no_such_module_here", "ModuleNotFoundError"],
    );
}

#[test]
fn a_module_that_raises_on_import_stops_forkhorn_with_its_traceback() {
    assert_load_failure(
        "broken_at_import:app",
        &[
            "Traceback (most recent call last)",
            "broken_at_import.py",
            "RuntimeError: broken_at_import fails on purpose",
        ],
    );
}

#[test]
fn a_missing_callable_stops_forkhorn_naming_it() {
    assert_load_failure(
        "wsgi_basic:no_such_callable",
        &["wsgi_basic", "no_such_callable"],
    );
}

#[test]
fn a_factory_that_raises_or_an_object_that_is_not_callable_stops_forkhorn() {
    assert_load_failure(
        "wsgi_factory:create_app(1, 2, 3)",
        &["create_app", "TypeError"],
    );
    assert_load_failure(
        "wsgi_basic:GATE_TIMEOUT_SECS",
        &["GATE_TIMEOUT_SECS", "callable"],
    );
}

// ---------------------------------------------------------------- worker lifecycle: recycling, signals, app threads

/// `/imported-in` until `n` different workers answered (each worker
/// serves 2 requests with `--max-requests 2`): (importer, worker) pairs.
fn importers_across_recycled_workers(server: &Server, n: usize) -> Vec<(i32, i32)> {
    let mut seen: Vec<(i32, i32)> = Vec::new();
    let ok = wait_until(EVENTUALLY, || {
        seen.push(importer_and_worker(server));
        let mut workers: Vec<i32> = seen.iter().map(|&(_, w)| w).collect();
        workers.dedup();
        workers.len() >= n
    });
    assert!(
        ok,
        "fewer than {n} workers served: {seen:?}; log:\n{}",
        server.log
    );
    seen
}

#[test]
fn a_recycled_worker_imports_the_app_afresh_and_serves() {
    let server = serve(&["-w", "1", "--max-requests", "2"], BASIC);
    for (importer, worker) in importers_across_recycled_workers(&server, 3) {
        assert_eq!(
            importer, worker,
            "worker {worker} did not import the app itself"
        );
    }
}

#[test]
fn with_preload_every_recycled_worker_gets_the_preloaded_app() {
    let server = serve(&["-w", "1", "--max-requests", "2", "--preload"], BASIC);
    let seen = importers_across_recycled_workers(&server, 3);
    for (importer, worker) in seen {
        assert_ne!(importer, worker, "worker {worker} imported the app itself");
        assert_eq!(
            importer, server.master,
            "the app was not imported by the master"
        );
    }
}

#[test]
fn threads_the_app_started_run_while_the_worker_waits_for_requests() {
    let server = serve(&["-w", "1"], BASIC);
    let ticks = marker("thread-ticks");
    let response = get(&server, &format!("/thread?path={}", ticks.as_str()));
    assert_eq!(response.text(), "started\n", "{response:?}");
    // No request is in flight now: the thread runs only if the idle worker
    // does not hold the GIL.
    let lines = || {
        std::fs::read_to_string(ticks.path())
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        wait_until(EVENTUALLY, || lines() >= 30),
        "the app's thread ticked {} times while the worker was idle",
        lines()
    );
}

#[test]
fn term_lets_a_request_in_flight_finish_then_forkhorn_exits_0() {
    let mut server = serve(&["-w", "1", "--graceful-timeout", "10"], BASIC);
    let mut gated = Gated::open(&server, "/block", "first\n");
    server.signal(Signal::SIGTERM);
    let all = gated.open_gate();
    assert!(
        all.contains("second\n") && all.ends_with("0\r\n\r\n"),
        "the request in flight was cut: {all:?}; log:\n{}",
        server.log
    );
    let status = server.wait_exit(EVENTUALLY);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        server.log
    );
}

#[test]
fn hup_replaces_the_workers_and_the_app_keeps_serving() {
    let server = serve(&["-w", "1"], BASIC);
    let before = worker_pid(&server);
    server.signal(Signal::SIGHUP);
    let mut after = before;
    let replaced = wait_until(EVENTUALLY, || {
        after = worker_pid(&server);
        after != before
    });
    assert!(
        replaced,
        "still served by {before} after HUP; log:\n{}",
        server.log
    );
    check_hello(&server);
    let (importer, worker) = importer_and_worker(&server);
    assert_eq!(importer, worker, "the new worker imported the app itself");
}

// ---------------------------------------------------------------- environ

#[test]
fn the_environ_describes_the_request_as_pep_3333_says() {
    let server = serve(&["-w", "1"], BASIC);
    check_environ(&server);
    check_post_environ(&server);
}

#[test]
fn script_name_from_the_environment_is_taken_off_path_info() {
    let server = serve_with_env(&["-w", "1"], BASIC, &[("SCRIPT_NAME", "/prefix")]);
    let response = get(&server, "/prefix/environ/x?q=1");
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", server.log);
    let env = json_of(&response);
    assert_eq!(env["SCRIPT_NAME"], "/prefix", "{env:#}");
    assert_eq!(env["PATH_INFO"], "/environ/x", "{env:#}");
    assert_eq!(env["QUERY_STRING"], "q=1", "{env:#}");
    assert_eq!(env["RAW_URI"], "/prefix/environ/x?q=1", "{env:#}");
}

#[test]
fn script_name_is_taken_off_only_at_a_path_segment_boundary() {
    let server = serve_with_env(&["-w", "1"], BASIC, &[("SCRIPT_NAME", "/prefix")]);
    for (path, script_name, path_info) in [("/prefix", "/prefix", ""), ("/prefix/", "/prefix", "/")]
    {
        let response = get(&server, &format!("{path}?dump=1"));
        assert_eq!(response.status, 200, "{path}: {response:?}");
        let env = json_of(&response);
        assert_eq!(
            (env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()),
            (Some(script_name), Some(path_info)),
            "{path}: {env:#}"
        );
    }
    // `/prefixed/x` is not under `/prefix`: it may be refused (gunicorn
    // does), but an app never sees a PATH_INFO that does not start with `/`
    // (PEP 3333), and the two still spell the path.
    let response = get(&server, "/prefixed/x?dump=1");
    if response.status == 200 {
        let env = json_of(&response);
        let script_name = env["SCRIPT_NAME"].as_str().unwrap_or_default();
        let path_info = env["PATH_INFO"].as_str().unwrap_or_default();
        assert!(
            path_info.is_empty() || path_info.starts_with('/'),
            "PATH_INFO {path_info:?} (SCRIPT_NAME {script_name:?})"
        );
        assert_eq!(
            format!("{script_name}{path_info}"),
            "/prefixed/x",
            "{env:#}"
        );
    } else {
        assert!(response.status >= 400, "{response:?}");
    }
}

// ---------------------------------------------------------------- wsgi.input

#[test]
fn every_way_of_reading_wsgi_input_gives_the_whole_body() {
    let server = serve(&["-w", "1"], BASIC);
    check_input_modes(
        &server,
        &[
            "read",
            "readn",
            "readline",
            "readline-limit",
            "readlines",
            "iter",
        ],
    );
}

#[test]
fn reading_past_the_end_of_the_body_gives_empty_bytes() {
    let server = serve(&["-w", "1"], BASIC);
    check_input_modes(&server, &["past"]);
    // Nothing after the body on the connection was taken for it.
    let mut client = Client::connect(server.port).expect("connect");
    let pipelined = then_hello(request(
        "POST",
        "/input?mode=past",
        &[("Content-Length", "13")],
        BODY,
    ));
    client.send(&pipelined).expect("send");
    let first = client.read_response().expect("first response");
    assert_eq!(
        json_of(&first)["pieces"],
        serde_json::json!(expected_pieces("past"))
    );
    let second = client.read_response().expect("second response");
    assert_eq!(second.text(), "hello from wsgi\n");
}

/// A connection that has sent the head of `POST path` with a 13-byte body
/// and `Expect: 100-continue`, and not the body.
fn post_expecting_continue(server: &Server, path: &str) -> Client {
    let mut client = Client::connect(server.port).expect("connect");
    client
        .send(&request(
            "POST",
            path,
            &[
                ("Expect", "100-continue"),
                ("Content-Length", "13"),
                ("Connection", "close"),
            ],
            b"",
        ))
        .expect("send head");
    client
}

#[test]
fn expect_100_continue_is_answered_when_the_app_reads() {
    let server = serve(&["-w", "1"], BASIC);
    let mut client = post_expecting_continue(&server, "/input?mode=readn");
    let interim = client
        .read_response()
        .expect("an interim response before the body");
    assert_eq!(interim.status, 100, "{interim:?}");
    client.send(BODY).expect("send body");
    let response = client.read_response().expect("final response");
    assert_eq!(response.status, 200, "{response:?}; log:\n{}", server.log);
    assert_eq!(
        json_of(&response)["pieces"],
        serde_json::json!(expected_pieces("readn"))
    );
}

#[test]
fn expect_100_continue_is_not_sent_when_the_app_never_reads() {
    let server = serve(&["-w", "1"], BASIC);
    let mut client = post_expecting_continue(&server, "/ignore-body");
    let response = client
        .read_response()
        .expect("a response without sending the body");
    assert_eq!(response.status, 200, "the first answer: {response:?}");
    assert_eq!(response.text(), "ignored the body\n");
}

#[test]
fn a_body_over_the_request_body_limit_gets_413() {
    let server = serve(&["-w", "1", "--limit-request-body", "8"], BASIC);
    let small = send(
        &server,
        "POST",
        "/input?mode=readn",
        &[("Content-Length", "5")],
        b"small",
    );
    assert_eq!(small.status, 200, "within the limit: {small:?}");
    let declared = send(
        &server,
        "POST",
        "/input?mode=readn",
        &[("Content-Length", "13")],
        BODY,
    );
    assert_eq!(
        declared.status, 413,
        "Content-Length over the limit: {declared:?}"
    );
    let chunked = send(
        &server,
        "POST",
        "/input?mode=readn",
        &[("Transfer-Encoding", "chunked")],
        b"4\r\none\n\r\n5\r\ntwo\nt\r\n4\r\nhree\r\n0\r\n\r\n",
    );
    assert_eq!(
        chunked.status, 413,
        "chunked body over the limit: {chunked:?}"
    );
    check_hello(&server);
}

// ---------------------------------------------------------------- start_response and headers

on_the_plain_app! {
    write_output_comes_before_the_returned_iterable => check_write;
    start_response_with_exc_info_before_the_body_replaces_the_status => check_exc_info;
}

#[test]
fn start_response_may_come_from_inside_the_body_generator() {
    let server = serve(&["-w", "1"], BASIC);
    assert_answers(&server, "/lazy-start", 200, "started late\n");
}

#[test]
fn the_body_generator_may_read_wsgi_input_while_the_response_goes_out() {
    let server = serve(&["-w", "1"], BASIC);
    let with_length = send(
        &server,
        "POST",
        "/echo-lines",
        &[("Content-Length", "13")],
        BODY,
    );
    assert_eq!(
        with_length.status, 200,
        "{with_length:?}; log:\n{}",
        server.log
    );
    assert_eq!(with_length.text(), "ONE\nTWO\nTHREE", "Content-Length body");
    let chunked = send(
        &server,
        "POST",
        "/echo-lines",
        &[("Transfer-Encoding", "chunked")],
        b"4\r\none\n\r\n5\r\ntwo\nt\r\n4\r\nhree\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 200, "{chunked:?}; log:\n{}", server.log);
    assert_eq!(chunked.text(), "ONE\nTWO\nTHREE", "chunked body");
    check_hello(&server);
}

#[test]
fn a_second_start_response_without_exc_info_raises_in_the_app() {
    let server = serve(&["-w", "1"], BASIC);
    let response = get(&server, "/twice");
    assert_eq!(
        response.status, 200,
        "the first status stands: {response:?}"
    );
    assert!(
        response.text().starts_with("refused: "),
        "{:?}",
        response.text()
    );
}

#[test]
fn control_characters_in_app_headers_give_500_and_a_log_line() {
    let server = serve(&["-w", "1"], BASIC);
    for kind in [
        "value-crlf",
        "value-lf",
        "value-cr",
        "value-nul",
        "name-crlf",
        "name-colon",
    ] {
        let before = server.log.count(|l| l.contains("X-Bad"));
        let raw = exchange_raw(&server, &raw_get(&format!("/bad-header?kind={kind}")));
        let (head, body) = split_head(&raw);
        assert!(head.starts_with("HTTP/1.1 500 "), "{kind}: {head}");
        assert_eq!(
            head_header(&head, "X-Injected"),
            None,
            "{kind}: a header was injected: {head}"
        );
        assert_eq!(head_header(&head, "X-Bad"), None, "{kind}: {head}");
        assert!(
            !String::from_utf8_lossy(&body).contains("must not be sent"),
            "{kind}: the app's body went out"
        );
        assert!(
            logs_more(&server, before, |l| l.contains("X-Bad")),
            "{kind}: no log line names the header; log:\n{}",
            server.log
        );
    }
    check_hello(&server);
}

#[test]
fn hop_by_hop_headers_from_the_app_give_500_and_a_log_line() {
    let server = serve(&["-w", "1"], BASIC);
    for (name, value) in [
        ("Connection", "close"),
        ("keep-alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("TE", "trailers"),
    ] {
        assert_500_and_logged(&server, &format!("/hop?name={name}&value={value}"), |l| {
            mentions_word(l, name)
        });
    }
    check_hello(&server);
}

#[test]
fn start_response_with_exc_info_after_the_headers_reraises_and_cuts_the_body() {
    let server = serve(&["-w", "1"], BASIC);
    let closed = marker("late-closed");
    let raw = exchange_raw(
        &server,
        &raw_get(&format!("/late-exc-info?closed={}", closed.as_str())),
    );
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(
        !text.contains("did not re-raise"),
        "start_response with exc_info after the headers returned: {text:?}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the body was completed: {text:?}"
    );
    assert_close_called(&server, &closed, "after the re-raised exception");
    assert_logged(&server, "the re-raised exception is not in the log", |l| {
        l.contains("late failure")
    });
    check_hello(&server);
}

#[test]
fn repeated_response_headers_go_out_as_separate_fields() {
    let server = serve(&["-w", "1"], BASIC);
    let response = get(&server, "/set-cookies");
    assert_eq!(response.status, 200, "{response:?}");
    let cookies: Vec<&str> = response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Set-Cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        ["a=1; Path=/", "b=2; Path=/; HttpOnly"],
        "{response:?}"
    );
}

#[test]
fn response_header_values_go_out_as_latin_1_and_others_give_500() {
    let server = serve(&["-w", "1"], BASIC);
    // U+00E9 is one latin-1 byte.
    let raw = exchange_raw(&server, &raw_get("/header-value?value=caf%C3%A9"));
    let (head, _) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        raw.to_ascii_lowercase()
            .windows(15)
            .any(|w| w == b"x-value: caf\xe9\r\n"),
        "the value is not the latin-1 byte: {head:?}"
    );
    // U+20AC has no latin-1 byte (PEP 3333: header values are latin-1).
    let errors_before = server.log.count(|l| l.contains("[ERROR]"));
    let response = get(&server, "/header-value?value=%E2%82%AC");
    assert_eq!(response.status, 500, "{response:?}");
    assert!(
        logs_more(&server, errors_before, |l| l.contains("[ERROR]")),
        "no error logged; log:\n{}",
        server.log
    );
    check_hello(&server);
}

#[test]
fn an_invalid_status_from_the_app_gives_500() {
    let server = serve(&["-w", "1"], BASIC);
    for status in ["OK", "20%20OK", "2000%20OK", "abc%20OK", "099%20Low"] {
        let response = get(&server, &format!("/status?status={status}"));
        assert_eq!(response.status, 500, "status {status:?}: {response:?}");
        assert!(
            !response.text().contains("status as given"),
            "status {status:?}: the app's body went out"
        );
    }
    let teapot = get(&server, "/status?status=418%20I%27m%20a%20teapot");
    assert_eq!(teapot.status, 418, "{teapot:?}");
    check_hello(&server);
}

#[test]
fn request_header_bytes_reach_the_environ_as_latin_1() {
    let server = serve(&["-w", "1"], BASIC);
    let mut raw =
        b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Latin: caf".to_vec();
    raw.extend_from_slice(b"\xe9\r\n\r\n");
    let reply = exchange_raw(&server, &raw);
    let (head, body) = split_head(&reply);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let env: serde_json::Value = serde_json::from_slice(&body).expect("JSON environ");
    assert_eq!(env["HTTP_X_LATIN"], "caf\u{e9}", "{env:#}");
}

// ---------------------------------------------------------------- framing and flushing

on_the_plain_app! {
    an_app_content_length_is_kept_and_nothing_is_chunked => check_length;
    without_a_length_http_1_1_responses_are_chunked => check_chunked;
    without_a_length_http_1_0_responses_end_at_the_close => check_http10;
    head_gets_the_headers_and_no_body_and_close_is_called => check_head;
    each_chunk_reaches_the_client_as_soon_as_it_is_yielded => check_flush;
    close_is_called_when_the_body_ends => check_close_at_end;
}

#[test]
fn close_is_called_when_the_client_goes_away_mid_stream() {
    let server = serve(&["-w", "1"], BASIC);
    // A plain body is written by the worker; an event stream by a pump thread.
    for kind in ["plain", "sse"] {
        let closed = marker("gone-closed");
        let mut stream = Stream::open(
            &server,
            &raw_get(&format!("/forever?type={kind}&closed={}", closed.as_str())),
        );
        assert!(
            stream.read_until("xxxx", EVENTUALLY),
            "{kind}: no body; log:\n{}",
            server.log
        );
        drop(stream);
        assert_close_called(&server, &closed, &format!("{kind}, after the client left"));
        check_hello(&server);
    }
}

#[test]
fn a_body_the_app_does_not_read_does_not_leak_into_the_next_request() {
    let server = serve(&["-w", "1"], BASIC);
    let mut client = Client::connect(server.port).expect("connect");
    // The unread body looks like a request of its own.
    let smuggled = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n";
    let length = smuggled.len().to_string();
    let pipelined = then_hello(request(
        "POST",
        "/ignore-body",
        &[("Content-Length", &length)],
        smuggled,
    ));
    client.send(&pipelined).expect("send");
    let first = client.read_response().expect("first response");
    assert_eq!(first.text(), "ignored the body\n", "{first:?}");
    let second = client.read_response().expect("second response");
    assert_eq!(
        second.text(),
        "hello from wsgi\n",
        "the unread body was taken for a request"
    );
    assert!(client.is_closed_by_server(), "a third response came");
}

#[test]
fn a_header_spelled_with_underscores_cannot_pose_as_one_with_dashes() {
    let server = serve(&["-w", "1"], BASIC);
    let response = send(
        &server,
        "GET",
        "/environ",
        &[("X-Real-IP", "10.0.0.1"), ("X_Real_IP", "6.6.6.6")],
        b"",
    );
    assert_eq!(response.status, 200, "{response:?}");
    let env = json_of(&response);
    assert_eq!(env["HTTP_X_REAL_IP"], "10.0.0.1", "{env:#}");
}

#[test]
fn wsgi_file_wrapper_sends_the_whole_file() {
    let server = serve(&["-w", "1"], BASIC);
    check_file_wrapper(&server);
}

#[test]
fn an_app_sending_more_than_its_content_length_cannot_desync_the_connection() {
    let server = serve(&["-w", "1"], BASIC);
    for kind in ["list", "gen"] {
        // Two requests on one connection: whatever follows the first
        // response's 5 declared bytes must be the second response.
        let (text, head, rest) =
            get_with_hello_behind(&server, &format!("/length-lie?declared=5&kind={kind}"));
        assert_eq!(
            head_header(&head, "Content-Length").as_deref(),
            Some("5"),
            "{kind}: {text:?}"
        );
        assert!(rest.starts_with(b"hello"), "{kind}: {text:?}");
        assert!(
            !text.contains("world"),
            "{kind}: bytes past the declared length went out: {text:?}"
        );
        let after = &rest[5..];
        assert!(
            after.is_empty() || after.starts_with(b"HTTP/1.1 200 "),
            "{kind}: the connection carried something else after the body: {text:?}"
        );
    }
    check_hello(&server);
}

#[test]
fn a_content_length_from_the_app_that_is_not_a_number_gives_500() {
    let server = serve(&["-w", "1"], BASIC);
    for declared in ["abc", "-1", "1%2C1", ""] {
        let response = get(
            &server,
            &format!("/length-lie?declared={declared}&kind=list"),
        );
        assert_eq!(
            response.status, 500,
            "Content-Length {declared:?}: {response:?}"
        );
    }
    check_hello(&server);
}

#[test]
fn an_app_sending_less_than_its_content_length_gets_the_connection_closed_at_once() {
    let server = serve(&["-w", "1"], BASIC);
    for kind in ["list", "gen"] {
        let mut client = Client::connect(server.port).expect("connect");
        client
            .send(&request(
                "GET",
                &format!("/length-lie?declared=20&kind={kind}"),
                &[],
                b"",
            ))
            .expect("send");
        let started = Instant::now();
        let outcome = client.read_response();
        let took = started.elapsed();
        assert!(
            outcome.is_err(),
            "{kind}: a whole response arrived: {outcome:?}"
        );
        assert!(
            took < AT_ONCE,
            "{kind}: the client waited {took:?} for bytes that never come"
        );
    }
    check_hello(&server);
}

#[test]
fn large_bodies_pass_through_whole_both_ways() {
    let server = serve(&["-w", "1"], BASIC);
    let size = 3_000_000usize;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let want = format!("length {size}, mismatch at none\n");
    let length = size.to_string();
    let upload = send(
        &server,
        "POST",
        "/pattern",
        &[("Content-Length", &length)],
        &body,
    );
    assert_eq!(upload.text(), want, "Content-Length upload");
    let mut chunked = Vec::new();
    for piece in body.chunks(100_000) {
        chunked.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let upload = send(
        &server,
        "POST",
        "/pattern",
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(upload.text(), want, "chunked upload");

    let download = get(&server, &format!("/big?n={size}"));
    assert_eq!(download.status, 200);
    assert_eq!(download.body.len(), size, "download length");
    let first_wrong = download
        .body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 256) as u8);
    assert_eq!(first_wrong, None, "download content");
}

#[test]
fn head_of_an_event_stream_answers_at_once_without_running_the_stream() {
    let server = serve(&["-w", "1"], BASIC);
    let gate = marker("head-sse-gate-never-opened");
    let closed = marker("head-sse-closed");
    let started = Instant::now();
    let raw = exchange_raw(
        &server,
        &request(
            "HEAD",
            &format!("/sse?gate={}&closed={}", gate.as_str(), closed.as_str()),
            &[("Connection", "close")],
            b"",
        ),
    );
    let took = started.elapsed();
    let (head, rest) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(rest.is_empty(), "HEAD got body bytes: {rest:?}");
    assert!(took < AT_ONCE, "HEAD took {took:?}: the stream was run");
    assert_close_called(&server, &closed, "after HEAD");
}

#[test]
fn a_body_the_app_gives_a_204_or_304_is_not_sent() {
    let server = serve(&["-w", "1"], BASIC);
    for status in ["204%20No%20Content", "304%20Not%20Modified"] {
        // Pipelined: a body sent after the head would show up where the
        // second response should start.
        let (text, head, rest) =
            get_with_hello_behind(&server, &format!("/status?status={status}"));
        assert!(head.starts_with("HTTP/1.1 "), "{text:?}");
        assert_eq!(
            head_header(&head, "Transfer-Encoding"),
            None,
            "{status}: {head}"
        );
        assert!(
            !text.contains("status as given"),
            "{status}: the body went out: {text:?}"
        );
        assert!(
            rest.starts_with(b"HTTP/1.1 200 "),
            "{status}: the next response does not follow the head: {text:?}"
        );
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn an_exception_gives_500_logs_request_and_traceback_and_the_worker_serves_on() {
    let server = serve(&["-w", "1"], BASIC);
    let before = worker_pid(&server);
    let message = format!("boom-{}", std::process::id());
    let response = get(&server, &format!("/raise?msg={message}"));
    assert_eq!(response.status, 500, "{response:?}");
    assert!(
        !response.text().contains(&message),
        "the 500 body shows the exception to the client: {:?}",
        response.text()
    );
    let after = worker_pid(&server);
    assert_eq!(
        before, after,
        "the worker was replaced after an app exception"
    );
    for needle in [
        "GET /raise",
        "Traceback (most recent call last)",
        // The app's own frame: `File ".../wsgi_basic.py", line N, in fail`.
        "in fail",
        &format!("RuntimeError: {message}"),
    ] {
        assert_logged(&server, &format!("no log line with {needle:?}"), |l| {
            l.contains(needle)
        });
    }
}

#[test]
fn an_exception_after_the_headers_cuts_the_connection_and_close_is_called() {
    let server = serve(&["-w", "1"], BASIC);
    let closed = marker("fail-closed");
    let message = format!("late-boom-{}", std::process::id());
    let mut client = Client::connect(server.port).expect("connect");
    client
        .send(&raw_get(&format!(
            "/raise-after-headers?msg={message}&closed={}",
            closed.as_str()
        )))
        .expect("send");
    let outcome = client.read_response();
    assert!(
        outcome.is_err(),
        "a complete response arrived although the body failed: {outcome:?}"
    );
    assert_close_called(&server, &closed, "after the exception");
    assert_logged(&server, "the exception is not in the log", |l| {
        l.contains(&message)
    });
    check_hello(&server);
}

#[test]
fn no_start_response_a_str_body_or_a_none_body_gives_500_and_a_log_line() {
    let server = serve(&["-w", "1"], BASIC);
    for (path, needle) in [
        ("/no-start", "start_response"),
        ("/yield-str", "bytes"),
        ("/return-none", "NoneType"),
    ] {
        assert_500_and_logged(&server, path, |l| l.contains(needle));
    }
    check_hello(&server);
}

#[test]
fn wsgi_errors_writes_reach_the_error_log() {
    let server = serve(&["-w", "1"], BASIC);
    let message = format!("to-wsgi-errors-{}", std::process::id());
    let response = get(&server, &format!("/errors?msg={message}"));
    assert_eq!(response.status, 200);
    assert_logged(&server, "what the app wrote is not in the log", |l| {
        l.contains(&message)
    });
}

#[test]
fn a_client_that_hangs_up_mid_upload_is_not_logged_as_an_error() {
    let server = serve(&["-w", "1"], BASIC);
    let mut client = Client::connect(server.port).expect("connect");
    client
        .send(&request(
            "POST",
            "/pattern",
            &[("Content-Length", "100000")],
            &[0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ))
        .expect("send part of the body");
    client.shutdown_write().expect("hang up");
    drop(client);
    // With one worker, this is answered once the cut-off request is done.
    check_hello(&server);
    let errors: Vec<String> = server
        .log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("[ERROR]") || l.contains("Traceback"))
        .collect();
    assert!(
        errors.is_empty(),
        "a client hanging up is not an error (STYLE.md): {errors:#?}"
    );
}

// ---------------------------------------------------------------- streams and progress

#[test]
fn an_event_stream_does_not_keep_the_only_worker_from_other_requests() {
    let server = serve(&["-w", "1"], BASIC);
    check_stream_frees_the_worker(&server, "/sse", "data: first\n\n", "data: last\n\n");
}

#[test]
fn a_stream_the_app_detaches_does_not_keep_the_only_worker_from_other_requests() {
    let server = serve(&["-w", "1"], BASIC);
    check_stream_frees_the_worker(&server, "/detached", "first\n", "second\n");
}

#[test]
fn a_connection_serves_on_after_a_detached_stream_ends() {
    let server = serve(&["-w", "1"], BASIC);
    let gate = marker("open-gate");
    std::fs::write(gate.path(), b"go").expect("open the gate");
    let mut client = Client::connect(server.port).expect("connect");
    // Pipelined: the second request waits behind the stream, then is answered.
    let mut both = request("GET", &format!("/sse?gate={}", gate.as_str()), &[], b"");
    both.extend(request("GET", "/", &[], b""));
    client.send(&both).expect("send");
    let events = client.read_response().expect("the stream");
    assert_eq!(events.text(), "data: first\n\ndata: last\n\n", "{events:?}");
    let after = client.read_response().expect("the pipelined request");
    assert_eq!(after.text(), "hello from wsgi\n", "{after:?}");
    // And a request sent after both.
    let again = client.get("/").expect("a third request");
    assert_eq!(again.text(), "hello from wsgi\n", "{again:?}");
}

#[test]
fn forkhorn_progress_keeps_a_long_request_from_timing_out() {
    let server = serve(&["-w", "1", "-t", "1"], BASIC);
    assert_answers(&server, "/busy?seconds=2.5&progress=1", 200, "done\n");
    assert!(
        !server.log.contains("WORKER TIMEOUT"),
        "log:\n{}",
        server.log
    );
}

#[test]
fn a_request_over_the_timeout_gets_504_and_its_python_stack_is_logged() {
    let server = serve(&["-w", "1", "-t", "1"], BASIC);
    let response = get(&server, "/busy?seconds=2.5");
    assert_eq!(response.status, 504, "{response:?}; log:\n{}", server.log);
    assert_logged(&server, "no WORKER TIMEOUT line naming GET /busy", |l| {
        l.contains("WORKER TIMEOUT") && l.contains("GET /busy")
    });
    // faulthandler's dump: `File ".../wsgi_basic.py", line N in busy`.
    assert_logged(
        &server,
        "the Python stack of the stuck request is not in the log",
        |l| l.contains("wsgi_basic.py") && l.contains("in busy"),
    );
    check_hello(&server);
}

// ---------------------------------------------------------------- wsgiref.validate

#[test]
fn the_main_cases_pass_under_wsgiref_validate() {
    let server = serve(&["-w", "1"], VALIDATED);
    check_hello(&server);
    check_keep_alive(&server);
    check_post_environ(&server);
    // wsgiref.validate forbids read() without a size.
    check_input_modes(
        &server,
        &["readn", "readline", "readline-limit", "readlines", "iter"],
    );
    check_length(&server);
    check_chunked(&server);
    check_http10(&server);
    check_head(&server);
    check_flush(&server);
    check_close_at_end(&server);
    check_write(&server);
    check_exc_info(&server);
    check_file_wrapper(&server);
    check_stream_frees_the_worker(&server, "/sse", "data: first\n\n", "data: last\n\n");
    // A last request, so whatever the earlier ones left to log has been logged.
    check_hello(&server);
    let complaints = validator_complaints(&server);
    assert!(
        complaints.is_empty(),
        "wsgiref.validate complained: {complaints:#?}; log:\n{}",
        server.log
    );
    // Last, as it checks the most values: the validator saw this environ
    // too, or the request would have failed.
    check_environ(&server);
}

// ---------------------------------------------------------------- the public corpus through a Python echo app

fn assert_corpus_passes(app: &str, modes: &[&str]) {
    let mut flags = vec!["-w", "2"];
    flags.extend(CORPUS_OPTIONS);
    let server = serve(&flags, app);
    for &mode in modes {
        let out = run_corpus(server.port, mode, &[]);
        let (passed, failed, stdout) = summary(&out);
        assert!(
            out.status.success() && failed == 0,
            "{app}, mode {mode}: {failed} failed\n{stdout}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log
        );
        assert!(passed >= 100, "{app}, mode {mode}: only {passed} cases ran");
    }
    let tracebacks: Vec<String> = server
        .log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("Traceback") || l.contains("AssertionError"))
        .collect();
    assert!(
        tracebacks.is_empty(),
        "{app}: {tracebacks:#?}; log:\n{}",
        server.log
    );
}

#[test]
fn the_public_corpus_passes_through_a_python_echo_app_in_every_send_mode() {
    assert_corpus_passes("echo_app:app", &["all", "lines", "bytes"]);
}

#[test]
fn the_public_corpus_passes_through_the_validated_python_echo_app() {
    assert_corpus_passes("echo_app:validated_app", &["all"]);
}

// ---------------------------------------------------------------- Flask and Django

/// The greeting form of the Flask and Django apps: a name is greeted, no
/// name is refused, an unknown path is 404, and the app never raised.
fn check_greeting_form(server: &Server, form: &str, greeting: &str) {
    let greeted = form_post(server, "/greet", form);
    assert_eq!(greeted.status, 200, "{greeted:?}; log:\n{}", server.log);
    assert_eq!(greeted.text(), greeting);
    let empty = form_post(server, "/greet", "name=");
    assert_eq!(empty.status, 400, "{empty:?}");
    let missing = get(server, "/nowhere");
    assert_eq!(missing.status, 404);
    assert!(!server.log.contains("Traceback"), "log:\n{}", server.log);
}

fn form_post(server: &Server, path: &str, form: &str) -> Response {
    let length = form.len().to_string();
    send(
        server,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", &length),
        ],
        form.as_bytes(),
    )
}

#[test]
fn a_flask_app_serves_pages_json_and_a_posted_form() {
    if !python::has_package("flask") {
        return;
    }
    let server = serve(&["-w", "1"], "flask_app:app");
    assert_answers(&server, "/", 200, "Hello from Flask\n");
    let page = get(&server, "/greet");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.text().contains("<form method=\"post\""),
        "{:?}",
        page.text()
    );
    let json = get(&server, "/json?a=1");
    assert_eq!(json.status, 200, "{json:?}");
    assert_eq!(
        json_of(&json),
        serde_json::json!({"path": "/json", "args": {"a": "1"}})
    );
    check_greeting_form(&server, "name=Ada+Lovelace", "Hello, Ada Lovelace!\n");
}

#[test]
fn a_django_project_serves_pages_and_a_posted_form() {
    if !python::has_package("django") {
        return;
    }
    let server = serve(&["-w", "1"], "django_hello.wsgi:application");
    assert_answers(&server, "/", 200, "Hello from Django\n");
    check_greeting_form(&server, "name=Grace+Hopper", "Hello, Grace Hopper!\n");
}
