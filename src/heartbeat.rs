//! The heartbeat slot: one small shared-memory cell per worker.
//!
//! The master creates the slot before forking; the worker stamps it; the
//! master reads it to time workers out, to log which request a timed-out
//! worker was serving, and (later) to answer status and metrics. It is the one
//! source of truth about what a worker is doing. Writes are plain atomic
//! stores: a heartbeat costs no syscall.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys::clock::monotonic_ns;
use crate::sys::shm::{SharedCell, SharedSafe};

const METHOD_BYTES: usize = 16;
const TARGET_BYTES: usize = 256;
const PEER_BYTES: usize = 64;

/// What a worker is doing, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Forked, building the app; not yet serving.
    Booting,
    /// Waiting for a request.
    Idle,
    /// Serving a request.
    Busy,
    /// Will exit after the request in hand (max-requests reached).
    Retiring,
    /// Told to stop; finishing up.
    Stopping,
}

impl WorkerState {
    fn from_u32(v: u32) -> WorkerState {
        match v {
            1 => WorkerState::Idle,
            2 => WorkerState::Busy,
            3 => WorkerState::Retiring,
            4 => WorkerState::Stopping,
            _ => WorkerState::Booting,
        }
    }

    fn as_u32(self) -> u32 {
        match self {
            WorkerState::Booting => 0,
            WorkerState::Idle => 1,
            WorkerState::Busy => 2,
            WorkerState::Retiring => 3,
            WorkerState::Stopping => 4,
        }
    }

    /// Lowercase name, as in `ctl workers` and the metrics' `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Booting => "booting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
            WorkerState::Stopping => "stopping",
        }
    }
}

/// Bytes written through atomics, for strings the other process may read
/// while we write (guarded by `SlotData::request_seq`).
#[repr(C)]
struct AtomicBytes<const WORDS: usize>([AtomicU64; WORDS]);

impl<const WORDS: usize> AtomicBytes<WORDS> {
    fn store(&self, bytes: &[u8]) -> u32 {
        let n = bytes.len().min(WORDS * 8);
        for (i, word) in self.0.iter().enumerate() {
            let mut chunk = [0u8; 8];
            let start = i * 8;
            if start < n {
                let end = (start + 8).min(n);
                chunk[..end - start].copy_from_slice(&bytes[start..end]);
            }
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
            if start >= n {
                break;
            }
        }
        n as u32
    }

