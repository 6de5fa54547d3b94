//! What a worker's end means, decided by the master when it reaps one.
//!
//! The policy (README, "When workers die"): a worker that dies before it has
//! reported ready is a failed boot, counted toward `--max-boot-failures`, and
//! only its own replacement waits out a backoff. A worker that had reported
//! ready and then dies is a crash: it is replaced at once, whatever killed it
//! and however young it was, because killing booted workers (the OOM killer,
//! a chaos tool, a request that segfaults the app) must never empty the
//! server. Crashes are logged with the request they interrupted, and their
//! rate is reported, but they never stop the master.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::heartbeat::WorkerState;
use crate::master::stats::Reason;
use crate::sys::process::Exit;
use crate::worker::{EXIT_APP_LOAD_FAILED, EXIT_BOOT_FAILED};

/// What the master is asking of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Keep serving.
    Serve,
    /// Told TERM (reload, scale-down, memory, stop): finish and exit.
    Retire(Reason),
    /// Timed out: sent SIGABRT at this instant; SIGKILL follows.
    Abort(Instant),
    /// Sent SIGKILL (after a timeout, or at the end of a stop).
    Kill(Reason),
}

/// What a worker's end means for the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It left because the master asked (reload, scale-down, memory,
    /// `ctl worker kill`, a stop).
    Retired(Reason),
    /// It served its `--max-requests` and left by itself, as agreed.
    Recycled,
    /// The master timed it out (its heartbeat went silent).
    TimedOut,
    /// It died unasked before reporting ready: counts toward
    /// `--max-boot-failures`, and its replacement waits out a backoff.
    FailedBoot,
    /// It said the app cannot be loaded (exit 4 before ready): the master stops with 4.
    AppLoadFailed,
    /// It said it cannot set itself up (exit 3 before ready): the master stops with 3.
    CannotBoot,
    /// It had reported ready and died unasked: replaced at once.
    Crashed {
        /// It lived less than `--min-worker-lifetime`, so it did not clear
        /// the failed-boot count (the log says how young it was).
        young: bool,
    },
}

impl Verdict {
    /// The restart reason it counts as in `ctl stats` and `/metrics`; None
    /// when the master stops instead of replacing the worker.
    pub fn restart_reason(self) -> Option<Reason> {
        match self {
            Verdict::Retired(reason) => Some(reason),
            Verdict::Recycled => Some(Reason::MaxRequests),
            Verdict::TimedOut => Some(Reason::Timeout),
            Verdict::FailedBoot | Verdict::Crashed { .. } => Some(Reason::Crash),
            Verdict::AppLoadFailed | Verdict::CannotBoot => None,
        }
    }
}

/// Classify a reaped worker from what the master had asked of it, how it
/// exited, the state it last reported in its slot (`Booting` means it never
/// reported ready), and how long it lived.
pub fn classify_exit(
    ask: Ask,
    exit: Exit,
    reported: WorkerState,
    lived: Duration,
    min_worker_lifetime: Duration,
) -> Verdict {
    match ask {
        Ask::Abort(_) | Ask::Kill(Reason::Timeout) => Verdict::TimedOut,
        Ask::Retire(reason) | Ask::Kill(reason) => Verdict::Retired(reason),
        Ask::Serve => match (reported, exit) {
            (WorkerState::Booting, Exit::Code(EXIT_APP_LOAD_FAILED)) => Verdict::AppLoadFailed,
            (WorkerState::Booting, Exit::Code(EXIT_BOOT_FAILED)) => Verdict::CannotBoot,
            (WorkerState::Booting, _) => Verdict::FailedBoot,
            (WorkerState::Retiring, Exit::Code(0)) => Verdict::Recycled,
            _ => Verdict::Crashed {
                young: lived < min_worker_lifetime,
            },
        },
    }
}

/// Whether a worker has settled: it reported ready and stayed up
/// --min-worker-lifetime, so the app boots and the failed-boot count is
/// cleared. The same readiness rule as `classify_exit`'s.
pub fn has_settled(reported: WorkerState, lived: Duration, min_worker_lifetime: Duration) -> bool {
    reported != WorkerState::Booting && lived >= min_worker_lifetime
}

/// 100 ms after a vacancy's first failed boot, doubling up to 10 s.
pub fn backoff(failures_in_a_row: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);
    FIRST
        .saturating_mul(1 << failures_in_a_row.saturating_sub(1).min(8))
        .min(MAX)
}

