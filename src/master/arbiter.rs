//! The master: keeps the right number of healthy workers running.
//!
//! It serves no app requests itself (main hands it the bound listeners); it
//! forks workers, reads their heartbeat slots, reaps them, reacts to signals
//! and answers the control socket and metrics endpoint. It is
//! single-threaded for its whole life, because it forks, and it sleeps until
//! the next thing is due (a heartbeat deadline, a kill escalation, a respawn,
//! a memory check, the end of a graceful stop) rather than ticking.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::app::{AppFactory, Hooks};
use crate::balance::Balance;
use crate::config::Config;
use crate::critical;
use crate::heartbeat::{Counts, Slot, WorkerState};
use crate::listener::Listener;
use crate::master::control::{self, Command};
use crate::master::oneshot::OneShotServer;
use crate::master::overdue::{self, Overdue};
use crate::master::pidfile::Pidfile;
use crate::master::stats::{Reason, Snapshot, WorkerInfo};
use crate::master::systemd::{self, Notifier};
use crate::master::upgrade::{self, Relaunch, Upgrade};
use crate::master::worker_exit::{self, Ask, CrashRate, HeldVacancies, Verdict, classify_exit};
use crate::sys::process::{self, Exit, Forked, Pid};
use crate::sys::procfs;
use crate::sys::signals::{self, Sig, SignalPipe};
use crate::worker::{self, MASTER_SIGNALS};

/// How long a quick stop (INT, QUIT) waits before SIGKILL.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(1);
/// The longest the master sleeps when nothing is due.
const IDLE_WAKEUP: Duration = Duration::from_secs(30);

/// Exit status when workers cannot boot (as gunicorn).
pub const EXIT_WORKER_BOOT_ERROR: i32 = 3;
/// Exit status when the app cannot be loaded (as gunicorn).
pub const EXIT_APP_LOAD_ERROR: i32 = 4;

/// Re-reads the configuration on HUP (the config file may have changed).
pub type Reloader = Box<dyn Fn() -> Result<Config, String>>;

struct WorkerHandle {
    /// Small number for people (`ctl workers`), never reused.
    id: u64,
    pid: Pid,
    slot: Slot,
    /// Its seat in the accept balance (None: more workers than seats).
    seat: Option<usize>,
    /// Reload generation it was forked in (HUP starts a new one).
    generation: u64,
    started: Instant,
    ask: Ask,
    /// Failed boots in a row of the vacancy it fills (0: a fresh one); its
    /// next failure backs off from there.
    boot_failures: u32,
    /// Reported ready and stayed up --min-worker-lifetime: the app boots,
    /// so the failed-boot count has been cleared.
    is_settled: bool,
}

impl WorkerHandle {
    /// Reported ready in its slot and has lived `min_lifetime`.
    fn has_settled(&self, min_lifetime: Duration) -> bool {
        worker_exit::has_settled(self.slot.state(), self.started.elapsed(), min_lifetime)
    }

    /// Serving and not about to leave: counts toward the wanted number.
    fn is_active(&self) -> bool {
        self.ask == Ask::Serve && self.slot.state() != WorkerState::Retiring
    }

    /// Booted and serving requests.
    fn is_ready(&self) -> bool {
        self.is_active() && matches!(self.slot.state(), WorkerState::Idle | WorkerState::Busy)
    }

    /// Ask it to finish its request and exit.
    fn retire(&mut self, reason: Reason) {
        process::signal(self.pid, Sig::SIGTERM);
        self.ask = Ask::Retire(reason);
    }
}

/// Where the master is in its life. Pause and upgrade, which happen while
/// running, are in [`Upgrade`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Keeping the wanted workers running.
    Running {
        /// What is still to be announced once the current generation serves.
        readiness: Readiness,
    },
    /// Workers were told to stop; SIGKILL for the rest at `deadline`.
    Stopping {
        deadline: Instant,
        /// TERM (finish requests) rather than INT/QUIT (stop now).
        graceful: bool,
    },
}

impl Lifecycle {
    /// Whether a stop (graceful: TERM; quick: INT, QUIT, a fatal failure)
    /// changes anything: a quick stop cuts a graceful one short; nothing
    /// changes a quick one, and a second graceful stop is the first.
    fn is_changed_by_stop(self, graceful: bool) -> bool {
        match self {
            Lifecycle::Running { .. } => true,
            Lifecycle::Stopping {
                graceful: was_graceful,
                ..
            } => was_graceful && !graceful,
        }
    }
}

/// What `announce_readiness` still has to say once every wanted worker of
/// the current generation serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// No generation has served yet: run `when_ready`, then READY=1.
    Starting,
    /// A reload started a new generation: READY=1 again.
    Reloading,
    /// Said; nothing to announce.
    Announced,
}

impl Readiness {
    /// A reload starts a generation that has to be announced again.
    fn reloaded(self) -> Readiness {
        match self {
            Readiness::Starting => Readiness::Starting,
            Readiness::Reloading | Readiness::Announced => Readiness::Reloading,
        }
    }
}

