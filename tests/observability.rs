//! What an operator can see of a running forkhorn without reading its code:
//! `forkhorn ctl` over the control socket, Prometheus `/metrics` and
//! `/healthz` from `--metrics-bind`, and the log lines for memory limits,
//! failed boots and slow requests. Each test starts a real server.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use common::{EVENTUALLY, Server, TempFile, ctl, ctl_json, get, metrics_port, wait_until};

/// A server whose control socket is a path of this test's own: the default
/// under `$XDG_RUNTIME_DIR` would be shared by tests running side by side.
fn start_with_control(args: &[&str]) -> (Server, TempFile) {
    let socket = TempFile::new("ctl.sock");
    let mut all = vec!["--control-socket", socket.as_str()];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    (server, socket)
}

/// The rows of `ctl workers --json`.
fn worker_rows(socket: &Path) -> Vec<Value> {
    ctl_json(socket, &["workers"])["workers"]
        .as_array()
        .expect("a workers array")
        .clone()
}

/// The row of the worker with `pid`, if listed.
fn row_of(rows: &[Value], pid: i32) -> Option<&Value> {
    rows.iter().find(|r| r["pid"] == pid)
}

/// `ctl stats --json`, polled until `cond` holds; the last answer.
fn stats_when(socket: &Path, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut stats = Value::Null;
    let ok = wait_until(EVENTUALLY, || {
        stats = ctl_json(socket, &["stats"]);
        cond(&stats)
    });
    assert!(ok, "stats never showed {what}: {stats}");
    stats
}

// ---------------------------------------------------------------- /metrics via prometheus_client

const CHECK_METRICS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_metrics.py");

/// Whether Python's `prometheus_client` is there to judge our text format.
/// `.ci/run` installs it; a bare `cargo test` may not have it.
fn prometheus_client_is_installed(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED {test}: python3 with prometheus_client is not installed \
             (python3 -m pip install prometheus-client)"
        );
    }
    ok
}

/// Every sample of `/metrics` as prometheus_client parsed it, keyed
/// `name{label="value",...}`.
fn scrape(metrics_port: u16) -> BTreeMap<String, f64> {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let out = Command::new("python3")
        .arg(CHECK_METRICS)
        .arg(&url)
        .output()
        .expect("run scripts/check_metrics.py");
    assert!(
        out.status.success(),
        "{url} did not parse as Prometheus text ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check_metrics.py printed no JSON object of numbers ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:#?}", samples.keys()))
}

// ---------------------------------------------------------------- ctl workers