/// A vacancy whose worker failed to boot: refilled at `at`, and its next
/// worker carries the count on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeldVacancy {
    at: Instant,
    boot_failures: u32,
}

/// The vacancies held back after failed boots. Only these wait: any other
/// vacancy is filled at once, so one app instance that keeps failing to
/// boot never keeps the others from being replaced.
#[derive(Debug, Default)]
pub struct HeldVacancies(Vec<HeldVacancy>);

impl HeldVacancies {
    /// Hold a vacancy whose worker failed its `boot_failures`th boot in a
    /// row, for that many failures' backoff; returns the backoff.
    pub fn hold(&mut self, now: Instant, boot_failures: u32) -> Duration {
        let wait = backoff(boot_failures);
        self.0.push(HeldVacancy {
            at: now + wait,
            boot_failures,
        });
        wait
    }

    /// Of `missing` vacancies, the ones to fill now: one entry per worker to
    /// fork, giving the failed boots in a row of the vacancy it fills (0 for
    /// a fresh one). Held vacancies whose time has come are taken out; the
    /// others keep waiting and are not filled.
    pub fn to_fill(&mut self, missing: usize, now: Instant) -> Vec<u32> {
        if self.0.len() > missing {
            // Scaled down meanwhile: forget the vacancies due last.
            self.0.sort_by_key(|h| h.at);
            self.0.truncate(missing);
        }
        let (due, waiting): (Vec<HeldVacancy>, Vec<HeldVacancy>) =
            self.0.iter().partition(|h| h.at <= now);
        self.0 = waiting;
        let fresh = missing - self.0.len() - due.len();
        due.iter()
            .map(|h| h.boot_failures)
            .chain(std::iter::repeat_n(0, fresh))
            .collect()
    }

    /// Give back a vacancy `to_fill` handed out that could not be filled
    /// (forking failed): due at once, with its count.
    pub fn put_back(&mut self, now: Instant, boot_failures: u32) {
        if boot_failures > 0 {
            self.0.push(HeldVacancy {
                at: now,
                boot_failures,
            });
        }
    }

    /// When each held vacancy is due.
    pub fn due_times(&self) -> impl Iterator<Item = Instant> + '_ {
        self.0.iter().map(|h| h.at)
    }
}

/// The window crash rates are counted over.
pub const CRASH_WINDOW_SECS: u64 = 60;
/// At most one crash-rate line per this long, however fast workers die.
const CRASH_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Requests kept for the crash-rate line.
const CRASH_REQUESTS_KEPT: usize = 5;

/// Crashes of booted workers over the last minute, in fixed memory: one
/// counter per second of a 60-second ring, plus the last few requests the
/// crashes interrupted.
pub struct CrashRate {
    /// Crashes per second, indexed by second % 60.
    per_second: [u32; CRASH_WINDOW_SECS as usize],
    /// The second (since the master started) of the last crash recorded.
    latest: u64,
    /// What the last few crashed workers were doing, newest last.
    requests: VecDeque<String>,
    /// No rate line before this.
    next_report: Option<Instant>,
}

impl Default for CrashRate {
    fn default() -> CrashRate {
        CrashRate {
            per_second: [0; CRASH_WINDOW_SECS as usize],
            latest: 0,
            requests: VecDeque::with_capacity(CRASH_REQUESTS_KEPT),
            next_report: None,
        }
    }
}

impl CrashRate {
    /// Count a crash in second `second` (since the master started) of a
    /// worker that was doing `what`.
    pub fn record(&mut self, second: u64, what: String) {
        self.forget_before(second);
        self.per_second[(second % CRASH_WINDOW_SECS) as usize] += 1;
        if self.requests.len() == CRASH_REQUESTS_KEPT {
            self.requests.pop_front();
        }
        self.requests.push_back(what);
    }

    /// Crashes in the 60 seconds up to and including `second`.
    pub fn in_last_minute(&self, second: u64) -> u32 {
        if second >= self.latest + CRASH_WINDOW_SECS {
            return 0;
        }
        (second.saturating_sub(CRASH_WINDOW_SECS - 1)..=second)
            .filter(|s| *s <= self.latest)
            .map(|s| self.per_second[(s % CRASH_WINDOW_SECS) as usize])
            .sum()
    }

