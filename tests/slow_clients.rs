//! Slow clients must cost a worker nothing but a socket: a few hundred
//! connections trickling request heads (slowloris) or one client stalling in
//! the middle of a body do not delay anyone else's requests, and a trickled
//! head is still cut off by the header timeout.
//!
//! These are quick versions with generous bounds; `scripts/slowloris.py`
//! measures the real latency percentiles with 1000 slow connections.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, get, open_sockets};

/// Slow connections in the quick test (the script uses 1000).
const SLOW_CONNECTIONS: usize = 200;
/// How long normal requests are measured while the slow clients trickle.
const MEASURE: Duration = Duration::from_secs(3);
/// A bound no healthy run comes near (they take about a millisecond), so
/// that only a worker stuck behind a slow client fails it.
const NORMAL_LATENCY_BOUND: Duration = Duration::from_millis(500);

fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to forkhorn");
    stream.set_nodelay(true).expect("set nodelay");
    stream
}

/// Byte `i` of a request head that never ends: a request line, then
/// `X-Slow: 0` fields for ever (well within every limit at a byte a second).
fn endless_head_byte(i: usize) -> u8 {
    const START: &[u8] = b"GET /slowloris HTTP/1.1\r\nHost: a\r\n";
    const FIELD: &[u8] = b"X-Slow: 0\r\n";
    match START.get(i) {
        Some(&b) => b,
        None => FIELD[(i - START.len()) % FIELD.len()],
    }
}

/// What the slow connections saw.
struct Trickled {
    bytes_sent: usize,
    /// Connections the server closed or answered while they trickled.
    cut_off: usize,
}

/// Sends one byte per connection per second, spread over the second, until
/// `stop` is set (or a minute passes, whatever happens to the test). Byte 0
/// went out with the connect, so this starts at byte 1.
fn trickle(mut slow: Vec<TcpStream>, stop: Arc<AtomicBool>) -> (Vec<TcpStream>, Trickled) {
    let gap = Duration::from_secs(1) / u32::try_from(slow.len()).expect("a few connections");
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut result = Trickled {
        bytes_sent: 0,
        cut_off: 0,
    };
    let mut open = vec![true; slow.len()];
    // Byte 0 went with the connect.
    let mut round = 1;
    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
        for (k, stream) in slow.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if open[k] {
                match stream.write(&[endless_head_byte(round)]) {
                    Ok(1) => result.bytes_sent += 1,
                    Ok(_) | Err(_) => {
                        open[k] = false;
                        result.cut_off += 1;
                    }
                }
            }
            // Paces the slow clients on purpose (one byte per connection per
            // second); nothing is being waited for.
            thread::sleep(gap);
        }
        round += 1;
    }
    (slow, result)
}

/// Whether the server has sent anything on, or closed, `stream`.
fn server_spoke(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("set nonblocking");
    let mut byte = [0u8; 1];
    !matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn two_hundred_slowloris_connections_do_not_delay_normal_requests() {
    let server = Server::start(&["-w", "2", "hello"]);
    server.wait_for_workers(2);
    // Each sends its first byte at once: the listener defers accepting a
    // connection until it has data (TCP_DEFER_ACCEPT), and these must be
    // held by the workers, not by the kernel.
    let slow: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|_| {
            let mut stream = connect(server.port);
            stream
                .write_all(&[endless_head_byte(0)])
                .expect("send the first byte");
            stream
        })
        .collect();
    // The workers really hold them (a worker accepts one per loop turn).
    let held = || {
        server
            .workers()
            .iter()
            .map(|w| open_sockets(*w))
            .sum::<usize>()
    };
    assert!(
        common::wait_until(common::EVENTUALLY, || held() >= SLOW_CONNECTIONS),
        "the workers hold {} sockets, expected at least {SLOW_CONNECTIONS}",
        held()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        thread::spawn(move || trickle(slow, stop))
    };

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    while started.elapsed() < MEASURE {
        let sent = Instant::now();
        match get(server.port, "/") {
            Ok(r) if r.status == 200 => latencies.push(sent.elapsed()),
            Ok(r) => failures.push(format!("status {} after {:?}", r.status, sent.elapsed())),
            Err(e) => failures.push(format!("{e} after {:?}", sent.elapsed())),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (slow, trickled) = trickler.join().expect("trickle thread");

    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "{} normal requests beside {SLOW_CONNECTIONS} slow connections ({} bytes trickled): \
         median {median:?}, worst {worst:?}",
        latencies.len(),
        trickled.bytes_sent
    );
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    assert!(
        latencies.len() >= 20,
        "only {} normal requests in {MEASURE:?}",
        latencies.len()
    );
    assert!(
        worst < NORMAL_LATENCY_BOUND,
        "slowest normal request took {worst:?}"
    );
    // The slow clients were really there: every one was still waiting,
    // unanswered, when the measurement ended (the header timeout is 10 s).
    assert_eq!(trickled.cut_off, 0, "slow connections cut off early");
    assert!(
        trickled.bytes_sent >= SLOW_CONNECTIONS,
        "only {} bytes trickled",
        trickled.bytes_sent
    );
    let answered = slow.iter().filter(|s| server_spoke(s)).count();
    assert_eq!(
        answered, 0,
        "slow connections answered before their head ended"
    );
}

#[test]
fn a_head_trickled_one_byte_at_a_time_still_gets_408_at_the_header_timeout() {
    let server = Server::start(&["-w", "1", "--header-timeout", "1", "hello"]);
    let mut stream = connect(server.port);
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set read timeout");
    let first_byte = Instant::now();
    let mut got = Vec::new();
    let mut i = 0;
    // Each byte is progress, but the header timeout bounds the whole head.
    while first_byte.elapsed() < Duration::from_secs(5) {
        if stream.write_all(&[endless_head_byte(i)]).is_err() {
            break;
        }
        i += 1;
        let mut buf = [0u8; 1024];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let waited = first_byte.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "got {text:?} after {waited:?} and {i} bytes"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_millis(2500),
        "408 after {waited:?}; --header-timeout is 1 s"
    );
}

#[test]
fn a_client_stalling_in_the_middle_of_a_body_holds_only_its_own_worker() {
    let server = Server::start(&["-w", "2", "echo"]);
    let workers = server.wait_for_workers(2);
    let held = || workers.iter().map(|w| open_sockets(*w)).sum::<usize>();
    let idle = held();
    let mut stalled = Client::connect(server.port).expect("connect");
    stalled
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf")
        .expect("send half a request");
    // A worker has taken the stalled connection before the others are sent.
    assert!(
        common::wait_until(common::EVENTUALLY, || held() > idle),
        "no worker took the stalled connection ({idle} sockets when idle, {} now)",
        held()
    );

    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let sent = Instant::now();
        let reply = get(server.port, "/").expect("a normal request beside the stalled one");
        assert_eq!(reply.status, 200);
        assert!(
            sent.elapsed() < NORMAL_LATENCY_BOUND,
            "a normal request took {:?}",
            sent.elapsed()
        );
        served += 1;
    }
    assert!(served >= 5, "only {served} normal requests in a second");

    // The stalled client finishes, and is answered in full.
    stalled.send(b" done!").expect("send the rest");
    let reply = stalled
        .read_response()
        .expect("the stalled request's response");
    assert_eq!(reply.status, 200);
    // base64 of "half done!"
    assert!(
        reply.text().contains("aGFsZiBkb25lIQ=="),
        "{:?}",
        reply.text()
    );
}
