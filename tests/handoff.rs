//! Connections never wait behind a busy worker (issue 12 §2), and a stopping
//! server refuses new connections at once (issue 12 §3): a real `forkhorn`
//! judged by the bytes and timings its clients see.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::{Client, EVENTUALLY, Server, is_in_sleep_syscall, request, wait_until};

/// The bound issue 12 sets for a request on a handed-off connection.
const ANSWERED_WITHIN: Duration = Duration::from_millis(100);

/// Open keep-alive connections (one `GET /pid` each, answered) until worker
/// `want` holds `n` of them; connections that land elsewhere stay open too.
/// Returns `want`'s connections and the others.
fn connections_held_by(server: &Server, n: usize) -> (i32, Vec<Client>, Vec<Client>) {
    let mut by_worker: BTreeMap<i32, Vec<Client>> = BTreeMap::new();
    for _ in 0..8 * n {
        let mut client = server.connect().expect("connect");
        let pid = client.get("/pid").expect("GET /pid").pid();
        by_worker.entry(pid).or_default().push(client);
        if let Some((&pid, _)) = by_worker.iter().find(|(_, c)| c.len() >= n) {
            let held = by_worker.remove(&pid).expect("found above");
            let others = by_worker.into_values().flatten().collect();
            return (pid, held, others);
        }
    }
    panic!(
        "no worker came to hold {n} connections: {:?}",
        by_worker.keys()
    );
}

/// Send `GET /pid` on each of `clients` (idle keep-alive connections) at
/// once, reading nothing yet.
fn send_pid_request_on_each(clients: &mut [Client]) {
    for client in clients {
        client
            .send(&request("GET", "/pid", &[], b""))
            .expect("send on an idle connection");
    }
}

#[test]
fn requests_on_a_busy_workers_idle_connections_are_answered_by_a_free_worker() {
    let server = Server::start(&["-w", "2", "--keep-alive", "30", "chaos"]);
    server.wait_for_workers(2);
    let (busy, mut held, _others) = connections_held_by(&server, 5);
    let mut long = held.pop().expect("five connections");

    // A 10 s request on one of worker A's own connections: A serves it.
    long.send(&request("GET", "/sleep?s=10", &[], b""))
        .expect("send the long request");
    assert!(
        wait_until(EVENTUALLY, || is_in_sleep_syscall(busy)),
        "worker {busy} never started the long request; log:\n{}",
        server.log
    );

    // A request on each of A's four idle connections, sent at once.
    let sent = Instant::now();
    send_pid_request_on_each(&mut held);
    for (i, client) in held.iter_mut().enumerate() {
        let response = client
            .read_response()
            .unwrap_or_else(|e| panic!("connection {i}: no answer: {e}"));
        let took = sent.elapsed();
        eprintln!("connection {i}: answered in {took:?}");
        assert_eq!(
            response.status,
            200,
            "connection {i}: {:?}",
            response.text()
        );
        assert_ne!(
            response.pid(),
            busy,
            "connection {i} was answered by the busy worker"
        );
        assert!(
            took < ANSWERED_WITHIN,
            "connection {i} answered after {took:?} (busy worker {busy})"
        );
    }
    // The connections stay usable where they went.
    for client in &mut held {
        let again = client.get("/pid").expect("a second request");
        assert_ne!(again.pid(), busy);
    }
}

#[test]
fn when_every_worker_is_busy_handed_off_connections_wait_for_the_first_free_one() {
    let server = Server::start(&[
        "-w",
        "1",
        "--keep-alive",
        "30",
        "--log-level",
        "debug",
        "chaos",
    ]);
    let only = *server.wait_for_workers(1).first().expect("one worker");
    let (_, mut held, _) = connections_held_by(&server, 3);
    let mut long = held.pop().expect("three connections");
    long.send(&request("GET", "/sleep?s=1", &[], b""))
        .expect("send the long request");
    assert!(wait_until(EVENTUALLY, || is_in_sleep_syscall(only)));
    // The worker hands its two idle connections off (to nobody but itself:
    // it is the only one) before the requests come.
    assert!(
        server
            .log
            .wait_for(EVENTUALLY, |l| l.contains("handed 2 idle connections"))
            .is_some(),
        "the busy worker kept its idle connections; log:\n{}",
        server.log
    );

    send_pid_request_on_each(&mut held);
    for (i, client) in held.iter_mut().enumerate() {
        let response = client
            .read_response()
            .unwrap_or_else(|e| panic!("connection {i}: no answer: {e}"));
        assert_eq!(response.status, 200);
        assert_eq!(
            response.pid(),
            only,
            "taken back by the worker that let it go"
        );
    }
    assert_eq!(long.read_response().expect("the long request").status, 200);
}

