//! forkhorn as a library: programs built on `forkhorn::run` and
//! `Server::builder` (the examples), started for real.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use nix::sys::signal::Signal;

/// The example binaries cargo builds next to the forkhorn binary.
fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(BIN);
    let dir = bin.parent().expect("target dir");
    dir.join("examples").join(name)
}

struct Program {
    child: Child,
    log: Lines,
    port: u16,
}

impl Program {
    fn start(name: &str, args: &[&str]) -> Option<Program> {
        let path = example(name);
        if !path.exists() {
            eprintln!(
                "skipped: {} is not built (cargo test builds examples)",
                path.display()
            );
            return None;
        }
        let mut child = Command::new(path)
            .args(args)
            .env_remove("WEB_CONCURRENCY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn example");
        let log = Lines::collect_from(child.stderr.take().expect("stderr"));
        let marker = "Listening at: http://127.0.0.1:";
        let line = log
            .wait_for(EVENTUALLY, |l| l.contains(marker))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("{name} did not start:\n{log}")
            });
        let port = line[line.find(marker).expect("marker") + marker.len()..]
            .split(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        Some(Program { child, log, port })
    }

    fn stop(mut self) -> Option<i32> {
        signal(
            i32::try_from(self.child.id()).expect("pid"),
            Signal::SIGTERM,
        );
        self.child.wait().ok().and_then(|s| s.code())
    }
}

#[test]
fn a_program_built_on_forkhorn_run_serves_its_own_app_with_the_whole_command_line() {
    let tmp = fresh_dir();
    let Some(p) = Program::start(
        "hello",
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "--worker-tmp-dir",
            tmp.to_str().expect("utf-8"),
        ],
    ) else {
        return;
    };
    let r = get(p.port, "/round-trip").expect("request");
    assert_eq!(r.status, 200);
    assert!(
        r.text().starts_with("Hello from /round-trip in worker "),
        "{}",
        r.text()
    );
    assert_eq!(p.stop(), Some(0));
    let _ = std::fs::remove_dir_all(tmp);
}

#[test]
fn a_program_built_on_forkhorn_run_refuses_an_app_argument() {
    let path = example("hello");
    if !path.exists() {
        return;
    }
    let out = Command::new(path)
        .args(["-b", "127.0.0.1:0", "echo"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serves its own app; it takes no APP argument"),
        "{stderr}"
    );
}

#[test]
fn per_worker_state_is_built_after_fork_and_hooks_run_in_the_master() {
    let Some(p) = Program::start("stateful", &["127.0.0.1:0"]) else {
        return;
    };
    assert!(
        p.log
            .wait_for(EVENTUALLY, |l| l
                .contains("stateful: every worker is serving"))
            .is_some(),
        "when_ready ran:\n{}",
        p.log
    );
    // Each worker counts only its own requests.
    let mut per_worker = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let text = get(p.port, "/").expect("request").text();
        let mut words = text.split_whitespace();
        let pid: u32 = words.nth(1).and_then(|w| w.parse().ok()).expect("pid");
        let served: u64 = words.nth(2).and_then(|w| w.parse().ok()).expect("count");
        let last = per_worker.insert(pid, served).unwrap_or(0);
        assert_eq!(served, last + 1, "worker {pid}'s own counter: {text}");
    }
    let log = p.log.clone();
    assert_eq!(p.stop(), Some(0));
    assert!(
        log.wait_for(EVENTUALLY, |l| l.contains("stateful: master exiting"))
            .is_some(),
        "on_exit ran:\n{log}"
    );
}

#[test]
fn a_panic_in_the_app_is_a_500_and_the_worker_serves_on() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let before = server.get("/pid").expect("request").pid();
    let r = server.get("/panic").expect("request");
    assert_eq!(r.status, 500);
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l.contains("[ERROR]")
                && l.contains("app panicked on GET /panic"))
            .is_some(),
        "the panic is logged with its request:\n{}",
        server.log
    );
    assert_eq!(
        server.get("/pid").expect("request").pid(),
        before,
        "the same worker carries on"
    );
}

#[test]
fn the_stream_example_sends_events_as_its_producer_makes_them() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = fresh_dir();
    let Some(p) = Program::start(
        "stream",
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "--worker-tmp-dir",
            tmp.to_str().expect("utf-8"),
        ],
    ) else {
        return;
    };
    let mut events = std::net::TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    events.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut reader = BufReader::new(events);
    let mut seen = Vec::new();
    let mut line = String::new();
    while seen.len() < 2 {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "stream ended early: {seen:?}"
        );
        if let Some(tick) = line.trim().strip_prefix("data: ") {
            seen.push(tick.to_owned());
            // While the stream runs, the single worker still answers others.
            assert_eq!(get(p.port, "/").map(|r| r.status).ok(), Some(200));
        }
    }
    assert_eq!(seen, ["tick 1", "tick 2"]);
    drop(reader);
    assert_eq!(p.stop(), Some(0));
    let _ = std::fs::remove_dir_all(tmp);
}
