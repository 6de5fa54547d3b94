//! The prefork supervisor as an operator sees it: a real `forkhorn` is
//! started per test, sent requests and signals, and judged by its processes
//! in /proc, its exit status, its log lines and the bytes on the wire.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::Signal;

use common::{
    EVENTUALLY, RequestLoop, Server, TempFile, USER_AGENT, fresh_dir, get, is_alive,
    processes_with_arg, request, run_to_exit, wait_until,
};

/// Decoded `body_base64` of an `echo` reply.
fn echoed_body(reply: &common::Response) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("echo replied with invalid JSON ({e}): {:?}", reply.text()));
    let encoded = json["body_base64"]
        .as_str()
        .expect("body_base64 is a string");
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("body_base64 is base64")
}

/// The pid in `WORKER TIMEOUT (pid:N) ...`.
fn timed_out_pid(line: &str) -> i32 {
    let after = &line[line.find("(pid:").expect("(pid: in the line") + 5..];
    after[..after.find(')').expect(") after the pid")]
        .parse()
        .expect("a pid")
}

// ---------------------------------------------------------------- workers

#[test]
fn three_workers_run_as_children_of_the_master_and_share_the_requests() {
    let server = Server::start(&["-w", "3", "chaos"]);

    let workers = server.wait_for_workers(3);
    let mut everyone = workers.clone();
    everyone.insert(server.master);
    assert_eq!(
        server.processes(),
        everyone,
        "the master and three workers, nothing else"
    );

    // Four clients at once, so several workers are asked to accept.
    let port = server.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                (0..15)
                    .map(|_| get(port, "/pid").expect("GET /pid"))
                    .inspect(|r| assert_eq!(r.status, 200))
                    .map(|r| r.pid())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let served_by: BTreeSet<i32> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();

    assert!(
        served_by.is_subset(&workers),
        "served by {served_by:?}, workers are {workers:?}"
    );
    assert!(served_by.len() > 1, "60 requests all went to {served_by:?}");
}

// ---------------------------------------------------------------- timeouts

#[test]
fn a_hung_request_gets_504_and_its_worker_is_replaced_while_the_other_keeps_serving() {
    let server = Server::start(&["-w", "2", "-t", "2", "chaos"]);
    let original = server.wait_for_workers(2);
    let traffic = RequestLoop::start(server.port, "/pid");
    assert!(
        traffic.wait_for_more_served(5, EVENTUALLY),
        "the request loop got going"
    );

    let port = server.port;
    let hung = thread::spawn(move || {
        let sent = Instant::now();
        let response = get(port, "/sleep?s=30");
        (response, sent.elapsed())
    });
    let (response, elapsed) = hung.join().expect("client thread");

    let response = response.expect("the hung request gets a response, not a reset");
    assert_eq!(response.status, 504, "body: {:?}", response.text());
    assert!(
        elapsed <= Duration::from_secs(4),
        "504 came {elapsed:?} after the request (-t 2)"
    );
    let line = server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("WORKER TIMEOUT (pid:"))
        .unwrap_or_else(|| panic!("no WORKER TIMEOUT line; log:\n{}", server.log));
    assert!(
        line.contains("[CRITICAL]") && line.contains("GET /sleep?s=30"),
        "{line}"
    );
    let timed_out = timed_out_pid(&line);
    assert!(
        original.contains(&timed_out),
        "{timed_out} is not one of {original:?}"
    );

    let mut workers = BTreeSet::new();
    let replaced = wait_until(EVENTUALLY, || {
        workers = server.workers();
        workers.len() == 2
            && !workers.contains(&timed_out)
            && workers.iter().all(|&w| server.has_booted(w))
    });
    assert!(
        replaced,
        "workers {workers:?} after {timed_out} timed out; log:\n{}",
        server.log
    );
    assert!(
        !is_alive(timed_out),
        "the timed-out worker {timed_out} is gone"
    );
    let replacement = *workers.difference(&original).next().expect("a new worker");
    let served_by_replacement = wait_until(EVENTUALLY, || {
        server
            .get("/pid")
            .is_ok_and(|r| r.status == 200 && r.pid() == replacement)
    });
    assert!(
        served_by_replacement,
        "the new worker {replacement} serves requests"
    );

    let outcomes = traffic.finish();
    assert_eq!(
        outcomes.failures,
        Vec::<String>::new(),
        "requests beside the hung one all succeed"
    );
}

