//! The upstream's health, as `GET /health` reports it.
//!
//! Checking the upstream inside the request would hold the worker for as
//! long as the upstream takes, and a hung upstream would hold it until
//! `--timeout` killed it. So a background thread of the worker checks
//! (`GET URL/models`) on an interval, each check bounded by that interval,
//! and `/health` answers at once from the last verdict.
//!
//! The thread is started when the app is built, which is in the worker after
//! fork, never in the master (which must stay single-threaded to fork
//! safely). It ends at its next turn once the app is dropped.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::upstream::Upstream;

/// Stack for the check thread (one small HTTP exchange at a time).
const CHECK_THREAD_STACK_BYTES: usize = 256 * 1024;

/// What the last finished check said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No check has finished yet.
    Pending,
    /// The upstream answered `GET URL/models` with a 2xx.
    Up,
    /// It did not, for this reason (a timeout, a refused connection, a status).
    Down(String),
}

/// The last verdict and when it was reached.
#[derive(Debug, Clone)]
struct Last {
    verdict: Verdict,
    /// When the verdict was reached; for `Pending`, when checking started.
    at: Instant,
}

/// A worker's view of its upstream's health; the check thread writes it,
/// `/health` reads it.
pub struct HealthWatch {
    last: Arc<Mutex<Last>>,
}

impl HealthWatch {
    /// Starts the check thread: a check every `interval`, each given at most
    /// `interval` to finish.
    pub fn start(upstream: Arc<Upstream>, interval: Duration) -> Result<HealthWatch, String> {
        let last = Arc::new(Mutex::new(Last {
            verdict: Verdict::Pending,
            at: Instant::now(),
        }));
        let shared = Arc::downgrade(&last);
        std::thread::Builder::new()
            .name("chat-health".to_owned())
            .stack_size(CHECK_THREAD_STACK_BYTES)
            .spawn(move || check_until_dropped(&upstream, interval, &shared))
            .map_err(|e| format!("cannot start the upstream health thread: {e}"))?;
        Ok(HealthWatch { last })
    }

    /// The last verdict, and how long ago it was reached.
    pub fn last(&self) -> (Verdict, Duration) {
        match self.last.lock() {
            Ok(last) => (last.verdict.clone(), last.at.elapsed()),
            // A check thread that panicked while holding the lock: say so.
            Err(_) => (
                Verdict::Down("the health check thread failed".to_owned()),
                Duration::ZERO,
            ),
        }
    }
}

fn check_until_dropped(upstream: &Upstream, interval: Duration, shared: &Weak<Mutex<Last>>) {
    loop {
        let started = Instant::now();
        let verdict = match upstream.probe(interval) {
            Ok(()) => Verdict::Up,
            Err(why) => Verdict::Down(why),
        };
        let Some(last) = shared.upgrade() else {
            return; // the app was dropped
        };
        if let Ok(mut last) = last.lock() {
            *last = Last {
                verdict,
                at: Instant::now(),
            };
        }
        drop(last);
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
