//! Supervision of Python apps: reloads that pick up new code without a
//! failed request, progress reported from Python, recycling, and workers
//! that stop on time even when the app left threads behind.
//!
//! The apps are written into a fresh directory by each test (so a test can
//! change the code under a running server); they need only the stdlib.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{EVENTUALLY, Server, fresh_dir, python, wait_until};
use nix::sys::signal::Signal;

fn write_app(dir: &Path, name: &str, source: &str) {
    std::fs::write(dir.join(format!("{name}.py")), source).expect("write the app");
}

fn serve(dir: &Path, flags: &[&str], app: &str) -> Server {
    let dir = dir.to_str().expect("utf-8 dir");
    let mut args = vec!["--chdir", dir];
    args.extend_from_slice(flags);
    args.push(app);
    python::start(&args, &[])
}

const VERSIONED: &str = r#"
VERSION = "one"
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]
"#;

#[test]
fn hup_reimports_changed_code_without_failing_a_request() {
    let dir = fresh_dir();
    write_app(&dir, "versioned", VERSIONED);
    let server = serve(&dir, &["-w", "2"], "versioned:app");
    assert_eq!(server.get("/").expect("first request").text(), "one");

    // Requests keep coming on fresh connections through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let port = server.port;
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match common::get(port, "/") {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    write_app(&dir, "versioned", &VERSIONED.replace("\"one\"", "\"two\""));
    server.signal(Signal::SIGHUP);
    let reloaded = wait_until(EVENTUALLY, || {
        (0..4).all(|_| server.get("/").is_ok_and(|r| r.text() == "two"))
    });
    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");
    assert!(
        reloaded,
        "the new code never answered after HUP; log:\n{}",
        server.log
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the reload ({} succeeded); log:\n{}",
        ok.load(Ordering::SeqCst),
        server.log
    );
}

const SLOW: &str = r#"
import time
def app(environ, start_response):
    progress = environ["forkhorn.progress"]
    for _ in range(int(environ["QUERY_STRING"] or "0")):
        time.sleep(0.25)
        if "quiet" not in environ["PATH_INFO"]:
            progress()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
"#;

#[test]
fn forkhorn_progress_keeps_a_long_computation_alive_past_the_timeout() {
    let dir = fresh_dir();
    write_app(&dir, "slow", SLOW);
    let server = serve(&dir, &["-w", "1", "-t", "1"], "slow:app");
    // 2.5 s of work under a 1 s timeout, reporting progress every 0.25 s.
    let started = Instant::now();
    let r = server.get("/working?10").expect("a reporting request");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "done"),
        "log:\n{}",
        server.log
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert!(
        !server.log.contains("WORKER TIMEOUT"),
        "log:\n{}",
        server.log
    );

    // The same work without progress is killed at the deadline.
    let r = server.get("/quiet?10").expect("a silent request");
    assert_eq!(r.status, 504, "log:\n{}", server.log);
    let line = server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("WORKER TIMEOUT"))
        .expect("a timeout line");
    assert!(line.contains("GET /quiet?10"), "{line}");
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l.contains("slow.py")
                && l.contains("in app"))
            .is_some(),
        "no Python stack in the log:\n{}",
        server.log
    );
}

const PID: &str = r#"
import os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"#;

#[test]
fn max_requests_recycles_python_workers() {
    let dir = fresh_dir();
    write_app(&dir, "pid", PID);
    let server = serve(&dir, &["-w", "1", "--max-requests", "3"], "pid:app");
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..7 {
        let r = server.get("/").expect("request");
        assert_eq!(r.status, 200, "log:\n{}", server.log);
        pids.insert(r.pid());
    }
    assert!(
        pids.len() >= 3,
        "7 requests at 3 per worker came from {pids:?}"
    );
}

const THREADS_LEFT: &str = r#"
import threading, time
def app(environ, start_response):
    # A non-daemon thread that would keep a plain Python process alive.
    threading.Thread(target=time.sleep, args=(3600,)).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"started a thread"]
"#;

#[test]
fn a_worker_with_threads_left_behind_still_stops_on_term() {
    let dir = fresh_dir();
    write_app(&dir, "threads_left", THREADS_LEFT);
    let mut server = serve(
        &dir,
        &["-w", "1", "--graceful-timeout", "5"],
        "threads_left:app",
    );
    assert_eq!(server.get("/").expect("request").status, 200);
    let worker = *server.workers().iter().next().expect("a worker");
    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(EVENTUALLY).expect("the master exits");
    assert!(status.success(), "exit {status:?}; log:\n{}", server.log);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopping took {:?}, the length of the graceful timeout: the worker waited on its threads",
        started.elapsed()
    );
    assert!(!common::is_alive(worker));
    assert!(
        !server.log.contains("SIGKILL"),
        "the worker had to be killed; log:\n{}",
        server.log
    );
}

#[test]
fn usr2_upgrades_a_preloaded_app_to_the_code_now_on_disk() {
    let dir = fresh_dir();
    write_app(&dir, "versioned", VERSIONED);
    let pidfile = dir.join("forkhorn.pid");
    let pidfile_arg = pidfile.to_str().expect("utf-8 path");
    let mut server = serve(
        &dir,
        &["-w", "2", "--preload", "--pid", pidfile_arg],
        "versioned:app",
    );
    assert_eq!(server.get("/").expect("first request").text(), "one");
    // With --preload, HUP re-forks the master's copy; a new master loads
    // the new code.
    write_app(&dir, "versioned", &VERSIONED.replace("\"one\"", "\"two\""));
    let new = server.upgrade(&pidfile);
    assert!(
        wait_until(EVENTUALLY, || {
            common::get(server.port, "/").is_ok_and(|r| r.text() == "two")
        }),
        "the new master does not serve the new code; log:\n{}",
        server.log
    );
    common::signal(new, Signal::SIGTERM);
    assert!(wait_until(EVENTUALLY, || !common::is_alive(new)));
}