#[test]
fn a_slow_stream_that_keeps_writing_is_not_timed_out() {
    let server = Server::start(&["-w", "1", "-t", "2", "chaos"]);

    // 8 chunks 500 ms apart: 3.5 s in all, longer than -t 2.
    let response = server
        .get("/stream?chunks=8&interval_ms=500")
        .expect("GET /stream");

    assert_eq!(response.status, 200);
    let expected: String = (0..8).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(response.text(), expected);
    assert!(
        !server.log.contains("WORKER TIMEOUT"),
        "log:\n{}",
        server.log
    );
}

#[test]
fn a_stopped_worker_is_killed_and_replaced_within_timeout_plus_one_and_a_half_seconds() {
    let server = Server::start(&["-w", "1", "-t", "2", "chaos"]);
    let stopped = *server.wait_for_workers(1).first().expect("one worker");

    common::signal(stopped, Signal::SIGSTOP);
    let since_stop = Instant::now();
    // Queued in the listen backlog until a live worker accepts it.
    let response = server
        .get("/pid")
        .expect("a request sent to a stopped worker's server");
    let elapsed = since_stop.elapsed();

    assert_eq!(response.status, 200);
    assert_ne!(response.pid(), stopped, "served by a new worker");
    // The spec's bound, with no slack added: the timeout fires at most 2 s
    // after SIGSTOP (silence counts from the last beat) and SIGKILL follows
    // 1 s later, so both happen by 3.0 s.
    let bound = Duration::from_millis(3500);
    assert!(
        elapsed <= bound,
        "new worker served {elapsed:?} after SIGSTOP"
    );
    let killed = wait_until(bound.saturating_sub(since_stop.elapsed()), || {
        !is_alive(stopped)
    });
    assert!(
        killed,
        "the stopped worker {stopped} still exists {:?} after SIGSTOP; log:\n{}",
        since_stop.elapsed(),
        server.log
    );
    assert!(
        server
            .log
            .contains(&format!("WORKER TIMEOUT (pid:{stopped})")),
        "log:\n{}",
        server.log
    );
}

// ---------------------------------------------------------------- recycling

#[test]
fn workers_are_recycled_after_max_requests_plus_up_to_jitter_requests() {
    let server = Server::start(&[
        "-w",
        "1",
        "--max-requests",
        "5",
        "--max-requests-jitter",
        "3",
        "chaos",
    ]);

    let served_by: Vec<i32> = (0..40)
        .map(|i| {
            let r = server
                .get("/pid")
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status, 200, "request {i}");
            r.pid()
        })
        .collect();

    let runs: Vec<(i32, usize)> = served_by
        .chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len()))
        .collect();
    assert!(
        runs.len() >= 5,
        "40 requests at most 8 per worker: {runs:?}"
    );
    let (last, complete) = runs.split_last().expect("at least one run");
    for &(pid, len) in complete {
        assert!(
            (5..=8).contains(&len),
            "worker {pid} served {len} requests: {runs:?}"
        );
    }
    assert!(
        last.1 <= 8,
        "the last worker served {} requests: {runs:?}",
        last.1
    );
    let distinct: BTreeSet<i32> = runs.iter().map(|&(pid, _)| pid).collect();
    assert_eq!(
        distinct.len(),
        runs.len(),
        "a recycled worker never comes back: {runs:?}"
    );
}

// ---------------------------------------------------------------- stopping

