//! A panic in an app is logged once, in forkhorn's error-log format, with the
//! request, the panic message and where it happened; Rust's default panic
//! hook adds no second copy (issue 12).

mod common;

use common::{EVENTUALLY, Server, wait_until};

const MESSAGE: &str = "chaos /panic: a panic in the app, on purpose";

#[test]
fn an_app_panic_is_one_error_line_with_the_request_message_and_location() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let reply = server.get("/panic").expect("GET /panic");
    assert_eq!(reply.status, 500, "a panic is answered with 500");

    // The worker keeps serving, so the log line has been written by the
    // time the next request is answered.
    let after = server.get("/").expect("GET / after the panic");
    assert_eq!(after.status, 200);
    assert!(
        wait_until(EVENTUALLY, || server.log.contains(MESSAGE)),
        "no line with the panic message; log:\n{}",
        server.log
    );
    let lines = server.log.snapshot();
    let with_message: Vec<&String> = lines.iter().filter(|l| l.contains(MESSAGE)).collect();
    assert_eq!(
        with_message.len(),
        1,
        "the panic must be logged exactly once; log:\n{}",
        server.log
    );
    let line = with_message[0];
    // `[2026-11-28 13:11:49 +0000] [4121] [ERROR] app panicked on GET /panic: ... (at src/apps/chaos.rs:68:27)`
    let fields: Vec<&str> = line.splitn(4, "] ").collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert!(
        fields[0].starts_with('[') && fields[0].len() == "[2026-11-28 13:11:49 +0000".len(),
        "date: {line}"
    );
    assert!(
        fields[1]
            .strip_prefix('[')
            .is_some_and(|pid| pid.parse::<u32>().is_ok()),
        "pid: {line}"
    );
    assert_eq!(fields[2], "[ERROR", "level: {line}");
    assert!(
        fields[3].starts_with("app panicked on GET /panic: "),
        "request: {line}"
    );
    assert!(
        fields[3].contains("(at src/apps/chaos.rs:"),
        "location: {line}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("panicked at") || l.contains("RUST_BACKTRACE")),
        "Rust's default panic output leaked; log:\n{}",
        server.log
    );
}