/// The master process's state: its workers, listeners and sockets, and
/// where it is in its life. One per process; `run` is its whole life.
pub struct Arbiter {
    config: Config,
    listeners: Vec<Listener>,
    /// Listener names, kept for status after the listeners close.
    listener_names: Vec<String>,
    app: AppFactory,
    signals: SignalPipe,
    /// Workers write a byte here when their state changes in a way the master
    /// should act on at once (booted, retiring).
    notify_read: OwnedFd,
    notify_write: OwnedFd,
    control: Option<(OneShotServer, PathBuf)>,
    metrics: Option<OneShotServer>,
    workers: Vec<WorkerHandle>,
    /// Connections held per worker, shared with the workers (`balance`).
    balance: Balance,
    /// Workers wanted (TTIN/TTOU, `ctl worker add/remove`).
    wanted: usize,
    generation: u64,
    lifecycle: Lifecycle,
    /// Vacancies left by workers that failed to boot, each refilled after
    /// its own backoff; every other vacancy is filled at once.
    held: HeldVacancies,
    /// Workers in a row that died before reporting ready, with no worker
    /// settling in between (--max-boot-failures).
    failed_boots: u32,
    /// No worker is forked before this: forking or creating a slot failed.
    spawn_retry_at: Option<Instant>,
    /// Spawn attempts in a row that failed (fork, heartbeat file).
    spawn_failures: u32,
    /// Booted workers that crashed, over the last minute.
    crashes: CrashRate,
    next_memory_check: Instant,
    /// Counts of reaped workers, so totals survive worker deaths.
    retired: Counts,
    restarts: BTreeMap<Reason, u64>,
    next_worker_id: u64,
    exit_code: i32,
    /// Why the master stops on its own, for its last log line.
    halt_reason: Option<String>,
    pid: Pid,
    started: Instant,
    /// systemd's NOTIFY_SOCKET, if we run under it.
    notifier: Notifier,
    reloader: Option<Reloader>,
    hooks: Hooks,
    next_watchdog: Option<Instant>,
    pidfile: Option<Pidfile>,
    /// How to start a new master on USR2; None when it cannot be done.
    relaunch: Option<Relaunch>,
    /// Our part in an upgrade (USR2), either role, and the WINCH pause.
    upgrade: Upgrade,
    /// Workers over --max-worker-memory, marked to retire; they get their
    /// TERM once their replacements are forked (`retire_replaced_workers`).
    to_retire_once_replaced: Vec<Pid>,
}

impl Arbiter {
    /// Take over the listeners, install the master's signal handling, and
    /// open the control socket and metrics endpoint.
    pub fn new(
        config: Config,
        listeners: Vec<Listener>,
        app: AppFactory,
    ) -> std::io::Result<Arbiter> {
        log::info!("Starting forkhorn {}", env!("CARGO_PKG_VERSION"));
        let signals = SignalPipe::install(MASTER_SIGNALS)?;
        let (notify_read, notify_write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;

        let metrics = match &config.master.metrics_bind {
            Some(spec) => {
                let l = Listener::bind(&crate::listener::Bind::plain(spec.clone()), 64)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics-bind: {e}")))?;
                log::info!("Metrics at: {}/metrics ({})", l.name, process::getpid());
                Some(OneShotServer::new(
                    l.socket,
                    crate::master::metrics::framing,
                )?)
            }
            None => None,
        };
        let balance = Balance::create_in(&config.master.worker_tmp_dir)?;
        let now = Instant::now();
        let notifier = Notifier::from_env();
        Ok(Arbiter {
            next_watchdog: notifier.watchdog_every.map(|every| now + every),
            notifier,
            reloader: None,
            hooks: Hooks::default(),
            wanted: config.worker.workers,
            listener_names: listeners.iter().map(|l| l.name.clone()).collect(),
            next_memory_check: now + config.worker.memory_check_interval,
            config,
            listeners,
            app,
            signals,
            notify_read,
            notify_write,
            control: None,
            metrics,
            workers: Vec::new(),
            balance,
            generation: 0,
            lifecycle: Lifecycle::Running {
                readiness: Readiness::Starting,
            },
            held: HeldVacancies::default(),
            failed_boots: 0,
            spawn_retry_at: None,
            spawn_failures: 0,
            crashes: CrashRate::default(),
            retired: Counts::default(),
            restarts: BTreeMap::new(),
            next_worker_id: 1,
            exit_code: 0,
            halt_reason: None,
            pid: process::getpid(),
            started: now,
            pidfile: None,
            relaunch: None,
            upgrade: Upgrade::None,
            to_retire_once_replaced: Vec::new(),
        })
    }

    /// Make USR2 start a new master with `relaunch`.
    pub fn with_relaunch(mut self, relaunch: Relaunch) -> Arbiter {
        self.relaunch = Some(relaunch);
        self
    }

    /// We are the new master of an upgrade: take over from `old` once our
    /// workers serve.
    pub fn taking_over_from(mut self, old: Pid) -> Arbiter {
        self.upgrade = Upgrade::TakingOver { old };
        self
    }

    /// The pidfile (PIDFILE.2 while taking over) and the control socket.
    fn open_files(&mut self) -> std::io::Result<()> {
        if let Some(path) = &self.config.master.pidfile {
            let path = if self.upgrade.is_taking_over() {
                upgrade::second_pidfile(path)
            } else {
                path.clone()
            };
            self.pidfile = Some(Pidfile::create(&path)?);
        }
        if let Some(path) = &self.config.master.control_socket {
            // A new master takes the socket path over from the old one.
            match control::bind(path, self.upgrade.is_taking_over()) {
                Ok(socket) => {
                    self.control =
                        Some((OneShotServer::new(socket, control::framing)?, path.clone()))
                }
                // Another forkhorn's socket, or a file that is not one, at a
                // path the user named: refuse to start rather than take it, or
                // leave `forkhorn ctl` at that path talking to another server.
                // At the default path (two servers started alike) the second
                // one runs without, as it always has.
                Err(e)
                    if self.config.master.is_control_socket_named
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AlreadyExists
                        ) =>
                {
                    return Err(e);
                }
                // Better a server without its control socket than no server.
                Err(e) => log::warn!("{e}; running without a control socket"),
            }
        }
        Ok(())
    }