/// Connect to `port` and say what became of a `GET /pid` on it: refused,
/// or answered within `ANSWERED_WITHIN`.
fn refused_or_answered_at_once(port: u16) -> Result<&'static str, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok("refused"),
        Err(e) => return Err(format!("connect failed after {:?}: {e}", started.elapsed())),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut stream = stream;
    std::io::Write::write_all(
        &mut stream,
        &request("GET", "/pid", &[("Connection", "close")], b""),
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply);
    let took = started.elapsed();
    match read {
        Err(e) if e.kind() == ErrorKind::ConnectionReset && took < ANSWERED_WITHIN => {
            Ok("reset at once")
        }
        _ if reply.starts_with(b"HTTP/1.1 ") && took < ANSWERED_WITHIN => Ok("served"),
        other => Err(format!(
            "after {took:?}: {other:?}, {:?}",
            String::from_utf8_lossy(&reply)
        )),
    }
}

/// Start a 1.5 s stream at `path`, send TERM 0.2 s in, and connect 0.3 s
/// after that: the connection is refused or served at once, the stream
/// completes, the master exits 0.
fn stop_during_a_stream(stream_path: &str) {
    let mut server = Server::start(&["-w", "2", "--graceful-timeout", "20", "chaos"]);
    server.wait_for_workers(2);
    let port = server.port;
    let mut stream = server.connect().expect("connect");
    stream
        .send(&request(
            "GET",
            stream_path,
            &[("Connection", "close")],
            b"",
        ))
        .expect("start the stream");
    // Read it in the background while the server stops.
    let reader = std::thread::spawn(move || stream.read_response());
    std::thread::sleep(Duration::from_millis(200));

    server.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let outcome = refused_or_answered_at_once(port);

    let response = reader
        .join()
        .expect("reader thread")
        .expect("the stream completes");
    assert_eq!(response.status, 200);
    let expected: String = (0..15).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(
        response.text(),
        expected,
        "every chunk of the stream arrived"
    );
    assert!(
        outcome.is_ok(),
        "a new connection during the stop hung: {outcome:?}; log:\n{}",
        server.log
    );
    let status = server.wait_exit(EVENTUALLY).expect("the master exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log);
}

#[test]
fn a_connection_made_during_a_graceful_stop_is_refused_at_once_while_a_detached_stream_finishes() {
    stop_during_a_stream("/detached?chunks=15&interval_ms=100");
}

/// A stream the app writes itself keeps the worker's main thread inside the
/// app until it ends: the worker's watcher thread lets go of the listeners.
#[test]
fn a_connection_made_during_a_graceful_stop_is_refused_at_once_while_a_worker_is_inside_a_stream() {
    stop_during_a_stream("/stream?chunks=15&interval_ms=100");
}

/// The voluntary context switches of worker `pid`'s hand-off watcher thread
/// (the task named `handoff`), from /proc.
fn watcher_wakeups(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "handoff" {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).ok()?;
        return status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok());
    }
    None
}

#[test]
fn an_idle_workers_watcher_thread_sleeps() {
    // While requests come the watcher looks every 25 ms; a worker that has
    // started none for a second must cost nothing, its watcher asleep until
    // the next request.
    let server = Server::start(&["-w", "1", "chaos"]);
    let worker = *server.wait_for_workers(1).first().expect("one worker");
    assert_eq!(server.get("/pid").expect("GET /pid").status, 200);

    let mut last = watcher_wakeups(worker).expect("the worker has a handoff thread");
    let mut still_since = Instant::now();
    let asleep = wait_until(EVENTUALLY, || {
        let now = watcher_wakeups(worker).unwrap_or(u64::MAX);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        // Ten of its 25 ms looks without a wake-up: it sleeps on the condvar.
        still_since.elapsed() >= Duration::from_millis(250)
    });
    assert!(
        asleep,
        "the idle worker's watcher kept waking up ({last} wake-ups)"
    );

    // The next request wakes it, and it still serves.
    assert_eq!(server.get("/pid").expect("GET /pid").status, 200);
    assert!(
        wait_until(EVENTUALLY, || watcher_wakeups(worker) > Some(last)),
        "the watcher did not wake for the next request"
    );
}
