//! When a worker is overdue: the one timeout rule. The master uses the same
//! deadline to act (`Arbiter::kill_overdue_workers`) and to know when to wake
//! up for it (`Arbiter::next_wakeup`), so the two cannot drift apart.

use std::time::{Duration, Instant};

use crate::heartbeat::WorkerState;
use crate::master::worker_exit::Ask;

/// Time between SIGABRT (timeout) and SIGKILL for a worker that is still there.
pub const ABORT_GRACE: Duration = Duration::from_secs(1);

/// The least silence a worker still booting is allowed, whatever
/// `--timeout`: loading an app (importing Flask or Django on a busy
/// machine) is not a request, and a `-t 2` meant for requests must not kill
/// every worker before it can serve. A boot hung for longer is still ended.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The silence allowed a worker in `state`: `--timeout`, or at least
/// `BOOT_TIMEOUT` while it boots.
pub fn allowed_silence(state: WorkerState, timeout: Option<Duration>) -> Option<Duration> {
    match state {
        WorkerState::Booting => timeout.map(|t| t.max(BOOT_TIMEOUT)),
        _ => timeout,
    }
}

/// What the master does to a worker at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// Its heartbeat stayed silent for --timeout: SIGABRT, whose handler
    /// answers the request in flight with a 504.
    Abort,
    /// It is still there `ABORT_GRACE` after the SIGABRT: SIGKILL.
    Kill,
}

/// A worker's next deadline and what falls due then, given what the master
/// asked of it, what it says it is doing, how long its heartbeat has been
/// silent as of `now`, and --timeout (None: never). None when nothing can
/// fall due: it was killed already, or timeouts are off.
pub fn deadline(
    ask: Ask,
    state: WorkerState,
    silence: Duration,
    timeout: Option<Duration>,
    now: Instant,
) -> Option<(Instant, Overdue)> {
    match ask {
        Ask::Serve | Ask::Retire(_) => {
            let timeout = allowed_silence(state, timeout)?;
            Some((now + timeout.saturating_sub(silence), Overdue::Abort))
        }
        Ask::Abort(sent) => Some((sent + ABORT_GRACE, Overdue::Kill)),
        Ask::Kill(_) => None,
    }
}

/// What is due for the worker at `now`, if anything.
pub fn due(
    ask: Ask,
    state: WorkerState,
    silence: Duration,
    timeout: Option<Duration>,
    now: Instant,
) -> Option<Overdue> {
    deadline(ask, state, silence, timeout, now).and_then(|(at, what)| (now >= at).then_some(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::stats::Reason;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_serving_worker_is_due_for_sigabrt_when_its_silence_reaches_the_timeout() {
        let now = Instant::now();
        assert_eq!(
            deadline(Ask::Serve, WorkerState::Busy, secs(10), TIMEOUT, now),
            Some((now + secs(20), Overdue::Abort))
        );
        assert_eq!(
            due(Ask::Serve, WorkerState::Busy, secs(29), TIMEOUT, now),
            None
        );
        assert_eq!(
            due(Ask::Serve, WorkerState::Busy, secs(30), TIMEOUT, now),
            Some(Overdue::Abort)
        );
        assert_eq!(
            due(Ask::Serve, WorkerState::Busy, secs(95), TIMEOUT, now),
            Some(Overdue::Abort)
        );
    }

    #[test]
    fn a_retiring_worker_keeps_its_timeout() {
        let now = Instant::now();
        let retiring = Ask::Retire(Reason::Reload);
        assert_eq!(
            due(retiring, WorkerState::Busy, secs(29), TIMEOUT, now),
            None
        );
        assert_eq!(
            due(retiring, WorkerState::Busy, secs(31), TIMEOUT, now),
            Some(Overdue::Abort)
        );
    }

    #[test]
    fn no_timeout_means_no_sigabrt_however_long_the_silence() {
        let now = Instant::now();
        assert_eq!(
            deadline(Ask::Serve, WorkerState::Busy, secs(10_000), None, now),
            None
        );
    }

    #[test]
    fn an_aborted_worker_is_due_for_sigkill_one_grace_after_the_sigabrt() {
        let sent = Instant::now();
        let ask = Ask::Abort(sent);
        assert_eq!(
            deadline(ask, WorkerState::Busy, secs(40), TIMEOUT, sent),
            Some((sent + ABORT_GRACE, Overdue::Kill))
        );
        assert_eq!(due(ask, WorkerState::Busy, secs(40), TIMEOUT, sent), None);
        assert_eq!(
            due(
                ask,
                WorkerState::Busy,
                secs(41),
                TIMEOUT,
                sent + ABORT_GRACE
            ),
            Some(Overdue::Kill)
        );
        // A reload that turned timeouts off does not leave it unkilled.
        assert_eq!(
            due(ask, WorkerState::Busy, secs(41), None, sent + ABORT_GRACE),
            Some(Overdue::Kill)
        );
    }

    #[test]
    fn a_booting_worker_is_due_only_after_the_boot_allowance() {
        let now = Instant::now();
        let two = Some(secs(2));
        assert_eq!(
            due(Ask::Serve, WorkerState::Booting, secs(59), two, now),
            None
        );
        assert_eq!(
            due(Ask::Serve, WorkerState::Booting, secs(60), two, now),
            Some(Overdue::Abort)
        );
        assert_eq!(
            due(Ask::Serve, WorkerState::Idle, secs(2), two, now),
            Some(Overdue::Abort)
        );
    }

    #[test]
    fn a_booting_worker_gets_the_boot_allowance_when_the_timeout_is_shorter() {
        let two = Some(secs(2));
        assert_eq!(
            allowed_silence(WorkerState::Booting, two),
            Some(BOOT_TIMEOUT)
        );
        assert_eq!(allowed_silence(WorkerState::Idle, two), two);
        assert_eq!(allowed_silence(WorkerState::Busy, two), two);
        assert_eq!(
            allowed_silence(WorkerState::Booting, Some(secs(300))),
            Some(secs(300))
        );
        assert_eq!(allowed_silence(WorkerState::Booting, None), None);
    }

    #[test]
    fn a_killed_worker_has_nothing_left_due() {
        let now = Instant::now();
        assert_eq!(
            deadline(
                Ask::Kill(Reason::Timeout),
                WorkerState::Busy,
                secs(500),
                TIMEOUT,
                now
            ),
            None
        );
    }
}