    /// Run `hooks` at their points in the master's life.
    pub fn with_hooks(mut self, hooks: Hooks) -> Arbiter {
        self.hooks = hooks;
        self
    }

    /// Re-read settings with `reloader` on every HUP.
    pub fn with_reloader(mut self, reloader: Reloader) -> Arbiter {
        self.reloader = Some(reloader);
        self
    }

    /// Run until stopped; returns the process exit status.
    pub fn run(mut self) -> i32 {
        if let Err(e) = self.open_files() {
            log::error!("{e}");
            return 1;
        }
        for l in &self.listeners {
            log::info!("Listening at: {} ({})", l.name, self.pid);
        }
        log::info!("Using worker: sync");
        loop {
            self.handle_signals();
            self.drain_worker_wakeups();
            self.reap_exited();
            self.note_settled_workers();
            self.kill_overdue_workers(Instant::now());
            self.check_memory(Instant::now());
            self.escalate_stop(Instant::now());
            self.spawn_missing();
            self.retire_replaced_workers();
            self.retire_surplus();
            self.serve_control();
            self.serve_metrics();
            self.announce_readiness(Instant::now());
            if self.is_finished() {
                break;
            }
            self.sleep_until(self.next_wakeup());
        }
        self.close_listeners();
        if let Some((server, path)) = self.control.take() {
            // Only our own socket: a new master (USR2) may have bound the path anew.
            if server.is_bound_at(&path) {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(hook) = &self.hooks.on_exit {
            hook();
        }
        match self.halt_reason.take() {
            Some(reason) => critical!("Shutting down: {reason}"),
            None => log::info!("Shutting down: Master"),
        }
        self.exit_code
    }

    fn handle_signals(&mut self) {
        for sig in self.signals.drain() {
            match sig {
                Sig::SIGCHLD => {}
                Sig::SIGTERM => self.stop(true, "signal: term"),
                Sig::SIGINT => self.stop(false, "signal: int"),
                Sig::SIGQUIT => self.stop(false, "signal: quit"),
                Sig::SIGHUP => self.reload("signal: hup"),
                Sig::SIGTTIN => self.scale(1, "signal: ttin"),
                Sig::SIGTTOU => self.scale(-1, "signal: ttou"),
                Sig::SIGUSR1 => {
                    log::info!("Handling signal: usr1; reopening log files");
                    self.reopen_logs();
                }
                Sig::SIGUSR2 => self.start_upgrade(),
                Sig::SIGWINCH => self.pause_beside_new_master(),
                other => log::debug!("ignoring signal {other}"),
            }
        }
    }

    /// Empty the workers' wake-up pipe: a byte there only ends the sleep,
    /// and the loop's steps re-read every slot anyway.
    fn drain_worker_wakeups(&mut self) {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(&self.notify_read, &mut buf), Ok(n) if n > 0) {}
    }

    fn is_running(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Running { .. })
    }

    fn stop(&mut self, graceful: bool, why: &str) {
        if !self.lifecycle.is_changed_by_stop(graceful) {
            return;
        }
        log::info!("Handling {why}");
        self.notifier.send("STOPPING=1");
        let grace = if graceful {
            self.config.worker.graceful_timeout
        } else {
            QUICK_STOP_GRACE
        };
        self.lifecycle = Lifecycle::Stopping {
            deadline: Instant::now() + grace,
            graceful,
        };
        // New connections should be refused, not queued for workers that are leaving.
        self.close_listeners();
        let sig = if graceful { Sig::SIGTERM } else { Sig::SIGINT };
        for w in &mut self.workers {
            if matches!(w.ask, Ask::Serve | Ask::Retire(_)) {
                process::signal(w.pid, sig);
                w.ask = Ask::Retire(Reason::Shutdown);
            }
        }
    }

    fn close_listeners(&mut self) {
        for l in &self.listeners {
            l.remove_socket_file();
        }
        self.listeners.clear();
    }