    fn load(&self, len: u32) -> Vec<u8> {
        let len = (len as usize).min(WORDS * 8);
        let mut out = Vec::with_capacity(len);
        for word in &self.0 {
            if out.len() >= len {
                break;
            }
            out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The shared layout. Only the worker writes (the master writes the first
/// beat before fork); only the master reads.
#[repr(C)]
pub struct SlotData {
    /// CLOCK_MONOTONIC ns of the worker's last sign of life.
    last_beat_ns: AtomicU64,
    /// `WorkerState` as a number.
    state: AtomicU32,
    /// Length of method, target and peer below.
    method_len: AtomicU32,
    target_len: AtomicU32,
    peer_len: AtomicU32,
    /// Requests completed by this worker.
    requests: AtomicU64,
    /// Response bytes written by this worker.
    bytes_out: AtomicU64,
    /// Seqlock over the request fields: odd while the worker rewrites them.
    request_seq: AtomicU64,
    /// CLOCK_MONOTONIC ns when the request in flight started; 0 when none.
    request_start_ns: AtomicU64,
    method: AtomicBytes<{ METHOD_BYTES / 8 }>,
    target: AtomicBytes<{ TARGET_BYTES / 8 }>,
    peer: AtomicBytes<{ PEER_BYTES / 8 }>,
    /// Responses by status class: index 0 for 1xx ... 4 for 5xx.
    status_classes: [AtomicU64; 5],
    /// Request durations: counts per `DURATION_BUCKETS` bound, plus +Inf last.
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of request durations in microseconds.
    duration_sum_us: AtomicU64,
    /// The worker's last error log line (why it failed to boot, say);
    /// written before it exits, read by the master after reaping it.
    last_error_len: AtomicU32,
    last_error: AtomicBytes<{ LAST_ERROR_BYTES / 8 }>,
    /// CLOCK_MONOTONIC ns at which the worker's timeout handler wrote its
    /// 504 to the request in flight; 0 if it wrote none. Written only by that
    /// handler (the worker `_exit`s right after), read by the master when it
    /// reaps the worker, to count the response and log it.
    timeout_answered_ns: AtomicU64,
    /// TLS handshakes that failed or timed out.
    tls_handshake_failures: AtomicU64,
}

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LAST_ERROR_BYTES: usize = 256;

/// What a slot has counted, copied out so it outlives the worker.
#[derive(Debug, Clone, Default, PartialEq)]
/// Filled by [`Slot::counts`]; the master sums them over workers with
/// [`Counts::add`], keeping the counts of reaped workers in its totals.
pub struct Counts {
    /// Requests completed.
    pub requests: u64,
    /// Bytes written to clients: heads, bodies and chunk framing.
    pub bytes_out: u64,
    /// Responses by status class: index 0 for 1xx ... 4 for 5xx.
    pub status_classes: [u64; 5],
    /// Request count per [`DURATION_BUCKETS`] bound (not cumulative), with
    /// the overflow (+Inf) bucket last.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of request durations in microseconds.
    pub duration_sum_us: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
}

impl Counts {
    /// Count one response the master learned of after its worker was gone
    /// (the 504 a timed-out worker wrote from its signal handler).
    pub fn add_response(&mut self, status: u16, duration: Duration, bytes_out: u64) {
        self.requests += 1;
        self.bytes_out += bytes_out;
        self.status_classes[status_class(status)] += 1;
        self.duration_buckets[duration_bucket(duration)] += 1;
        self.duration_sum_us += duration.as_micros() as u64;
    }

    /// Add another worker's counts to these.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.bytes_out += other.bytes_out;
        for (a, b) in self.status_classes.iter_mut().zip(other.status_classes) {
            *a += b;
        }
        for (a, b) in self.duration_buckets.iter_mut().zip(other.duration_buckets) {
            *a += b;
        }
        self.duration_sum_us += other.duration_sum_us;
        self.tls_handshake_failures += other.tls_handshake_failures;
    }
}

// SAFETY: SlotData is repr(C), made only of atomics, valid when zeroed
// (state 0 = Booting, no request), and has no pointers or Drop.
unsafe impl SharedSafe for SlotData {}

/// A worker's slot, mapped in the master and (after fork) in the worker.
/// Clones share the one mapping.
#[derive(Clone)]
pub struct Slot {
    cell: Arc<SharedCell<SlotData>>,
}

/// A snapshot of the request a worker is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
/// Read by the master from [`Slot::in_flight`] for timeout log lines and
/// `ctl workers`. The strings are cut to the slot's fixed sizes.
pub struct InFlight {
    /// Request method, at most 16 bytes.
    pub method: String,
    /// Request target as sent, at most 256 bytes.
    pub target: String,
    /// Client `ip:port`, or `-` when there is none (Unix socket).
    pub peer: String,
    /// Time since the worker began the request.
    pub elapsed: Duration,
}

impl std::fmt::Display for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} peer={} after {:.1}s",
            self.method,
            self.target,
            self.peer,
            self.elapsed.as_secs_f64()
        )
    }
}

impl Slot {
    /// Create a slot in `dir` and stamp it as just beaten.
    pub fn create_in(dir: &Path) -> std::io::Result<Slot> {
        let slot = Slot {
            cell: Arc::new(SharedCell::create_in(dir)?),
        };
        slot.beat();
        Ok(slot)
    }