#[test]
fn term_lets_the_request_in_flight_finish_then_exits_0_leaving_no_worker() {
    let mut server = Server::start(&["-w", "1", "--graceful-timeout", "10", "chaos"]);
    server.wait_for_workers(1);
    let port = server.port;
    let in_flight = thread::spawn(move || get(port, "/sleep?s=2"));
    server.wait_for_sleeping_worker();

    server.signal(Signal::SIGTERM);

    let response = in_flight
        .join()
        .expect("client thread")
        .expect("the request in flight is answered");
    assert_eq!(response.status, 200);
    let status = server
        .wait_exit(EVENTUALLY)
        .expect("the master exits after TERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log);
    assert_eq!(
        server.processes(),
        BTreeSet::new(),
        "no forkhorn process is left"
    );
}

#[test]
fn term_kills_a_request_still_running_at_the_graceful_timeout() {
    let mut server = Server::start(&["-w", "1", "--graceful-timeout", "1", "chaos"]);
    server.wait_for_workers(1);
    let port = server.port;
    let in_flight = thread::spawn(move || get(port, "/sleep?s=30"));
    server.wait_for_sleeping_worker();

    server.signal(Signal::SIGTERM);
    let since_term = Instant::now();
    let status = server.wait_exit(EVENTUALLY);
    let elapsed = since_term.elapsed();

    assert!(
        status.is_some(),
        "the master exits after TERM; log:\n{}",
        server.log
    );
    assert!(
        elapsed <= Duration::from_millis(2500),
        "exited {elapsed:?} after TERM (--graceful-timeout 1)"
    );
    assert_eq!(
        server.processes(),
        BTreeSet::new(),
        "no forkhorn process is left"
    );
    // The killed request's client sees the connection end; how is not specified.
    let _ = in_flight.join();
}

// ---------------------------------------------------------------- reload, scaling

#[test]
fn hup_replaces_every_worker_without_failing_a_request() {
    let server = Server::start(&["-w", "2", "chaos"]);
    let original = server.wait_for_workers(2);
    let traffic = RequestLoop::start(server.port, "/pid");
    assert!(
        traffic.wait_for_more_served(10, EVENTUALLY),
        "the request loop got going"
    );

    server.signal(Signal::SIGHUP);

    let mut current = BTreeSet::new();
    let replaced = wait_until(EVENTUALLY, || {
        current = server.workers();
        current.len() == 2
            && current.is_disjoint(&original)
            && current.iter().all(|&w| server.has_booted(w))
    });
    assert!(
        replaced,
        "workers {current:?} after HUP, were {original:?}; log:\n{}",
        server.log
    );
    assert!(
        traffic.wait_for_more_served(20, EVENTUALLY),
        "requests keep being served after the reload"
    );
    let outcomes = traffic.finish();
    assert_eq!(
        outcomes.failures,
        Vec::<String>::new(),
        "no request fails across a reload"
    );
    let last = *outcomes.served_by.last().expect("requests were served");
    assert!(
        current.contains(&last),
        "the last request went to {last}, not a new worker {current:?}"
    );
}

/// Issue 13: a reload applies the workers' settings, and names each setting
/// only the master holds (here backlog and umask) instead of dropping the
/// change without a word.
#[test]
fn hup_applies_a_new_timeout_and_warns_that_backlog_and_umask_need_a_restart() {
    let file = TempFile::new("reload.toml");
    let socket = TempFile::new("reload.ctl");
    std::fs::write(file.path(), "backlog = 64\numask = \"022\"\ntimeout = 30\n")
        .expect("write config");
    let server = Server::start(&[
        "-c",
        file.as_str(),
        "-w",
        "1",
        "--control-socket",
        socket.as_str(),
        "echo",
    ]);
    server.wait_for_workers(1);
    let status = common::ctl_json(socket.path(), &["status"]);
    assert_eq!(status["config"]["timeout_s"], 30.0, "{status}");

    std::fs::write(file.path(), "backlog = 128\numask = \"077\"\ntimeout = 7\n")
        .expect("rewrite config");
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l.contains("Configuration reloaded"))
            .is_some(),
        "the reload ran; log:\n{}",
        server.log
    );
    let warnings: Vec<String> = server
        .log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("takes effect after a restart or a USR2 upgrade"))
        .collect();
    let named = |setting: &str| {
        warnings
            .iter()
            .any(|l| l.contains(&format!("{setting} changed in the configuration")))
    };
    assert!(named("backlog"), "backlog is named: {warnings:?}");
    assert!(named("umask"), "umask is named: {warnings:?}");
    assert_eq!(warnings.len(), 2, "only those two: {warnings:?}");
    let status = common::ctl_json(socket.path(), &["status"]);
    assert_eq!(
        status["config"]["timeout_s"], 7.0,
        "the new timeout applies: {status}"
    );
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_one() {
    let server = Server::start(&["-w", "2", "chaos"]);
    let two = server.wait_for_workers(2);

    server.signal(Signal::SIGTTIN);
    let three = server.wait_for_workers(3);
    assert!(
        two.is_subset(&three),
        "TTIN keeps the workers it has: {two:?} -> {three:?}"
    );

    server.signal(Signal::SIGTTOU);
    let two_again = server.wait_for_workers(2);
    assert!(
        two_again.is_subset(&three),
        "TTOU starts no worker: {three:?} -> {two_again:?}"
    );
}