#[test]
fn ctl_workers_lists_every_worker_and_the_request_a_busy_one_is_serving() {
    let (server, socket) = start_with_control(&["-w", "2", "chaos"]);
    let socket = socket.path();
    let workers = server.wait_for_workers(2);

    let mut served: BTreeMap<i32, u64> = BTreeMap::new();
    for _ in 0..6 {
        let r = server.get("/pid").expect("GET /pid");
        assert_eq!(r.status, 200);
        *served.entry(r.pid()).or_default() += 1;
    }
    // A worker counts a request once its response is out, so the client may
    // be a moment ahead.
    let mut rows = Vec::new();
    let counted = wait_until(EVENTUALLY, || {
        rows = worker_rows(socket);
        rows.iter()
            .filter_map(|r| r["requests"].as_u64())
            .sum::<u64>()
            == 6
    });
    assert!(counted, "six requests counted: {rows:#?}");
    let listed: BTreeSet<i32> = rows
        .iter()
        .map(|r| i32::try_from(r["pid"].as_i64().expect("a pid")).expect("pid fits"))
        .collect();
    assert_eq!(
        listed, workers,
        "ctl workers lists exactly the worker processes"
    );
    for row in &rows {
        let pid = i32::try_from(row["pid"].as_i64().expect("a pid")).expect("pid fits");
        assert_eq!(row["state"], "idle", "{row}");
        assert_eq!(row["request"], Value::Null, "{row}");
        assert_eq!(
            row["requests"].as_u64(),
            Some(served.get(&pid).copied().unwrap_or(0)),
            "{pid} served {served:?}: {row}"
        );
    }

    let port = server.port;
    let sleeper = thread::spawn(move || get(port, "/sleep?s=3"));
    let busy_pid = server.wait_for_sleeping_worker();
    let mut first = Value::Null;
    let busy = wait_until(EVENTUALLY, || {
        let rows = worker_rows(socket);
        first = row_of(&rows, busy_pid).cloned().unwrap_or(Value::Null);
        first["state"] == "busy"
    });
    assert!(
        busy,
        "the sleeping worker {busy_pid} shows as busy: {first}"
    );
    let request = &first["request"];
    assert_eq!(request["method"], "GET", "{first}");
    assert_eq!(request["target"], "/sleep?s=3", "{first}");
    assert!(
        request["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{first}"
    );
    let elapsed_first = request["elapsed_s"].as_f64().expect("elapsed_s");
    let mut later = Value::Null;
    let grew = wait_until(EVENTUALLY, || {
        later = row_of(&worker_rows(socket), busy_pid)
            .cloned()
            .unwrap_or(Value::Null);
        later["request"]["elapsed_s"]
            .as_f64()
            .is_some_and(|e| e > elapsed_first)
    });
    assert!(grew, "elapsed grows past {elapsed_first}: {later}");

    let human = ctl(socket, &["workers"]);
    assert!(human.status.success(), "{human:?}");
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "a header and one row per worker:\n{}",
        human.stdout
    );
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header[..3],
        ["ID", "PID", "STATE"],
        "header row:\n{}",
        human.stdout
    );
    assert!(header.contains(&"REQUEST"), "header row:\n{}", human.stdout);
    // Aligned: every cell starts where its column's heading starts.
    let starts: Vec<usize> = lines[0]
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || lines[0].as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        starts.len(),
        header.len(),
        "one-word headings: {}",
        lines[0]
    );
    for row in &lines[1..] {
        let bytes = row.as_bytes();
        let aligned = starts
            .iter()
            .all(|&i| i < bytes.len() && bytes[i] != b' ' && (i == 0 || bytes[i - 1] == b' '));
        assert!(aligned, "columns line up:\n{}", human.stdout);
    }
    for pid in &workers {
        let row = lines[1..]
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(pid.to_string().as_str()))
            .unwrap_or_else(|| panic!("no row for {pid}:\n{}", human.stdout));
        if *pid == busy_pid {
            assert!(
                row.contains("busy") && row.contains("GET /sleep?s=3"),
                "{row}"
            );
        }
    }

    let response = sleeper.join().expect("client thread").expect("GET /sleep");
    assert_eq!(response.status, 200);
}

// ---------------------------------------------------------------- ctl steering

#[test]
fn ctl_worker_add_and_remove_resize_the_pool_and_shutdown_graceful_exits_0() {
    let (mut server, socket) = start_with_control(&["-w", "1", "chaos"]);
    let socket = socket.path();
    server.wait_for_workers(1);

    let added = ctl(socket, &["worker", "add", "2"]);
    assert!(added.status.success(), "{added:?}");
    let mut rows = Vec::new();
    let grew = wait_until(EVENTUALLY, || {
        rows = worker_rows(socket);
        rows.len() == 3 && rows.iter().all(|r| r["state"] == "idle")
    });
    assert!(grew, "three idle workers after `worker add 2`: {rows:#?}");
    assert_eq!(server.workers().len(), 3);

    let removed = ctl(socket, &["worker", "remove", "1"]);
    assert!(removed.status.success(), "{removed:?}");
    let shrank = wait_until(EVENTUALLY, || {
        rows = worker_rows(socket);
        rows.len() == 2
    });
    assert!(shrank, "two workers after `worker remove 1`: {rows:#?}");
    stats_when(socket, "one scale-down", |s| {
        s["worker_restarts"]["scale-down"] == 1
    });

    let stopped = ctl(socket, &["shutdown", "graceful"]);
    assert!(stopped.status.success(), "{stopped:?}");
    let status = server
        .wait_exit(EVENTUALLY)
        .unwrap_or_else(|| panic!("still running after shutdown; log:\n{}", server.log));
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log);
    assert!(!socket.exists(), "the master removes its control socket");
}