    /// Clear the seconds that fell out of the window by `second`.
    fn forget_before(&mut self, second: u64) {
        if second < self.latest {
            return;
        }
        let stale = (second - self.latest).min(CRASH_WINDOW_SECS);
        for s in (self.latest + 1..).take(stale as usize) {
            self.per_second[(s % CRASH_WINDOW_SECS) as usize] = 0;
        }
        self.latest = second;
    }

    /// The rate line to log now, if crashes repeat (two or more in the
    /// window) and none was logged in the last 10 s.
    pub fn report(&mut self, second: u64, now: Instant) -> Option<String> {
        let n = self.in_last_minute(second);
        if n < 2 || self.next_report.is_some_and(|at| now < at) {
            return None;
        }
        self.next_report = Some(now + CRASH_REPORT_EVERY);
        let requests: Vec<&str> = self.requests.iter().map(String::as_str).collect();
        Some(format!(
            "{n} workers crashed in the last {CRASH_WINDOW_SECS}s; each was replaced at once and forkhorn keeps serving; the last {} were {}",
            requests.len(),
            requests.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::signals::Sig;

    const MIN: Duration = Duration::from_secs(1);
    const YOUNG: Duration = Duration::from_millis(200);
    const OLD: Duration = Duration::from_secs(5);

    fn verdict(ask: Ask, exit: Exit, reported: WorkerState, lived: Duration) -> Verdict {
        classify_exit(ask, exit, reported, lived, MIN)
    }

    #[test]
    fn a_worker_that_dies_before_it_is_ready_failed_to_boot() {
        for exit in [
            Exit::Signal(Sig::SIGKILL),
            Exit::Signal(Sig::SIGSEGV),
            Exit::Code(1),
            Exit::Code(0),
        ] {
            for lived in [YOUNG, OLD] {
                assert_eq!(
                    verdict(Ask::Serve, exit, WorkerState::Booting, lived),
                    Verdict::FailedBoot,
                    "{exit} after {lived:?}"
                );
            }
        }
    }

    #[test]
    fn the_workers_own_boot_exit_codes_stop_the_master() {
        let booting = WorkerState::Booting;
        assert_eq!(
            verdict(Ask::Serve, Exit::Code(4), booting, YOUNG),
            Verdict::AppLoadFailed
        );
        assert_eq!(
            verdict(Ask::Serve, Exit::Code(3), booting, YOUNG),
            Verdict::CannotBoot
        );
    }

    #[test]
    fn a_booted_worker_that_dies_unasked_crashed_however_young() {
        for reported in [WorkerState::Idle, WorkerState::Busy, WorkerState::Stopping] {
            for exit in [
                Exit::Signal(Sig::SIGKILL),
                Exit::Signal(Sig::SIGSEGV),
                Exit::Signal(Sig::SIGABRT),
                Exit::Code(0),
                Exit::Code(1),
                // The app's own exit(3) or exit(4) after boot is a crash too.
                Exit::Code(3),
                Exit::Code(4),
            ] {
                assert_eq!(
                    verdict(Ask::Serve, exit, reported, YOUNG),
                    Verdict::Crashed { young: true },
                    "{reported:?} {exit}"
                );
                assert_eq!(
                    verdict(Ask::Serve, exit, reported, OLD),
                    Verdict::Crashed { young: false },
                    "{reported:?} {exit}"
                );
            }
        }
    }

    #[test]
    fn a_retiring_worker_that_exits_0_was_recycled_and_one_that_dies_crashed() {
        let retiring = WorkerState::Retiring;
        assert_eq!(
            verdict(Ask::Serve, Exit::Code(0), retiring, OLD),
            Verdict::Recycled
        );
        assert_eq!(
            verdict(Ask::Serve, Exit::Signal(Sig::SIGKILL), retiring, OLD),
            Verdict::Crashed { young: false }
        );
    }

    #[test]
    fn a_worker_the_master_timed_out_timed_out_however_it_ended() {
        for ask in [Ask::Abort(Instant::now()), Ask::Kill(Reason::Timeout)] {
            for reported in [WorkerState::Booting, WorkerState::Busy] {
                for exit in [Exit::Code(134), Exit::Signal(Sig::SIGKILL)] {
                    assert_eq!(verdict(ask, exit, reported, OLD), Verdict::TimedOut);
                }
            }
        }
    }

    #[test]
    fn a_worker_the_master_asked_to_go_retired_however_it_ended() {
        for reason in [Reason::Reload, Reason::Memory, Reason::Shutdown] {
            for ask in [Ask::Retire(reason), Ask::Kill(reason)] {
                for reported in [WorkerState::Booting, WorkerState::Idle] {
                    for exit in [Exit::Code(0), Exit::Code(3), Exit::Signal(Sig::SIGKILL)] {
                        assert_eq!(
                            verdict(ask, exit, reported, YOUNG),
                            Verdict::Retired(reason)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn verdicts_count_as_restart_reasons() {
        assert_eq!(Verdict::FailedBoot.restart_reason(), Some(Reason::Crash));
        assert_eq!(
            Verdict::Crashed { young: true }.restart_reason(),
            Some(Reason::Crash)
        );
        assert_eq!(Verdict::TimedOut.restart_reason(), Some(Reason::Timeout));
        assert_eq!(
            Verdict::Recycled.restart_reason(),
            Some(Reason::MaxRequests)
        );
        assert_eq!(Verdict::CannotBoot.restart_reason(), None);
        assert_eq!(Verdict::AppLoadFailed.restart_reason(), None);
    }

    #[test]
    fn a_worker_settles_once_ready_and_min_worker_lifetime_old() {
        let min = Duration::from_secs(1);
        let long = Duration::from_secs(5);
        assert!(!has_settled(WorkerState::Booting, long, min), "never ready");
        assert!(
            !has_settled(WorkerState::Idle, Duration::from_millis(50), min),
            "too young"
        );
        assert!(has_settled(WorkerState::Idle, min, min));
        assert!(has_settled(WorkerState::Busy, long, min));
    }

    #[test]
    fn backoff_doubles_from_100ms_to_10s() {
        let secs: Vec<f64> = (1..=9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]);
    }

    #[test]
    fn a_vacancy_that_keeps_failing_to_boot_waits_alone() {
        let now = Instant::now();
        let mut held = HeldVacancies::default();
        // One of three workers failed its boot twice in a row; then the
        // other two crashed after boot.
        assert_eq!(held.hold(now, 2), Duration::from_millis(200));
        assert_eq!(
            held.to_fill(3, now),
            [0, 0],
            "the two crashed workers are replaced at once"
        );
        assert_eq!(held.to_fill(1, now), Vec::<u32>::new(), "the third waits");
        let later = now + Duration::from_millis(200);
        assert_eq!(
            held.to_fill(1, later),
            [2],
            "then it is filled, its count carried on"
        );
        assert_eq!(held.to_fill(1, later), [0], "and held no more");
    }

    #[test]
    fn held_vacancies_beyond_the_wanted_count_are_forgotten() {
        let now = Instant::now();
        let mut held = HeldVacancies::default();
        held.hold(now, 1);
        held.hold(now, 5);
        assert_eq!(held.to_fill(1, now), Vec::<u32>::new());
        assert_eq!(held.due_times().count(), 1);
        assert_eq!(held.due_times().next(), Some(now + backoff(1)));
        held.put_back(now, 3);
        assert_eq!(held.to_fill(2, now), [3]);
    }

    #[test]
    fn the_crash_rate_counts_the_last_minute_only() {
        let mut rate = CrashRate::default();
        rate.record(5, "a".into());
        rate.record(5, "b".into());
        rate.record(30, "c".into());
        assert_eq!(rate.in_last_minute(30), 3);
        assert_eq!(rate.in_last_minute(64), 3);
        assert_eq!(rate.in_last_minute(65), 1);
        rate.record(100, "d".into());
        assert_eq!(rate.in_last_minute(100), 1);
        rate.record(1000, "e".into());
        assert_eq!(rate.in_last_minute(1000), 1);
        assert_eq!(rate.in_last_minute(2000), 0);
    }

    #[test]
    fn the_crash_rate_is_reported_once_crashes_repeat_and_at_most_every_10s() {
        let mut rate = CrashRate::default();
        let t0 = Instant::now();
        rate.record(1, "idle".into());
        assert_eq!(rate.report(1, t0), None, "one crash is no pattern");
        rate.record(2, "GET /boom peer=10.0.0.7:5555 after 0.0s".into());
        let line = rate.report(2, t0).expect("a second crash is reported");
        assert!(
            line.starts_with("2 workers crashed in the last 60s")
                && line.contains("GET /boom peer=10.0.0.7:5555"),
            "{line}"
        );
        rate.record(3, "idle".into());
        assert_eq!(rate.report(3, t0 + Duration::from_secs(1)), None);
        assert!(rate.report(13, t0 + Duration::from_secs(11)).is_some());
    }
}
