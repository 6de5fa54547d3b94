//! What the master knows about the server at one instant: the one view that
//! `forkhorn ctl` and the metrics endpoint both render.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::heartbeat::{Counts, InFlight, WorkerState};

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Heartbeat went silent for longer than --timeout.
    Timeout,
    /// Died without being asked (crash, exit, external kill).
    Crash,
    /// Served its --max-requests quota.
    MaxRequests,
    /// Grew past --max-worker-memory.
    Memory,
    /// Replaced by a reload (HUP).
    Reload,
    /// Removed by TTOU or `ctl worker remove`.
    ScaleDown,
    /// Stopped by `ctl worker kill`.
    Killed,
    /// Stopped because the server is stopping (not a restart).
    Shutdown,
}

impl Reason {
    /// Kebab-case name, used as the `reason` label in metrics and in ctl output.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Crash => "crash",
            Reason::MaxRequests => "max-requests",
            Reason::Memory => "memory",
            Reason::Reload => "reload",
            Reason::ScaleDown => "scale-down",
            Reason::Killed => "killed",
            Reason::Shutdown => "shutdown",
        }
    }

    /// The reasons that count as restarts, for zero-filled reports.
    pub const RESTARTS: [Reason; 7] = [
        Reason::Timeout,
        Reason::Crash,
        Reason::MaxRequests,
        Reason::Memory,
        Reason::Reload,
        Reason::ScaleDown,
        Reason::Killed,
    ];
}

/// One live worker. The master fills it from the worker's slot and /proc
/// when it takes a snapshot.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// The master's number for the worker: 1, 2, ... in spawn order, never reused.
    pub id: u64,
    /// The worker's process id.
    pub pid: i32,
    /// From the slot, except that a worker the master has asked to leave
    /// shows as `Stopping` whatever it says.
    pub state: WorkerState,
    /// Time since the master forked it.
    pub age: Duration,
    /// Requests it has completed.
    pub requests: u64,
    /// The request it is serving now, if any.
    pub request: Option<InFlight>,
    /// Resident set size; None when /proc could not be read.
    pub rss_bytes: Option<u64>,
    /// Pages only it maps (what `--max-worker-memory` limits); None when
    /// /proc could not be read.
    pub private_bytes: Option<u64>,
    /// Time since its last heartbeat.
    pub since_beat: Duration,
}

/// The whole server. Built by the master on demand (a ctl command, a
/// metrics scrape); a copy, so it can be rendered without touching the
/// master's state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The master's process id.
    pub master_pid: i32,
    /// Time since the master started.
    pub uptime: Duration,
    /// Listener names, e.g. `http://127.0.0.1:8000` or `unix:/run/app.sock`.
    pub listeners: Vec<String>,
    /// The app spec being served.
    pub app: String,
    /// Workers the master aims to keep serving (`--workers`, moved by
    /// TTIN/TTOU and `ctl worker add/remove`).
    pub wanted: usize,
    /// `--timeout`; None = never.
    pub timeout: Option<Duration>,
    /// `--graceful-timeout`.
    pub graceful_timeout: Duration,
    /// `--max-requests`; 0 = never recycle.
    pub max_requests: u64,
    /// `--max-requests-jitter`.
    pub max_requests_jitter: u64,
    /// The master is shutting down (graceful or not); a reload does not count.
    pub is_stopping: bool,
    /// Live workers (not yet reaped), in the master's order.
    pub workers: Vec<WorkerInfo>,
    /// Counts of every worker, living and dead.
    pub totals: Counts,
    /// Workers replaced since start, by reason; workers stopped by shutdown
    /// are not counted, and reasons never seen are absent (see
    /// [`Reason::RESTARTS`] to zero-fill).
    pub restarts: BTreeMap<Reason, u64>,
    /// Connections waiting in each listener's accept queue, where the kernel says.
    pub backlog: Vec<(String, u64)>,
}

impl Snapshot {
    /// Ready for traffic: not stopping, and at least one worker serving.
    pub fn is_healthy(&self) -> bool {
        !self.is_stopping
            && self
                .workers
                .iter()
                .any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy))
    }
}
