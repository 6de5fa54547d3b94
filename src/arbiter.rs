//! The master: keeps the right number of healthy workers running.
//!
//! It binds nothing and serves nothing itself (main hands it the listeners);
//! it forks workers, reads their heartbeat slots, reaps them, and reacts to
//! signals. It is single-threaded for its whole life, because it forks, and
//! it sleeps until the next thing is due (a heartbeat deadline, a kill
//! escalation, a respawn, the end of a graceful stop) rather than ticking.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::app::App;
use crate::config::Config;
use crate::critical;
use crate::heartbeat::{Slot, WorkerState};
use crate::listener::Listener;
use crate::pidfile::Pidfile;
use crate::sys::process::{self, Exit, Forked, Pid};
use crate::sys::signals::{self, Sig, SignalPipe};
use crate::worker::{self, EXIT_APP_LOAD_FAILED, EXIT_BOOT_FAILED, MASTER_SIGNALS};

/// Time between SIGABRT (timeout) and SIGKILL for a worker that is still there.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// How long a quick stop (INT, QUIT) waits before SIGKILL.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after its fork counts as a failed boot.
const MIN_WORKER_LIFETIME: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The longest the master sleeps when nothing is due.
const IDLE_WAKEUP: Duration = Duration::from_secs(30);

/// Exit status when workers cannot boot (as gunicorn).
pub const EXIT_WORKER_BOOT_ERROR: i32 = 3;
/// Exit status when the app cannot be loaded (as gunicorn).
pub const EXIT_APP_LOAD_ERROR: i32 = 4;

/// Builds the app in each worker, after fork.
pub type AppFactory = Box<dyn Fn() -> Result<Box<dyn App>, String>>;

/// What the master is asking of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Keep serving.
    Serve,
    /// Told TERM (reload, scale-down, stop): finish and exit.
    Retire,
    /// Timed out: sent SIGABRT at this instant; SIGKILL follows.
    Abort(Instant),
    /// Sent SIGKILL.
    Kill,
}

struct WorkerHandle {
    pid: Pid,
    slot: Slot,
    /// Reload generation it was forked in (HUP starts a new one).
    generation: u64,
    started: Instant,
    ask: Ask,
}

impl WorkerHandle {
    /// Serving and not about to leave: counts toward the wanted number.
    fn is_active(&self) -> bool {
        self.ask == Ask::Serve && self.slot.state() != WorkerState::Retiring
    }