#[test]
fn ttou_never_goes_below_one_worker() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let only = *server.wait_for_workers(1).first().expect("one worker");

    server.signal(Signal::SIGTTOU);

    let line = server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("Handling signal: ttou"));
    assert!(
        line.is_some_and(|l| l.contains("workers wanted: 1")),
        "log:\n{}",
        server.log
    );
    let response = server.get("/pid").expect("GET /pid after TTOU");
    assert_eq!(response.pid(), only, "the one worker keeps serving");
    assert_eq!(server.workers(), BTreeSet::from([only]));
}

#[test]
fn killing_the_master_with_sigkill_takes_the_workers_with_it() {
    let server = Server::start(&["-w", "2", "chaos"]);
    let workers = server.wait_for_workers(2);

    server.signal(Signal::SIGKILL);

    let gone = wait_until(Duration::from_secs(2), || {
        workers.iter().all(|&w| !is_alive(w))
    });
    let left: Vec<i32> = workers.iter().copied().filter(|&w| is_alive(w)).collect();
    assert!(gone, "workers {left:?} outlived the master by 2 s");
    // No heartbeat file is left: they are unlinked as soon as they are made.
    // The control socket (by default in the tmp dir) is the one file a
    // SIGKILLed master cannot remove; the next start replaces it.
    let files: Vec<_> = std::fs::read_dir(&server.tmp_dir)
        .expect("tmp dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|name| name != "forkhorn.ctl")
        .collect();
    assert!(files.is_empty(), "the worker tmp dir holds {files:?}");
}

// ---------------------------------------------------------------- start-up errors

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_problem() {
    let dir = fresh_dir();
    let dir = dir.to_str().expect("utf-8 tmp dir");
    let ok_bind = ["-b", "127.0.0.1:0", "--worker-tmp-dir", dir];
    let cases: Vec<Vec<&str>> = vec![
        vec!["--frobnicate"],
        vec!["-t", "-1"],
        vec!["-w", "0"],
        vec!["-b", "127.0.0.1:0", "--worker-tmp-dir", "/nonexistent"],
        vec!["-k", "gevent"],
        vec!["-b", "nonsense:port", "--worker-tmp-dir", dir],
        vec!["nosuchapp"],
    ];

    let mut wrong = Vec::new();
    for case in cases {
        let mut args = case.clone();
        if !case.contains(&"-b") {
            args.extend(ok_bind);
        }
        let run = run_to_exit(&args, EVENTUALLY);
        let one_line = run.stderr.len() == 1
            && run.stderr[0].starts_with("forkhorn: ")
            && run.stderr[0].len() > 10;
        if run.status.code() != Some(2) || !one_line {
            wrong.push(format!(
                "{case:?}: {} with stderr {:?}",
                run.status, run.stderr
            ));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        wrong.is_empty(),
        "expected exit status 2 and one `forkhorn: ...` line:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_port_in_use_is_refused_and_nothing_is_left_running() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    let dir = fresh_dir();
    let dir = dir.to_str().expect("utf-8 tmp dir");
    let bind = format!("127.0.0.1:{port}");

    let run = run_to_exit(
        &["-w", "1", "-b", &bind, "--worker-tmp-dir", dir, "chaos"],
        EVENTUALLY,
    );

    assert!(!run.status.success(), "{}", run.status);
    assert!(
        run.stderr.iter().any(|l| l.contains("address in use")),
        "stderr: {:?}",
        run.stderr
    );
    assert_eq!(
        processes_with_arg(dir),
        BTreeSet::new(),
        "no forkhorn process is left"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- pidfile

#[test]
fn pidfile_holds_the_master_pid_and_is_removed_on_exit() {
    let pidfile = TempFile::new("master.pid");
    let mut server = Server::start(&["-w", "1", "-p", pidfile.as_str(), "chaos"]);

    let written = std::fs::read_to_string(pidfile.path()).expect("the pidfile exists");
    assert_eq!(written.trim(), server.master.to_string());

    server.signal(Signal::SIGTERM);
    let status = server
        .wait_exit(EVENTUALLY)
        .expect("the master exits after TERM");
    assert_eq!(status.code(), Some(0));
    assert!(!pidfile.path().exists(), "the pidfile is removed on exit");
}

#[test]
fn a_second_server_refuses_a_pidfile_naming_a_running_one() {
    let pidfile = TempFile::new("master.pid");
    let server = Server::start(&["-w", "1", "-p", pidfile.as_str(), "chaos"]);
    let dir = fresh_dir();
    let dir = dir.to_str().expect("utf-8 tmp dir");

    let second = run_to_exit(
        &[
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--worker-tmp-dir",
            dir,
            "-p",
            pidfile.as_str(),
            "chaos",
        ],
        EVENTUALLY,
    );

    assert!(!second.status.success(), "{}", second.status);
    assert!(
        second.stderr.iter().any(|l| l.contains(pidfile.as_str())),
        "stderr: {:?}",
        second.stderr
    );
    let written = std::fs::read_to_string(pidfile.path()).expect("the pidfile is still there");
    assert_eq!(
        written.trim(),
        server.master.to_string(),
        "the first server's pidfile is untouched"
    );
    assert_eq!(
        processes_with_arg(dir),
        BTreeSet::new(),
        "the second server left nothing running"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- access log

/// `127.0.0.1 - - [28/Nov/2026:13:11:49 +0000] "GET /x HTTP/1.1" 200 14 "-" "UA"`
fn assert_access_line(line: &str, path: &str) {
    let rest = line
        .strip_prefix("127.0.0.1 - - [")
        .unwrap_or_else(|| panic!("{line:?}"));
    let (time, rest) = rest.split_once("] ").unwrap_or_else(|| panic!("{line:?}"));
    let (date, zone) = time
        .split_once(' ')
        .unwrap_or_else(|| panic!("time in {line:?}"));
    assert_eq!(date.len(), "28/Nov/2026:13:11:49".len(), "time in {line:?}");
    assert!(
        zone.len() == 5 && (zone.starts_with('+') || zone.starts_with('-')),
        "zone in {line:?}"
    );
    assert_eq!(
        rest,
        format!("\"GET {path} HTTP/1.1\" 200 14 \"-\" \"{USER_AGENT}\"")
    );
}

#[test]
fn access_log_has_one_gunicorn_line_per_request_including_pipelined_ones() {
    let server = Server::start(&["-w", "1", "--access-logfile", "-", "hello"]);

    let single = server.get("/x").expect("GET /x");
    let mut client = server.connect().expect("connect");
    let pipelined = [
        request("GET", "/a", &[], b""),
        request("GET", "/b", &[("Connection", "close")], b""),
    ];
    client
        .send(&pipelined.concat())
        .expect("send two requests at once");
    let a = client.read_response().expect("response to /a");
    let b = client.read_response().expect("response to /b");
    // Served after the others by the one worker, so its line comes last.
    let last = server.get("/end").expect("GET /end");

    for r in [&single, &a, &b, &last] {
        assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!\n"));
    }
    assert!(
        server.stdout.wait_for_count(4, EVENTUALLY),
        "stdout:\n{}",
        server.stdout
    );
    let lines = server.stdout.snapshot();
    assert_eq!(lines.len(), 4, "stdout:\n{}", server.stdout);
    for (line, path) in lines.iter().zip(["/x", "/a", "/b", "/end"]) {
        assert_access_line(line, path);
    }
}

// ---------------------------------------------------------------- HTTP through a worker

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let mut client = server.connect().expect("connect");

    let first = client.get("/pid").expect("first request");
    let second = client
        .get("/pid")
        .expect("second request on the same connection");

    assert_eq!((first.status, second.status), (200, 200));
    assert_ne!(
        first
            .header("Connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
    assert_eq!(first.pid(), second.pid());
}

#[test]
fn an_http_1_0_request_gets_its_response_and_the_connection_closed() {
    let server = Server::start(&["-w", "1", "hello"]);
    let mut client = server.connect().expect("connect");

    client
        .send(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let response = client.read_response().expect("response");

    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "Hello, World!\n")
    );
    assert!(
        client.is_closed_by_server(),
        "HTTP/1.0 without keep-alive closes"
    );
}

#[test]
fn echo_returns_a_content_length_body_and_a_chunked_body() {
    let server = Server::start(&["-w", "1", "echo"]);

    let mut client = server.connect().expect("connect");
    client
        .send(&request(
            "POST",
            "/upload",
            &[("Content-Length", "11")],
            b"hello world",
        ))
        .expect("send");
    let sized = client.read_response().expect("response to the sized body");
    client
        .send(&request(
            "POST",
            "/upload",
            &[("Transfer-Encoding", "chunked"), ("Connection", "close")],
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ))
        .expect("send");
    let chunked = client
        .read_response()
        .expect("response to the chunked body");

    assert_eq!(sized.status, 200, "{:?}", sized.text());
    assert_eq!(echoed_body(&sized), b"hello world");
    assert_eq!(chunked.status, 200, "{:?}", chunked.text());
    assert_eq!(echoed_body(&chunked), b"hello world");
}

#[test]
fn expect_100_continue_gets_100_continue_before_the_final_response() {
    let server = Server::start(&["-w", "1", "echo"]);
    let mut client = server.connect().expect("connect");

    let head = [
        ("Content-Length", "5"),
        ("Expect", "100-continue"),
        ("Connection", "close"),
    ];
    client
        .send(&request("POST", "/", &head, b""))
        .expect("send the head");
    let interim = client.read_response().expect("an interim response");
    client.send(b"hello").expect("send the body");
    let last = client.read_response().expect("the final response");

    assert_eq!(
        (interim.version.as_str(), interim.status),
        ("HTTP/1.1", 100)
    );
    assert_eq!(last.status, 200, "{:?}", last.text());
    assert_eq!(echoed_body(&last), b"hello");
}

#[test]
fn a_malformed_request_line_gets_400_and_a_close_and_the_worker_serves_on() {
    let server = Server::start(&["-w", "1", "chaos"]);
    let before = server.get("/pid").expect("GET /pid").pid();
    let mut client = server.connect().expect("connect");

    client.send(b"GARBAGE\r\n\r\n").expect("send");
    let response = client.read_response().expect("a response to garbage");

    assert_eq!(response.status, 400, "{:?}", response.text());
    assert!(
        client.is_closed_by_server(),
        "the connection is closed after a 400"
    );
    let after = server
        .get("/pid")
        .expect("GET /pid after the bad request")
        .pid();
    assert_eq!(after, before, "the same worker serves on");
}

// ---------------------------------------------------------------- accept balance

/// Open `n` connections, each sending `GET /pid` at once (a burst, as a load
/// balancer filling its pool does), then read every answer; the connections
/// stay open. Returns the clients and how many each worker holds.
fn burst_of_keep_alive_connections(
    server: &Server,
    n: usize,
) -> (Vec<common::Client>, std::collections::BTreeMap<i32, usize>) {
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut client = server.connect().expect("connect");
        client
            .send(&request("GET", "/pid", &[], b""))
            .expect("send GET /pid");
        clients.push(client);
    }
    let mut held = std::collections::BTreeMap::new();
    for client in &mut clients {
        let response = client.read_response().expect("a response to GET /pid");
        assert_eq!(response.status, 200, "{:?}", response.text());
        *held.entry(response.pid()).or_insert(0) += 1;
    }
    (clients, held)
}

#[test]
fn a_burst_of_keep_alive_connections_is_shared_between_workers() {
    let server = Server::start(&["-w", "2", "chaos"]);
    let workers = server.wait_for_workers(2);

    let (_clients, held) = burst_of_keep_alive_connections(&server, 16);

    // A worker leaves a connection to a sibling holding 2 fewer, so 9/7 is
    // the usual worst; the margin absorbs a sibling that was not scheduled
    // in time on a loaded machine. Without the balance, 16/0 and 14/2 are
    // common here.
    let counts: Vec<usize> = workers
        .iter()
        .map(|w| held.get(w).copied().unwrap_or(0))
        .collect();
    assert!(
        counts.iter().all(|&c| c >= 5),
        "16 keep-alive connections split {counts:?} between workers {workers:?}"
    );
}

#[test]
fn a_stopped_worker_does_not_hold_up_new_connections() {
    let server = Server::start(&["-w", "2", "chaos"]);
    let workers = server.wait_for_workers(2);
    let (_clients, held) = burst_of_keep_alive_connections(&server, 8);
    // Stop the worker holding fewer connections: the other one would leave
    // new connections to it, and must stop waiting on it.
    let stopped = *workers
        .iter()
        .min_by_key(|w| held.get(w).copied().unwrap_or(0))
        .expect("two workers");
    common::signal(stopped, Signal::SIGSTOP);

    let started = Instant::now();
    let (_more, more_held) = burst_of_keep_alive_connections(&server, 6);
    let took = started.elapsed();
    common::signal(stopped, Signal::SIGCONT);

    assert_eq!(
        more_held.get(&stopped),
        None,
        "a stopped worker answered: {more_held:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "6 new connections took {took:?} beside a stopped worker"
    );
}