    /// Start a new generation of workers; the old one is retired once the
    /// new one is serving (`retire_surplus`), so no request goes unserved.
    fn reload(&mut self, why: &str) {
        let Lifecycle::Running { readiness } = self.lifecycle else {
            return;
        };
        if self.upgrade.resume() {
            // unicorn's manual rollback: HUP brings the workers back.
            log::info!("Handling {why}; resuming workers stopped by WINCH");
        }
        if let Some(hook) = &self.hooks.on_reload {
            hook();
        }
        if let Some(reloader) = &self.reloader {
            match reloader() {
                Ok(config) => self.apply_config(config),
                Err(e) => {
                    log::error!("cannot reload the configuration, keeping the running one: {e}")
                }
            }
        }
        self.generation += 1;
        log::info!("Handling {why}; starting {} new workers", self.wanted);
        self.notifier.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            systemd::monotonic_usec()
        ));
        self.lifecycle = Lifecycle::Running {
            readiness: readiness.reloaded(),
        };
    }

    /// Once every wanted worker of the current generation serves (at start
    /// and after a reload): finish an upgrade takeover, run `when_ready` the
    /// first time, and tell systemd READY=1; plus the watchdog ping.
    fn announce_readiness(&mut self, now: Instant) {
        let Lifecycle::Running { readiness } = self.lifecycle else {
            return;
        };
        let ready = self
            .workers
            .iter()
            .filter(|w| w.generation == self.generation && w.is_ready())
            .count();
        if ready >= self.wanted {
            self.complete_takeover();
        }
        if readiness != Readiness::Announced && ready >= self.wanted {
            self.lifecycle = Lifecycle::Running {
                readiness: Readiness::Announced,
            };
            if readiness == Readiness::Starting
                && let Some(hook) = &self.hooks.when_ready
            {
                hook();
            }
            let served = self.totals().requests;
            self.notifier.send(&format!(
                "READY=1\nSTATUS={ready} workers serving, {served} requests served"
            ));
        }
        if let (Some(due), Some(every)) = (self.next_watchdog, self.notifier.watchdog_every)
            && now >= due
        {
            self.notifier.send("WATCHDOG=1");
            self.next_watchdog = Some(now + every);
        }
    }

    /// USR2: start the binary again beside us, handing over the listeners.
    fn start_upgrade(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Some(why) = self.upgrade.refusal() {
            log::warn!("Handling signal: usr2; {why}");
            return;
        }
        let Some(relaunch) = &self.relaunch else {
            log::warn!("Handling signal: usr2; this master cannot re-execute itself, ignoring");
            return;
        };
        let listeners: Vec<_> = self
            .listeners
            .iter()
            .map(|l| crate::listener::Bind {
                addr: crate::listener::BindSpec::Fd(l.fd()),
                is_tls: l.is_tls,
                expects_proxy_header: l.expects_proxy_header,
            })
            .collect();
        let metrics_fd = self.metrics.as_ref().map(OneShotServer::listener_fd);
        match relaunch.spawn(&listeners, metrics_fd, self.notifier.socket_path.as_deref()) {
            Ok(pid) => {
                log::info!(
                    "Handling signal: usr2; started new master (pid:{pid}) from {}",
                    relaunch.exe.display()
                );
                self.upgrade.started(pid);
            }
            Err(e) => log::error!(
                "cannot start a new master from {}: {e}; still serving",
                relaunch.exe.display()
            ),
        }
    }

    /// WINCH: beside a new master, stop our workers (and do not replace
    /// them) so the new one serves alone; HUP brings them back.
    fn pause_beside_new_master(&mut self) {
        if !self.upgrade.pause() {
            log::info!("Handling signal: winch; ignored (no new master beside this one)");
            return;
        }
        log::info!("Handling signal: winch; stopping workers, the new master serves");
        for w in self.workers.iter_mut().filter(|w| w.ask == Ask::Serve) {
            w.retire(Reason::Shutdown);
        }
    }

    /// The new master of an upgrade, once every worker serves: tell the old
    /// master to drain, put our pidfile in place, and tell systemd who the
    /// main process is now.
    fn complete_takeover(&mut self) {
        let Some(old) = self.upgrade.take_over() else {
            return;
        };
        upgrade::stop_old_master(old);
        if let (Some(pidfile), Some(path)) =
            (self.pidfile.as_mut(), self.config.master.pidfile.as_ref())
            && let Err(e) = pidfile.promote(path)
        {
            log::error!(
                "cannot move the pidfile into place at {}: {e}",
                path.display()
            );
        }
        self.notifier.send(&format!("MAINPID={}", self.pid));
    }

    /// Take re-read settings: new workers get the workers' part; what the
    /// master holds (listeners, sockets, files it opened) needs a restart or
    /// USR2, and the log names each such setting that changed.
    fn apply_config(&mut self, mut new: Config) {
        if new.worker.tls.is_none() && self.listeners.iter().any(|l| l.is_tls) {
            // The listeners stay TLS until a restart (binds are the
            // master's), so their workers still need the certificate.
            log::warn!(
                "certfile/keyfile left the configuration, but TLS listeners stay until a restart; they keep the certificate they have"
            );
            new.worker.tls = self.config.worker.tls.clone();
        }
        for setting in self.config.master.changed(&new.master) {
            log::warn!(
                "{setting} changed in the configuration; it takes effect after a restart or a USR2 upgrade"
            );
        }
        if new.worker.workers != self.config.worker.workers {
            self.wanted = new.worker.workers;
        }
        self.config.worker = new.worker;
        log::info!("Configuration reloaded");
    }

    /// Change the wanted worker count by `delta`, never below one.
    fn scale(&mut self, delta: i64, why: &str) {
        let wanted = (self.wanted as i64 + delta).max(1);
        self.wanted = usize::try_from(wanted).unwrap_or(1);
        log::info!("Handling {why}; workers wanted: {}", self.wanted);
    }

    fn reopen_logs(&self) {
        crate::logging::reopen();
        for w in &self.workers {
            process::signal(w.pid, Sig::SIGUSR1);
        }
    }

    fn reap_exited(&mut self) {
        for (pid, exit) in process::reap_exited() {
            if self.upgrade.new_master_exited(pid) {
                match self.lifecycle {
                    Lifecycle::Running { .. } => log::error!(
                        "Upgrade failed: the new master (pid:{pid}) ended with {exit} before taking over; still serving"
                    ),
                    Lifecycle::Stopping { .. } => {
                        log::info!("The new master (pid:{pid}) ended with {exit}")
                    }
                }
                continue;
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                // An orphan re-parented to us (we may be PID 1): reaped, ignored.
                log::debug!("reaped process {pid} ({exit}), not a worker");
                continue;
            };
            let w = self.workers.swap_remove(i);
            if let Some(seat) = w.seat {
                self.balance.vacate(seat);
            }
            self.worker_exited(w, exit);
        }
    }

    fn worker_exited(&mut self, w: WorkerHandle, exit: Exit) {
        let pid = w.pid;
        let lived = w.started.elapsed();
        let counts = w.slot.counts();
        self.retired.add(&counts);
        if w.has_settled(self.config.worker.min_worker_lifetime) {
            self.failed_boots = 0;
        }
        let verdict = classify_exit(
            w.ask,
            exit,
            w.slot.state(),
            lived,
            self.config.worker.min_worker_lifetime,
        );
        if let Some(reason) = verdict.restart_reason()
            && reason != Reason::Shutdown
        {
            *self.restarts.entry(reason).or_default() += 1;
        }
        match verdict {
            Verdict::Retired(_) => log::info!("Worker exiting (pid: {pid})"),
            Verdict::Recycled => log::info!(
                "Worker (pid:{pid}) recycled after {} requests (max-requests)",
                counts.requests
            ),
            Verdict::TimedOut => {
                log::info!("Worker (pid:{pid}) ended after timeout ({exit})");
                self.count_timeout_answer(&w.slot);
            }
            Verdict::AppLoadFailed => self.halt(
                EXIT_APP_LOAD_ERROR,
                format!("App failed to load (worker pid:{pid} {exit})"),
            ),
            Verdict::CannotBoot => self.halt(
                EXIT_WORKER_BOOT_ERROR,
                format!("Worker failed to boot (pid:{pid} {exit})"),
            ),
            Verdict::FailedBoot => self.failed_boot(&w, exit, lived),
            Verdict::Crashed { .. } => self.crashed(&w, exit, lived),
        }
    }

    /// A booted worker died unasked: say what it was doing, and report the
    /// rate when crashes repeat. Its vacancy is filled at once
    /// (`spawn_missing`), so a storm of kills never empties the server.
    fn crashed(&mut self, w: &WorkerHandle, exit: Exit, lived: Duration) {
        let pid = w.pid;
        let doing = w.slot.in_flight().map_or_else(
            || "idle (no request in flight)".to_owned(),
            |r| format!("serving {r}"),
        );
        match exit {
            Exit::Signal(Sig::SIGKILL) => log::error!(
                "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory? It was {doing}, {:.2}s after start; replacing it now",
                lived.as_secs_f64()
            ),
            exit => log::error!(
                "Worker (pid:{pid}) died unexpectedly ({exit}); it was {doing}, {:.2}s after start; replacing it now",
                lived.as_secs_f64()
            ),
        }
        let second = self.started.elapsed().as_secs();
        self.crashes
            .record(second, format!("pid:{pid} ({exit}) {doing}"));
        if let Some(line) = self.crashes.report(second, Instant::now()) {
            log::warn!("{line}");
        }
    }

    /// A worker died before it reported ready: its vacancy waits out a
    /// backoff (the others do not), and after --max-boot-failures in a row
    /// the master gives up, so systemd or Docker see a failed service rather
    /// than a silent fork loop.
    fn failed_boot(&mut self, w: &WorkerHandle, exit: Exit, lived: Duration) {
        let pid = w.pid;
        self.failed_boots += 1;
        let said = w
            .slot
            .last_error()
            .map(|e| format!("; its last error: {e}"))
            .unwrap_or_default();
        if self
            .config
            .worker
            .max_boot_failures
            .is_some_and(|max| self.failed_boots >= max)
        {
            self.halt(
                EXIT_WORKER_BOOT_ERROR,
                format!(
                    "{} workers in a row failed to boot; the last (pid:{pid}) ended with {exit}{said}",
                    self.failed_boots
                ),
            );
            return;
        }
        let backoff = self.held.hold(Instant::now(), w.boot_failures + 1);
        log::warn!(
            "Worker (pid:{pid}) ended with {exit} {:.2}s after start, before it was ready{said}; failed boot {} in a row (only its own place waits); next worker in {:.1}s",
            lived.as_secs_f64(),
            self.failed_boots,
            backoff.as_secs_f64()
        );
    }

    /// Clear the failed-boot count once a worker has reported ready and
    /// stayed up --min-worker-lifetime: the app does boot.
    fn note_settled_workers(&mut self) {
        let min_lifetime = self.config.worker.min_worker_lifetime;
        for w in self.workers.iter_mut().filter(|w| !w.is_settled) {
            if w.has_settled(min_lifetime) {
                w.is_settled = true;
                self.failed_boots = 0;
            }
        }
    }

    /// A timed-out worker's handler wrote a 504 before it exited: count it
    /// with the other responses and give it its access log line, which the
    /// worker could not write from a signal handler.
    fn count_timeout_answer(&mut self, slot: &Slot) {
        let Some(answer) = slot.timeout_answer() else {
            return;
        };
        self.retired
            .add_response(504, answer.elapsed, signals::TIMEOUT_RESPONSE_BYTES);
        if !crate::logging::access_log_enabled() {
            return;
        }
        // Checked at start (Config), so it parses.
        let Ok(format) = crate::access_log::Format::parse(&self.config.worker.access_log_format)
        else {
            return;
        };
        let peer = answer.peer.parse().ok();
        let line = format.render(&crate::access_log::Record {
            peer: peer.as_ref(),
            method: &answer.method,
            target: &answer.target,
            // The slot does not keep the protocol version.
            version: "-",
            scheme: "-",
            request_headers: &[],
            status: 504,
            response_headers: &http::HeaderMap::new(),
            body_bytes: signals::TIMEOUT_BODY_BYTES,
            duration: answer.elapsed,
            time: &crate::sys::clock::local_time("[%d/%b/%Y:%H:%M:%S %z]"),
        });
        crate::logging::access(&line);
    }

    /// Stop everything because workers cannot run, with a reason an operator can act on.
    fn halt(&mut self, code: i32, reason: String) {
        critical!("{reason}");
        self.exit_code = code;
        self.halt_reason = Some(reason);
        self.stop(false, "a fatal worker failure");
    }

    /// Time out workers whose heartbeat went silent (SIGABRT), and SIGKILL
    /// those still there a grace after it (`overdue`).
    fn kill_overdue_workers(&mut self, now: Instant) {
        let timeout = self.config.worker.timeout;
        for w in &mut self.workers {
            let state = w.slot.state();
            match overdue::due(w.ask, state, w.slot.silence(), timeout, now) {
                None => {}
                Some(Overdue::Abort) => {
                    let request = match w.slot.in_flight() {
                        Some(r) => r.to_string(),
                        None if state == WorkerState::Booting => format!(
                            "while booting: loading the app took over {}s",
                            overdue::allowed_silence(state, timeout)
                                .unwrap_or_default()
                                .as_secs()
                        ),
                        None => "(no request in flight)".to_owned(),
                    };
                    critical!("WORKER TIMEOUT (pid:{}) {request}", w.pid);
                    process::signal(w.pid, Sig::SIGABRT);
                    w.ask = Ask::Abort(now);
                }
                Some(Overdue::Kill) => {
                    log::warn!(
                        "Worker (pid:{}) did not exit on SIGABRT; sending SIGKILL",
                        w.pid
                    );
                    process::signal(w.pid, Sig::SIGKILL);
                    w.ask = Ask::Kill(Reason::Timeout);
                }
            }
        }
    }

    /// Find workers whose private memory passed --max-worker-memory and mark
    /// them to retire; `spawn_missing` forks their replacements before
    /// `retire_replaced_workers` tells them to go. One far over the limit
    /// (twice) is killed at once.
    fn check_memory(&mut self, now: Instant) {
        let Some(limit) = self.config.worker.max_worker_memory else {
            return;
        };
        if now < self.next_memory_check || !self.is_running() {
            return;
        }
        self.next_memory_check = now + self.config.worker.memory_check_interval;
        for w in self.workers.iter_mut().filter(|w| w.ask == Ask::Serve) {
            let Some(mem) = procfs::memory(w.pid.as_raw()) else {
                continue;
            };
            if mem.private <= limit {
                continue;
            }
            let mib = |b: u64| b >> 20;
            if mem.private > 2 * limit && w.slot.state() == WorkerState::Busy {
                log::error!(
                    "Worker (pid:{}) uses {} MiB of private memory, over twice the limit of {} MiB; killing it",
                    w.pid,
                    mib(mem.private),
                    mib(limit)
                );
                process::signal(w.pid, Sig::SIGKILL);
                w.ask = Ask::Kill(Reason::Memory);
            } else {
                log::warn!(
                    "Worker (pid:{}) uses {} MiB of private memory, over the limit of {} MiB; replacing it after its current request",
                    w.pid,
                    mib(mem.private),
                    mib(limit)
                );
                w.ask = Ask::Retire(Reason::Memory);
                self.to_retire_once_replaced.push(w.pid);
            }
        }
    }

    /// TERM the workers `check_memory` marked, now that their replacements
    /// are forked (or could not be: they go all the same).
    fn retire_replaced_workers(&mut self) {
        for pid in self.to_retire_once_replaced.drain(..) {
            process::signal(pid, Sig::SIGTERM);
        }
    }

    fn escalate_stop(&mut self, now: Instant) {
        let Lifecycle::Stopping { deadline, .. } = self.lifecycle else {
            return;
        };
        if now < deadline {
            return;
        }
        for w in &mut self.workers {
            if !matches!(w.ask, Ask::Kill(_)) {
                log::warn!(
                    "Worker (pid:{}) still running at the end of the graceful timeout; sending SIGKILL",
                    w.pid
                );
                process::signal(w.pid, Sig::SIGKILL);
                w.ask = Ask::Kill(Reason::Shutdown);
            }
        }
    }

    /// Fill the vacancies: at once, except those whose worker failed to
    /// boot, which wait out their own backoff.
    fn spawn_missing(&mut self) {
        if !self.is_running() || self.upgrade.is_paused() {
            return;
        }
        let now = Instant::now();
        if self.spawn_retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.spawn_retry_at = None;
        let active = self
            .workers
            .iter()
            .filter(|w| w.generation == self.generation && w.is_active())
            .count();
        let missing = self.wanted.saturating_sub(active);
        let mut to_fill = self.held.to_fill(missing, now).into_iter();
        while let Some(boot_failures) = to_fill.next() {
            if let Err(e) = self.spawn_worker(boot_failures) {
                // The vacancies not filled keep their counts for the retry.
                for boot_failures in std::iter::once(boot_failures).chain(to_fill) {
                    self.held.put_back(now, boot_failures);
                }
                self.spawn_failures += 1;
                let backoff = worker_exit::backoff(self.spawn_failures);
                log::error!(
                    "cannot start a worker: {e}; retrying in {:.1}s",
                    backoff.as_secs_f64()
                );
                self.spawn_retry_at = Some(now + backoff);
                return;
            }
            self.spawn_failures = 0;
        }
    }

    fn spawn_worker(&mut self, boot_failures: u32) -> std::io::Result<()> {
        let slot = Slot::create_in(&self.config.master.worker_tmp_dir)?;
        let seat = self
            .balance
            .free_seat(self.workers.iter().filter_map(|w| w.seat));
        let max_requests = self.config.worker.draw_max_requests();
        let mask = signals::block_all()?;
        let forked = process::fork();
        if let Ok(Forked::Child) = forked {
            // The timeout handler stamps this slot when it writes its 504.
            signals::set_timeout_mark(slot.leak_timeout_mark());
            let mut close_fds = self.signals.fds().to_vec();
            close_fds.push(self.notify_read.as_raw_fd());
            close_fds.extend(self.oneshot_servers().flat_map(OneShotServer::fds));
            let spec = worker::Spec {
                config: &self.config.worker,
                app_name: &self.config.master.app,
                listeners: &self.listeners,
                slot: &slot,
                balance: &self.balance,
                seat,
                master: self.pid,
                max_requests,
                notify_fd: self.notify_write.as_fd().as_raw_fd(),
                close_fds,
                app: &*self.app,
                on_exit: self.hooks.on_worker_exit.as_deref(),
            };
            worker::run(spec);
        }
        signals::restore_mask(&mask)?;
        let Forked::Parent(pid) = forked? else {
            unreachable!("the child never returns from worker::run")
        };
        self.workers.push(WorkerHandle {
            id: self.next_worker_id,
            pid,
            slot,
            seat,
            generation: self.generation,
            started: Instant::now(),
            ask: Ask::Serve,
            boot_failures,
            is_settled: false,
        });
        self.next_worker_id += 1;
        Ok(())
    }

    /// Retire workers that are no longer wanted: the previous generation once
    /// the new one is serving (reload), and the oldest ones beyond the wanted
    /// count (TTOU).
    fn retire_surplus(&mut self) {
        if !self.is_running() {
            return;
        }
        let generation = self.generation;
        let ready_new = self
            .workers
            .iter()
            .filter(|w| w.generation == generation && w.is_ready())
            .count();
        if ready_new >= self.wanted {
            let old = self
                .workers
                .iter_mut()
                .filter(|w| w.generation != generation && w.ask == Ask::Serve);
            let mut retired = 0;
            for w in old {
                w.retire(Reason::Reload);
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
                w.retire(Reason::ScaleDown);
            }
        }
    }

    /// Answer whatever `forkhorn ctl` asked.
    fn serve_control(&mut self) {
        let Some((server, _)) = self.control.as_mut() else {
            return;
        };
        let pending = server.service(Instant::now());
        for p in pending {
            let reply = match control::parse_request(&p.request) {
                Ok(command) => self.carry_out(command),
                Err(e) => control::error(e),
            };
            if let Some((server, _)) = self.control.as_mut() {
                server.reply(p.index, format!("{reply}\n").into_bytes());
            }
        }
    }

    fn carry_out(&mut self, command: Command) -> serde_json::Value {
        match command {
            Command::Status => control::status(&self.snapshot()),
            Command::Workers => control::workers(&self.snapshot()),
            Command::Stats => control::stats(&self.snapshot()),
            Command::Reload => {
                self.reload("ctl reload");
                control::ok("reloading: new workers start, then the old ones finish")
            }
            Command::Reopen => {
                log::info!("Handling ctl reopen; reopening log files");
                self.reopen_logs();
                control::ok("log files reopened")
            }
            Command::AddWorkers(n) => {
                self.scale(n as i64, "ctl worker add");
                control::ok(format!("workers wanted: {}", self.wanted))
            }
            Command::RemoveWorkers(n) => {
                self.scale(-(n as i64), "ctl worker remove");
                control::ok(format!("workers wanted: {}", self.wanted))
            }
            Command::KillWorker(pid) => {
                match self.workers.iter_mut().find(|w| w.pid.as_raw() == pid) {
                    Some(w) if w.ask == Ask::Serve => {
                        log::info!("Handling ctl worker kill; retiring worker (pid:{pid})");
                        w.retire(Reason::Killed);
                        control::ok(format!(
                            "worker {pid} will finish its request and be replaced"
                        ))
                    }
                    Some(_) => control::error(format!("worker {pid} is already stopping")),
                    None => {
                        control::error(format!("no worker has pid {pid}; see forkhorn ctl workers"))
                    }
                }
            }
            Command::Shutdown { graceful } => {
                self.stop(
                    graceful,
                    if graceful {
                        "ctl shutdown graceful"
                    } else {
                        "ctl shutdown quick"
                    },
                );
                control::ok(if graceful {
                    "stopping gracefully"
                } else {
                    "stopping now"
                })
            }
        }
    }

    fn serve_metrics(&mut self) {
        let Some(server) = self.metrics.as_mut() else {
            return;
        };
        let pending = server.service(Instant::now());
        if pending.is_empty() {
            return;
        }
        let snapshot = self.snapshot();
        if let Some(server) = self.metrics.as_mut() {
            for p in pending {
                server.reply(
                    p.index,
                    crate::master::metrics::answer(&p.request, &snapshot),
                );
            }
        }
    }

    /// Counts of every worker, reaped and living.
    fn totals(&self) -> Counts {
        let mut totals = self.retired.clone();
        for w in &self.workers {
            totals.add(&w.slot.counts());
        }
        totals
    }

    /// Everything the master knows, for ctl and metrics.
    fn snapshot(&self) -> Snapshot {
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let mem = procfs::memory(w.pid.as_raw());
                WorkerInfo {
                    id: w.id,
                    pid: w.pid.as_raw(),
                    state: match w.ask {
                        Ask::Serve => w.slot.state(),
                        _ => WorkerState::Stopping,
                    },
                    age: w.started.elapsed(),
                    requests: w.slot.requests(),
                    request: w.slot.in_flight(),
                    rss_bytes: mem.map(|m| m.rss),
                    private_bytes: mem.map(|m| m.private),
                    since_beat: w.slot.silence(),
                }
            })
            .collect();
        Snapshot {
            master_pid: self.pid.as_raw(),
            uptime: self.started.elapsed(),
            listeners: self.listener_names.clone(),
            app: self.config.master.app.clone(),
            wanted: self.wanted,
            timeout: self.config.worker.timeout,
            graceful_timeout: self.config.worker.graceful_timeout,
            max_requests: self.config.worker.max_requests,
            max_requests_jitter: self.config.worker.max_requests_jitter,
            is_stopping: !self.is_running(),
            workers,
            totals: self.totals(),
            restarts: self.restarts.clone(),
            backlog: self
                .listeners
                .iter()
                .filter_map(|l| procfs::listen_queue(l.fd()).map(|n| (l.name.clone(), n)))
                .collect(),
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Stopping { .. }) && self.workers.is_empty()
    }

    /// When the loop must next look at the workers even if nothing wakes it.
    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut next = now + IDLE_WAKEUP;
        let timeout = self.config.worker.timeout;
        for w in &self.workers {
            let (state, silence) = (w.slot.state(), w.slot.silence());
            if let Some((at, _)) = overdue::deadline(w.ask, state, silence, timeout, now) {
                next = next.min(at);
            }
        }
        if let Lifecycle::Stopping { deadline, .. } = self.lifecycle {
            next = next.min(deadline);
        }
        if self.is_running() && !self.upgrade.is_paused() {
            // A held vacancy due while forking is failing waits for the retry.
            let retry = self.spawn_retry_at.unwrap_or(now);
            for at in self.held.due_times().chain(self.spawn_retry_at) {
                next = next.min(at.max(retry));
            }
        }
        if self.config.worker.max_worker_memory.is_some() {
            next = next.min(self.next_memory_check);
        }
        if let Some(at) = self.next_watchdog {
            next = next.min(at);
        }
        for deadline in self
            .oneshot_servers()
            .filter_map(OneShotServer::next_deadline)
        {
            next = next.min(deadline);
        }
        next
    }

    /// The master's own servers: the control socket and the metrics endpoint.
    fn oneshot_servers(&self) -> impl Iterator<Item = &OneShotServer> {
        self.control
            .as_ref()
            .map(|(c, _)| c)
            .into_iter()
            .chain(self.metrics.as_ref())
    }

    /// Sleep until `until`, a signal, a worker's wake-up byte, or a control
    /// or metrics client.
    fn sleep_until(&self, until: Instant) {
        let wait = until.saturating_duration_since(Instant::now());
        // Round up: waking a millisecond early would spin until the deadline.
        let ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut fds = vec![
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.notify_read.as_fd(), PollFlags::POLLIN),
        ];
        for server in self.oneshot_servers() {
            fds.extend(
                server
                    .poll_set()
                    .into_iter()
                    .map(|(fd, flags)| PollFd::new(fd, flags)),
            );
        }
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_stop_cuts_a_graceful_one_short_and_nothing_changes_a_quick_one() {
        let running = Lifecycle::Running {
            readiness: Readiness::Announced,
        };
        let stopping = |graceful| Lifecycle::Stopping {
            deadline: Instant::now(),
            graceful,
        };
        assert!(running.is_changed_by_stop(true));
        assert!(running.is_changed_by_stop(false));
        assert!(stopping(true).is_changed_by_stop(false));
        assert!(!stopping(true).is_changed_by_stop(true));
        assert!(!stopping(false).is_changed_by_stop(false));
        assert!(!stopping(false).is_changed_by_stop(true));
    }

    #[test]
    fn a_reload_announces_readiness_again_but_when_ready_runs_only_once() {
        assert_eq!(Readiness::Starting.reloaded(), Readiness::Starting);
        assert_eq!(Readiness::Announced.reloaded(), Readiness::Reloading);
        assert_eq!(Readiness::Reloading.reloaded(), Readiness::Reloading);
    }
}