    /// Booted and serving requests.
    fn is_ready(&self) -> bool {
        self.is_active() && matches!(self.slot.state(), WorkerState::Idle | WorkerState::Busy)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    /// Workers were told to stop; SIGKILL for the rest at `deadline`.
    Stopping {
        deadline: Instant,
        graceful: bool,
    },
}

pub struct Arbiter {
    config: Config,
    listeners: Vec<Listener>,
    app: AppFactory,
    signals: SignalPipe,
    /// Workers write a byte here when their state changes in a way the master
    /// should act on at once (booted, retiring).
    notify_read: OwnedFd,
    notify_write: OwnedFd,
    workers: Vec<WorkerHandle>,
    /// Workers wanted (changed by TTIN/TTOU).
    wanted: usize,
    generation: u64,
    lifecycle: Lifecycle,
    /// No worker is forked before this (crash-loop backoff).
    respawn_at: Option<Instant>,
    /// Consecutive workers that died within MIN_WORKER_LIFETIME.
    failed_boots: u32,
    exit_code: i32,
    pid: Pid,
    _pidfile: Option<Pidfile>,
}

impl Arbiter {
    /// Take over the listeners and install the master's signal handling.
    pub fn new(
        config: Config,
        listeners: Vec<Listener>,
        app: AppFactory,
    ) -> std::io::Result<Arbiter> {
        let signals = SignalPipe::install(MASTER_SIGNALS)?;
        let (notify_read, notify_write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let pidfile = config.pidfile.as_deref().map(Pidfile::create).transpose()?;
        Ok(Arbiter {
            wanted: config.workers,
            config,
            listeners,
            app,
            signals,
            notify_read,
            notify_write,
            workers: Vec::new(),
            generation: 0,
            lifecycle: Lifecycle::Running,
            respawn_at: None,
            failed_boots: 0,
            exit_code: 0,
            pid: process::getpid(),
            _pidfile: pidfile,
        })
    }

    /// Run until stopped; returns the process exit status.
    pub fn run(mut self) -> i32 {
        log::info!("Starting forkhorn {}", env!("CARGO_PKG_VERSION"));
        for l in &self.listeners {
            log::info!("Listening at: {} ({})", l.name, self.pid);
        }
        log::info!("Using worker: sync");
        loop {
            self.handle_signals();
            self.reap_exited();
            self.check_heartbeats(Instant::now());
            self.escalate_stop(Instant::now());
            self.spawn_missing();
            self.retire_surplus();
            if self.is_finished() {
                break;
            }
            self.sleep_until(self.next_wakeup());
        }
        self.close_listeners();
        log::info!("Shutting down: Master");
        self.exit_code
    }

    fn handle_signals(&mut self) {
        for sig in self.signals.drain() {
            match sig {
                Sig::SIGCHLD => {}
                Sig::SIGTERM => self.stop(true, "term"),
                Sig::SIGINT => self.stop(false, "int"),
                Sig::SIGQUIT => self.stop(false, "quit"),
                Sig::SIGHUP => self.reload(),
                Sig::SIGTTIN => {
                    self.wanted += 1;
                    log::info!("Handling signal: ttin; workers wanted: {}", self.wanted);
                }
                Sig::SIGTTOU => {
                    if self.wanted > 1 {
                        self.wanted -= 1;
                    }
                    log::info!("Handling signal: ttou; workers wanted: {}", self.wanted);
                }
                Sig::SIGUSR1 => {
                    log::info!("Handling signal: usr1; reopening log files");
                    crate::logging::reopen();
                    self.signal_workers(Sig::SIGUSR1);
                }
                Sig::SIGUSR2 => {
                    log::warn!(
                        "Handling signal: usr2; binary upgrade is not supported yet, ignoring"
                    );
                }
                Sig::SIGWINCH => log::debug!("Handling signal: winch; ignored (not daemonized)"),
                other => log::debug!("ignoring signal {other}"),
            }
        }
        // Drain the wake-up pipe: the loop re-reads every slot anyway.
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(&self.notify_read, &mut buf), Ok(n) if n > 0) {}
    }

    fn stop(&mut self, graceful: bool, name: &str) {
        let now = Instant::now();
        match self.lifecycle {
            Lifecycle::Stopping {
                graceful: false, ..
            } => return,
            Lifecycle::Stopping { graceful: true, .. } if graceful => return,
            _ => {}
        }
        log::info!("Handling signal: {name}");
        let grace = if graceful {
            self.config.graceful_timeout
        } else {
            QUICK_STOP_GRACE
        };
        self.lifecycle = Lifecycle::Stopping {
            deadline: now + grace,
            graceful,
        };
        // New connections should be refused, not queued for workers that are leaving.
        self.close_listeners();
        let sig = if graceful { Sig::SIGTERM } else { Sig::SIGINT };
        for w in &mut self.workers {
            if matches!(w.ask, Ask::Serve | Ask::Retire) {
                process::signal(w.pid, sig);
                w.ask = Ask::Retire;
            }
        }
    }

    fn close_listeners(&mut self) {
        for l in &self.listeners {
            l.remove_socket_file();
        }
        self.listeners.clear();
    }

    /// HUP: start a new generation of workers; the old one is retired once
    /// the new one is serving (retire_surplus), so no request goes unserved.
    fn reload(&mut self) {
        if self.lifecycle != Lifecycle::Running {
            return;
        }
        self.generation += 1;
        log::info!("Handling signal: hup; starting {} new workers", self.wanted);
    }

    fn signal_workers(&self, sig: Sig) {
        for w in &self.workers {
            process::signal(w.pid, sig);
        }
    }

    fn reap_exited(&mut self) {
        for (pid, exit) in process::reap_exited() {
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                // An orphan re-parented to us (we may be PID 1): reaped, ignored.
                log::debug!("reaped process {pid} ({exit}), not a worker");
                continue;
            };
            let w = self.workers.swap_remove(i);
            self.worker_exited(w, exit);
        }
    }