    /// Record a sign of life now.
    pub fn beat(&self) {
        self.cell
            .last_beat_ns
            .store(monotonic_ns(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn silence(&self) -> Duration {
        let last = self.cell.last_beat_ns.load(Ordering::Relaxed);
        Duration::from_nanos(monotonic_ns().saturating_sub(last))
    }

    /// What the worker last said it is doing (master and worker both read).
    pub fn state(&self) -> WorkerState {
        WorkerState::from_u32(self.cell.state.load(Ordering::Relaxed))
    }

    /// Publish the worker's state; a change of state is also a beat.
    /// Called by the worker only.
    pub fn set_state(&self, state: WorkerState) {
        self.cell.state.store(state.as_u32(), Ordering::Relaxed);
        self.beat();
    }

    /// Requests this worker has completed.
    pub fn requests(&self) -> u64 {
        self.cell.requests.load(Ordering::Relaxed)
    }

    /// Bytes this worker has written to clients, framing included.
    pub fn bytes_out(&self) -> u64 {
        self.cell.bytes_out.load(Ordering::Relaxed)
    }

    /// Count response bytes that went out; a successful write is progress.
    pub fn add_bytes_out(&self, n: usize) {
        self.cell.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.beat();
    }

    /// Mark the start of a request (state Busy) and publish what it is.
    /// `peer` is the client's address as text, "-" when unknown.
    pub fn begin_request(&self, method: &str, target: &str, peer: &str) {
        let c = &self.cell;
        // One clock read serves as the request's start and as a beat.
        let now = monotonic_ns();
        let seq = c.request_seq.fetch_add(1, Ordering::AcqRel);
        debug_assert!(seq.is_multiple_of(2));
        let n = c.method.store(method.as_bytes());
        c.method_len.store(n, Ordering::Relaxed);
        let n = c.target.store(target.as_bytes());
        c.target_len.store(n, Ordering::Relaxed);
        let n = c.peer.store(peer.as_bytes());
        c.peer_len.store(n, Ordering::Relaxed);
        c.request_start_ns.store(now, Ordering::Relaxed);
        c.request_seq.fetch_add(1, Ordering::Release);
        // A retiring worker stays marked retiring through its last request,
        // so the master does not count it as capacity.
        if self.state() != WorkerState::Retiring {
            c.state.store(WorkerState::Busy.as_u32(), Ordering::Relaxed);
        }
        c.last_beat_ns.store(now, Ordering::Relaxed);
    }

    /// Mark the end of a request and go back to `next` (Idle or Retiring).
    pub fn end_request(&self, next: WorkerState) {
        self.cell.request_start_ns.store(0, Ordering::Relaxed);
        self.cell.requests.fetch_add(1, Ordering::Relaxed);
        self.set_state(next);
    }

    /// Count a finished response: its status and how long it took.
    pub fn record_response(&self, status: u16, duration: Duration) {
        let c = &self.cell;
        c.status_classes[status_class(status)].fetch_add(1, Ordering::Relaxed);
        c.duration_buckets[duration_bucket(duration)].fetch_add(1, Ordering::Relaxed);
        c.duration_sum_us
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Count a TLS handshake that failed or timed out.
    pub fn count_tls_handshake_failure(&self) {
        self.cell
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Everything counted so far.
    pub fn counts(&self) -> Counts {
        let c = &self.cell;
        Counts {
            requests: c.requests.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            status_classes: std::array::from_fn(|i| c.status_classes[i].load(Ordering::Relaxed)),
            duration_buckets: std::array::from_fn(|i| {
                c.duration_buckets[i].load(Ordering::Relaxed)
            }),
            duration_sum_us: c.duration_sum_us.load(Ordering::Relaxed),
            tls_handshake_failures: c.tls_handshake_failures.load(Ordering::Relaxed),
        }
    }

    /// Keep `line` as the worker's last error (for the master's crash report).
    pub fn set_last_error(&self, line: &str) {
        let n = self.cell.last_error.store(line.as_bytes());
        self.cell.last_error_len.store(n, Ordering::Release);
    }

    /// The line kept by [`Slot::set_last_error`], if the worker set one.
    pub fn last_error(&self) -> Option<String> {
        let len = self.cell.last_error_len.load(Ordering::Acquire);
        (len > 0).then(|| String::from_utf8_lossy(&self.cell.last_error.load(len)).into_owned())
    }

    /// The request in flight, if any, read consistently.
    pub fn in_flight(&self) -> Option<InFlight> {
        self.request_started_at(monotonic_ns())
    }

    /// The cell the worker's timeout handler stamps when it writes its 504,
    /// for `signals::set_timeout_mark`. Leaks one reference to the mapping so
    /// it stays mapped for the rest of this process (call it once, in the
    /// worker).
    pub fn leak_timeout_mark(&self) -> &'static AtomicU64 {
        let cell: &'static Arc<SharedCell<SlotData>> = Box::leak(Box::new(self.cell.clone()));
        &cell.timeout_answered_ns
    }

    /// The request a timed-out worker answered with its 504 from the signal
    /// handler, with `elapsed` from the request's start to that write; None
    /// if the handler wrote no 504 (no request in flight, or part of the
    /// response had gone out).
    pub fn timeout_answer(&self) -> Option<InFlight> {
        match self.cell.timeout_answered_ns.load(Ordering::Acquire) {
            0 => None,
            at => self.request_started_at(at),
        }
    }

    /// The request in flight as of `now_ns` (CLOCK_MONOTONIC), read
    /// consistently.
    fn request_started_at(&self, now_ns: u64) -> Option<InFlight> {
        let c = &self.cell;
        for _ in 0..100 {
            let before = c.request_seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let start = c.request_start_ns.load(Ordering::Relaxed);
            let method = c.method.load(c.method_len.load(Ordering::Relaxed));
            let target = c.target.load(c.target_len.load(Ordering::Relaxed));
            let peer = c.peer.load(c.peer_len.load(Ordering::Relaxed));
            std::sync::atomic::fence(Ordering::Acquire);
            if c.request_seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if start == 0 {
                return None;
            }
            return Some(InFlight {
                method: String::from_utf8_lossy(&method).into_owned(),
                target: String::from_utf8_lossy(&target).into_owned(),
                peer: String::from_utf8_lossy(&peer).into_owned(),
                elapsed: Duration::from_nanos(now_ns.saturating_sub(start)),
            });
        }
        None
    }
}

/// Index into `status_classes` of `status`: 0 for 1xx ... 4 for 5xx.
fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Index into `duration_buckets` of `duration` (the +Inf bucket last).
fn duration_bucket(duration: Duration) -> usize {
    let secs = duration.as_secs_f64();
    DURATION_BUCKETS
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(DURATION_BUCKETS.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn slot_round_trips_the_request_in_flight() {
        let slot = Slot::create_in(&std::env::temp_dir()).expect("slot");
        assert_eq!(slot.state(), WorkerState::Booting);
        assert_eq!(slot.in_flight(), None);
        let peer: SocketAddr = "10.0.0.7:5555".parse().expect("addr");
        let long_target = format!("/report?{}", "x".repeat(400));
        slot.begin_request("GET", &long_target, &peer.to_string());
        let f = slot.in_flight().expect("in flight");
        assert_eq!(f.method, "GET");
        assert_eq!(f.target, long_target[..TARGET_BYTES]);
        assert_eq!(f.peer, "10.0.0.7:5555");
        assert_eq!(slot.state(), WorkerState::Busy);
        slot.end_request(WorkerState::Idle);
        assert_eq!(slot.in_flight(), None);
        assert_eq!(slot.requests(), 1);
    }

    #[test]
    fn a_timeout_answer_is_the_request_in_flight_when_the_504_went_out() {
        let slot = Slot::create_in(&std::env::temp_dir()).expect("slot");
        slot.begin_request("GET", "/sleep?s=10", "10.0.0.7:5555");
        assert_eq!(slot.timeout_answer(), None, "no 504 written yet");
        let mark = slot.leak_timeout_mark();
        let start = monotonic_ns() - 1_500_000_000;
        slot.cell.request_start_ns.store(start, Ordering::Relaxed);
        mark.store(start + 1_000_000_000, Ordering::Release);
        let answer = slot.timeout_answer().expect("the 504 is seen");
        assert_eq!(
            (answer.method.as_str(), answer.target.as_str()),
            ("GET", "/sleep?s=10")
        );
        assert_eq!(answer.elapsed, Duration::from_secs(1));
    }

    #[test]
    fn a_response_added_by_the_master_counts_like_one_a_worker_recorded() {
        let slot = Slot::create_in(&std::env::temp_dir()).expect("slot");
        slot.begin_request("GET", "/", "-");
        slot.record_response(504, Duration::from_millis(700));
        slot.add_bytes_out(120);
        slot.end_request(WorkerState::Idle);
        let mut counts = Counts::default();
        counts.add_response(504, Duration::from_millis(700), 120);
        assert_eq!(counts, slot.counts());
    }

    #[test]
    fn creating_a_slot_leaves_no_file_behind() {
        let dir = std::env::temp_dir().join(format!("forkhorn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let _slot = Slot::create_in(&dir).expect("slot");
        assert_eq!(std::fs::read_dir(&dir).expect("read").count(), 0);
        let _ = std::fs::remove_dir(&dir);
    }
}