#[test]
fn the_control_socket_is_private_to_its_owner_and_unknown_commands_exit_2() {
    let (server, socket) = start_with_control(&["-w", "1", "chaos"]);
    server.wait_for_workers(1);

    let mode = std::fs::metadata(socket.path())
        .expect("the control socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);

    let unknown = ctl(socket.path(), &["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    assert!(unknown.stderr.contains("unknown command"), "{unknown:?}");
    assert_eq!(unknown.stdout, "");
}

#[test]
fn ctl_without_a_master_fails_with_one_line_naming_the_socket() {
    let run = ctl(Path::new("/nonexistent/x.sock"), &["status"]);
    assert!(!run.status.success(), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", run.stderr);
    assert!(lines[0].contains("/nonexistent/x.sock"), "{}", lines[0]);
    assert_eq!(run.stdout, "");
}

// ---------------------------------------------------------------- /metrics

#[test]
fn metrics_parse_as_prometheus_text_and_count_every_request() {
    if !prometheus_client_is_installed("metrics_parse_as_prometheus_text_and_count_every_request") {
        return;
    }
    let (server, socket) =
        start_with_control(&["-w", "2", "--metrics-bind", "127.0.0.1:0", "hello"]);
    let metrics = metrics_port(&server.log);
    server.wait_for_workers(2);

    for i in 0..100 {
        let r = server
            .get("/")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}");
    }
    stats_when(socket.path(), "100 requests", |s| s["requests"] == 100);

    let samples = scrape(metrics);
    let requests = |class: &str| {
        sample(
            &samples,
            &format!("forkhorn_requests_total{{status_class=\"{class}\"}}"),
        )
    };
    assert_eq!(requests("2xx"), 100.0);
    for class in ["1xx", "3xx", "4xx", "5xx"] {
        assert_eq!(requests(class), 0.0, "{class}");
    }
    assert_eq!(
        sample(&samples, "forkhorn_request_duration_seconds_count"),
        100.0
    );
    assert_eq!(
        sample(
            &samples,
            "forkhorn_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        100.0
    );
    assert!(sample(&samples, "forkhorn_response_bytes_total") > 0.0);
    assert_eq!(sample(&samples, "forkhorn_workers{state=\"idle\"}"), 2.0);
    assert_eq!(sample(&samples, "forkhorn_up"), 1.0);
    for (key, value) in &samples {
        if key.starts_with("forkhorn_worker_restarts_total") {
            assert_eq!(*value, 0.0, "{key}");
        }
    }
}

#[test]
fn metrics_count_a_timeout_restart_and_keep_the_dead_workers_requests() {
    if !prometheus_client_is_installed(
        "metrics_count_a_timeout_restart_and_keep_the_dead_workers_requests",
    ) {
        return;
    }
    let (server, socket) = start_with_control(&[
        "-w",
        "1",
        "-t",
        "2",
        "--metrics-bind",
        "127.0.0.1:0",
        "chaos",
    ]);
    let metrics = metrics_port(&server.log);
    let original = server.wait_for_workers(1);
    for _ in 0..10 {
        assert_eq!(server.get("/pid").expect("GET /pid").status, 200);
    }
    stats_when(socket.path(), "10 requests", |s| s["requests"] == 10);

    let port = server.port;
    let hung = thread::spawn(move || get(port, "/sleep?s=30"));
    stats_when(socket.path(), "a timeout restart", |s| {
        s["worker_restarts"]["timeout"] == 1
    });
    let _ = hung.join().expect("client thread");
    assert!(
        server.workers().is_disjoint(&original),
        "the hung worker {original:?} is gone"
    );

    let samples = scrape(metrics);
    assert_eq!(
        sample(
            &samples,
            "forkhorn_worker_restarts_total{reason=\"timeout\"}"
        ),
        1.0
    );
    for (key, value) in &samples {
        if key.starts_with("forkhorn_worker_restarts_total") && !key.contains("timeout") {
            assert_eq!(*value, 0.0, "{key}");
        }
    }
    assert_eq!(
        sample(&samples, "forkhorn_requests_total{status_class=\"2xx\"}"),
        10.0,
        "the dead worker's requests still count"
    );
}

// ---------------------------------------------------------------- memory limit

#[test]
fn a_worker_over_max_worker_memory_is_replaced_after_the_request_that_crossed_the_limit() {
    let (server, socket) = start_with_control(&[
        "-w",
        "1",
        "--max-worker-memory",
        "64",
        "--memory-check-interval",
        "0.2",
        "chaos",
    ]);
    let leaker = *server.wait_for_workers(1).first().expect("one worker");

    // 20, 40, 60 MiB stay under the limit; 80 crosses it.
    for n in 1..=4 {
        let r = server.get("/leak?mb=20").expect("GET /leak");
        assert_eq!(r.status, 200, "leak {n}: {:?}", r.text());
        assert_eq!(
            r.text().trim(),
            format!("leaked {} MiB in {leaker}", 20 * n),
            "leak {n} is served by the same worker"
        );
    }

    let mut pid = leaker;
    let replaced = wait_until(EVENTUALLY, || {
        pid = server.get("/pid").map_or(leaker, |r| r.pid());
        pid != leaker
    });
    assert!(
        replaced,
        "a new worker serves after the leak; log:\n{}",
        server.log
    );
    let warning = server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("over the limit of 64 MiB"))
        .unwrap_or_else(|| panic!("no memory warning; log:\n{}", server.log));
    assert!(warning.contains(&format!("(pid:{leaker})")), "{warning}");
    stats_when(socket.path(), "one memory restart", |s| {
        s["worker_restarts"]["memory"] == 1
    });
}

// ---------------------------------------------------------------- failed boots

#[test]
fn workers_that_keep_failing_at_boot_stop_the_master_with_status_3_after_growing_backoffs() {
    let mut server = Server::start(&[
        "--no-control-socket",
        "-w",
        "1",
        "--max-boot-failures",
        "5",
        "chaos:boot-fail",
    ]);
    let status = server
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running after a minute; log:\n{}", server.log));
    assert_eq!(status.code(), Some(3), "log:\n{}", server.log);

    // The pipe closes after the master exits; wait for its last line.
    server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("Shutting down"))
        .unwrap_or_else(|| panic!("no Shutting down line; log:\n{}", server.log));
    let lines = server.log.snapshot();

    let delays: Vec<f64> = lines
        .iter()
        .filter_map(|l| {
            let after = &l[l.find("next worker in ")? + "next worker in ".len()..];
            after.strip_suffix('s')?.parse().ok()
        })
        .collect();
    assert_eq!(
        delays.len(),
        4,
        "a backoff after each of the first four failures; log:\n{}",
        server.log
    );
    assert!(
        delays.windows(2).all(|w| w[0] < w[1]),
        "backoffs grow: {delays:?}"
    );

    let last = lines.last().expect("some log lines");
    assert!(
        last.contains("[CRITICAL]")
            && last.contains("exit code 1")
            && last.contains("fails at boot on purpose"),
        "the last line names the cause: {last}"
    );
}

// ---------------------------------------------------------------- /healthz

#[test]
fn healthz_is_200_while_serving_and_503_during_a_graceful_stop() {
    let (mut server, _socket) =
        start_with_control(&["-w", "1", "--metrics-bind", "127.0.0.1:0", "chaos"]);
    let metrics = metrics_port(&server.log);
    server.wait_for_workers(1);
    let healthz = || get(metrics, "/healthz").map(|r| r.status);
    let ready = wait_until(EVENTUALLY, || healthz().is_ok_and(|s| s == 200));
    assert!(
        ready,
        "/healthz answers 200 once a worker serves: {:?}",
        healthz()
    );

    let port = server.port;
    let sleeper = thread::spawn(move || get(port, "/sleep?s=3"));
    server.wait_for_sleeping_worker();
    server.signal(Signal::SIGTERM);
    let draining = wait_until(EVENTUALLY, || healthz().is_ok_and(|s| s == 503));
    assert!(
        draining,
        "/healthz answers 503 while the master stops: {:?}; log:\n{}",
        healthz(),
        server.log
    );
    assert!(
        !sleeper.is_finished(),
        "503 came while the /sleep was still in hand"
    );

    let response = sleeper.join().expect("client thread").expect("GET /sleep");
    assert_eq!(response.status, 200, "the request in hand finishes");
    let status = server.wait_exit(EVENTUALLY).expect("the master exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log);
}

// ---------------------------------------------------------------- slow requests

#[test]
fn a_request_slower_than_the_threshold_is_logged_as_a_warning() {
    let server = Server::start(&[
        "--no-control-socket",
        "-w",
        "1",
        "--slow-request-threshold",
        "0.5",
        "chaos",
    ]);
    server.wait_for_workers(1);
    assert_eq!(server.get("/pid").expect("GET /pid").status, 200);
    assert_eq!(server.get("/sleep?s=1").expect("GET /sleep").status, 200);

    let line = server
        .log
        .wait_for(EVENTUALLY, |l| l.contains("Slow request:"))
        .unwrap_or_else(|| panic!("no Slow request line; log:\n{}", server.log));
    assert!(
        line.contains("[WARNING]")
            && line.contains("Slow request: GET /sleep?s=1")
            && line.contains("status=200"),
        "{line}"
    );
    let slow_lines = server
        .log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("Slow request:"))
        .count();
    assert_eq!(
        slow_lines, 1,
        "the fast /pid is not logged; log:\n{}",
        server.log
    );
}

// ---------------------------------------------------------------- the timeout 504 (issue 12)

/// The value of the metric line `name` (labels included) in `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_504_of_a_timed_out_worker_is_counted_and_access_logged_with_its_duration() {
    // Regression test for issue 12: the worker writes this 504 from a signal
    // handler and exits, so the master has to count and log it.
    let (server, socket) = start_with_control(&[
        "-w",
        "1",
        "-t",
        "1",
        "--metrics-bind",
        "127.0.0.1:0",
        "--access-logfile",
        "-",
        "--access-logformat",
        "%(r)s %(s)s %(b)s %(L)s",
        "chaos",
    ]);
    let metrics = metrics_port(&server.log);
    server.wait_for_workers(1);
    assert_eq!(server.get("/pid").expect("GET /pid").status, 200);
    let response = server.get("/sleep?s=10").expect("GET /sleep");
    assert_eq!(response.status, 504, "{response:?}");

    let stats = stats_when(socket.path(), "the 504 counted", |s| {
        s["requests_by_status"]["5xx"] == 1
    });
    assert_eq!(stats["requests"], 2, "{stats}");
    assert_eq!(stats["requests_by_status"]["2xx"], 1, "{stats}");
    let text = get(metrics, "/metrics").expect("GET /metrics").text();
    assert_eq!(
        metric(&text, "forkhorn_requests_total{status_class=\"5xx\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "forkhorn_request_duration_seconds_count"),
        Some(2.0),
        "{text}"
    );

    let line = server
        .stdout
        .wait_for(EVENTUALLY, |l| l.contains(" 504 "))
        .unwrap_or_else(|| panic!("no access log line for the 504: {}", server.stdout));
    let rest = line
        .strip_prefix("GET /sleep?s=10 - 504 43 ")
        .unwrap_or_else(|| panic!("the 504's line names the request: {line}"));
    let took: f64 = rest.trim().parse().expect("a duration in seconds");
    assert!(
        (1.0..5.0).contains(&took),
        "the 504 went out after the 1 s timeout: {line}"
    );
}
