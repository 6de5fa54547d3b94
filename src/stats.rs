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

/// One live worker.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: u64,
    pub pid: i32,
    pub state: WorkerState,
    pub age: Duration,
    pub requests: u64,
    pub request: Option<InFlight>,
    pub rss_bytes: Option<u64>,
    pub private_bytes: Option<u64>,
    pub since_beat: Duration,
}

/// The whole server.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub master_pid: i32,
    pub uptime: Duration,
    pub listeners: Vec<String>,
    pub app: String,
    pub wanted: usize,
    pub timeout: Option<Duration>,
    pub graceful_timeout: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub is_stopping: bool,
    pub workers: Vec<WorkerInfo>,
    /// Counts of every worker, living and dead.
    pub totals: Counts,
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