    fn worker_exited(&mut self, w: WorkerHandle, exit: Exit) {
        let pid = w.pid;
        let lived = w.started.elapsed();
        let requests = w.slot.requests();
        match (w.ask, exit) {
            (Ask::Abort(_) | Ask::Kill, _) => {
                log::info!("Worker (pid:{pid}) ended after timeout ({exit})");
            }
            (Ask::Retire, _) => log::info!("Worker exiting (pid: {pid})"),
            (Ask::Serve, Exit::Code(0)) if w.slot.state() == WorkerState::Retiring => {
                log::info!("Worker (pid:{pid}) recycled after {requests} requests (max-requests)");
            }
            (Ask::Serve, Exit::Code(EXIT_APP_LOAD_FAILED)) => {
                self.halt(
                    EXIT_APP_LOAD_ERROR,
                    &format!("App failed to load (worker pid:{pid} {exit})"),
                );
                return;
            }
            (Ask::Serve, Exit::Code(EXIT_BOOT_FAILED)) => {
                self.halt(
                    EXIT_WORKER_BOOT_ERROR,
                    &format!("Worker failed to boot (pid:{pid} {exit})"),
                );
                return;
            }
            (Ask::Serve, Exit::Signal(Sig::SIGKILL)) => {
                log::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
            }
            (Ask::Serve, exit) => log::error!("Worker (pid:{pid}) died unexpectedly ({exit})"),
        }
        let ours = matches!(w.ask, Ask::Retire) || exit == Exit::Code(0);
        if !ours && lived < MIN_WORKER_LIFETIME {
            self.failed_boots += 1;
            let backoff = BACKOFF_FIRST
                .saturating_mul(1 << self.failed_boots.min(8).saturating_sub(1))
                .min(BACKOFF_MAX);
            log::warn!(
                "Worker (pid:{pid}) died {:.2}s after start; next worker in {:.1}s",
                lived.as_secs_f64(),
                backoff.as_secs_f64()
            );
            self.respawn_at = Some(Instant::now() + backoff);
        } else if lived >= MIN_WORKER_LIFETIME {
            self.failed_boots = 0;
        }
    }

    /// Stop everything because workers cannot run, with a reason an operator can act on.
    fn halt(&mut self, code: i32, reason: &str) {
        critical!("{reason}; shutting down");
        self.exit_code = code;
        self.stop(false, "halt");
    }

    /// Time out workers whose heartbeat went silent, and escalate to SIGKILL.
    fn check_heartbeats(&mut self, now: Instant) {
        let Some(timeout) = self.config.timeout else {
            return;
        };
        for w in &mut self.workers {
            match w.ask {
                Ask::Serve | Ask::Retire => {
                    let silence = w.slot.silence();
                    if silence > timeout {
                        let request = w
                            .slot
                            .in_flight()
                            .map_or_else(|| "(no request in flight)".to_owned(), |r| r.to_string());
                        critical!("WORKER TIMEOUT (pid:{}) {request}", w.pid);
                        process::signal(w.pid, Sig::SIGABRT);
                        w.ask = Ask::Abort(now);
                    }
                }
                Ask::Abort(at) if now >= at + ABORT_GRACE => {
                    log::warn!(
                        "Worker (pid:{}) did not exit on SIGABRT; sending SIGKILL",
                        w.pid
                    );
                    process::signal(w.pid, Sig::SIGKILL);
                    w.ask = Ask::Kill;
                }
                Ask::Abort(_) | Ask::Kill => {}
            }
        }
    }

    fn escalate_stop(&mut self, now: Instant) {
        if let Lifecycle::Stopping { deadline, .. } = self.lifecycle
            && now >= deadline
        {
            for w in &mut self.workers {
                if w.ask != Ask::Kill {
                    log::warn!(
                        "Worker (pid:{}) still running at the end of the graceful timeout; sending SIGKILL",
                        w.pid
                    );
                    process::signal(w.pid, Sig::SIGKILL);
                    w.ask = Ask::Kill;
                }
            }
        }
    }

    fn spawn_missing(&mut self) {
        if self.lifecycle != Lifecycle::Running {
            return;
        }
        if self.respawn_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.respawn_at = None;
        let active = self
            .workers
            .iter()
            .filter(|w| w.generation == self.generation && w.is_active())
            .count();
        for _ in active..self.wanted {
            if let Err(e) = self.spawn_worker() {
                log::error!("cannot start a worker: {e}; retrying");
                self.failed_boots += 1;
                self.respawn_at = Some(
                    Instant::now()
                        + BACKOFF_FIRST
                            .saturating_mul(1 << self.failed_boots.min(7))
                            .min(BACKOFF_MAX),
                );
                return;
            }
        }
    }

    fn spawn_worker(&mut self) -> std::io::Result<()> {
        let slot = Slot::create_in(&self.config.worker_tmp_dir)?;
        let max_requests = self.config.draw_max_requests();
        let mask = signals::block_all()?;
        let forked = process::fork();
        if let Ok(Forked::Child) = forked {
            let mut close_fds = self.signals.fds().to_vec();
            close_fds.push(self.notify_read.as_raw_fd());
            let spec = worker::Spec {
                config: &self.config,
                listeners: &self.listeners,
                slot: &slot,
                master: self.pid,
                max_requests,
                notify_fd: self.notify_write.as_fd().as_raw_fd(),
                close_fds,
                app: &*self.app,
            };
            worker::run(spec);
        }
        signals::restore_mask(&mask)?;
        let Forked::Parent(pid) = forked? else {
            unreachable!("the child never returns from worker::run")
        };
        self.workers.push(WorkerHandle {
            pid,
            slot,
            generation: self.generation,
            started: Instant::now(),
            ask: Ask::Serve,
        });
        Ok(())
    }

    /// Retire workers that are no longer wanted: the previous generation once
    /// the new one is serving (reload), and the oldest ones beyond the wanted
    /// count (TTOU).
    fn retire_surplus(&mut self) {
        if self.lifecycle != Lifecycle::Running {
            return;
        }
        let generation = self.generation;
        let ready_new = self
            .workers
            .iter()
            .filter(|w| w.generation == generation && w.is_ready())
            .count();
        if ready_new >= self.wanted {
            let mut retired = 0;
            for w in self
                .workers
                .iter_mut()
                .filter(|w| w.generation != generation && w.ask == Ask::Serve)
            {
                process::signal(w.pid, Sig::SIGTERM);
                w.ask = Ask::Retire;
                retired += 1;
            }
            if retired > 0 {
                log::info!(
                    "Reload: {ready_new} new workers serving; retiring {retired} old workers"
                );
            }
        }
        let mut current: Vec<&mut WorkerHandle> = self
            .workers
            .iter_mut()
            .filter(|w| w.generation == generation && w.is_active())
            .collect();
        if current.len() > self.wanted {
            current.sort_by_key(|w| w.started);
            let extra = current.len() - self.wanted;
            for w in current.into_iter().take(extra) {
                log::info!("Retiring worker (pid:{}) to scale down", w.pid);
                process::signal(w.pid, Sig::SIGTERM);
                w.ask = Ask::Retire;
            }
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Stopping { .. }) && self.workers.is_empty()
    }

    /// When the loop must next look at the workers even if nothing wakes it.
    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut next = now + IDLE_WAKEUP;
        if let Some(timeout) = self.config.timeout {
            for w in &self.workers {
                let due = match w.ask {
                    Ask::Serve | Ask::Retire => {
                        now + timeout.saturating_sub(w.slot.silence()) + Duration::from_millis(1)
                    }
                    Ask::Abort(at) => at + ABORT_GRACE,
                    Ask::Kill => continue,
                };
                next = next.min(due);
            }
        }
        if let Lifecycle::Stopping { deadline, .. } = self.lifecycle {
            next = next.min(deadline);
        }
        if let Some(at) = self.respawn_at {
            next = next.min(at);
        }
        next
    }

    /// Sleep until `until`, a signal, or a worker's wake-up byte.
    fn sleep_until(&self, until: Instant) {
        let wait = until.saturating_duration_since(Instant::now());
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.notify_read.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
    }
}
