//! The worker: a forked child that accepts connections and serves requests,
//! one at a time, until it is told to stop or has served its quota.
//!
//! Connections are multiplexed with mio (epoll): idle keep-alive connections
//! and clients sending a head slowly cost nothing, while the app is called for
//! one complete request at a time. A worker takes a new connection only
//! between requests, so a busy worker never sits on work another could do.

mod body_reader;
mod clock;
mod completion;
mod conn;
mod exchange;
mod framing;
mod handoff;
mod streams;
mod write_out;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use self::clock::Clock;
use self::conn::{Conn, Phase};
use self::exchange::{After, Context};
use self::handoff::Parking;
use crate::access_log;
use crate::app::App;
use crate::balance::{self, Balance};
use crate::config::WorkerSettings;
use crate::heartbeat::{Slot, WorkerState};
use crate::http::parse_head;
use crate::listener::Listener;
use crate::proxy_protocol;
use crate::sys::process::{self, Pid};
use crate::sys::signals::{self, Sig, SignalPipe};

/// Exit status of a worker that could not set itself up (signals, poller).
pub const EXIT_BOOT_FAILED: i32 = 3;
/// Exit status of a worker whose app failed to load.
pub const EXIT_APP_LOAD_FAILED: i32 = 4;

/// Signals the master handles; a worker puts them all back to default first.
pub const MASTER_SIGNALS: &[Sig] = &[
    Sig::SIGHUP,
    Sig::SIGTERM,
    Sig::SIGINT,
    Sig::SIGQUIT,
    Sig::SIGTTIN,
    Sig::SIGTTOU,
    Sig::SIGUSR1,
    Sig::SIGUSR2,
    Sig::SIGWINCH,
    Sig::SIGCHLD,
];

/// What "unlimited" (0) means for a request line or a field when sizing the
/// read buffer: a head cannot grow without bound in memory.
const UNLIMITED_LINE_BYTES: usize = 1 << 20;
/// The most a worker buffers for one connection's request head.
const MAX_HEAD_BUFFER_BYTES: usize = 64 << 20;

/// Bytes to buffer for one request head: the largest head the limits allow
/// (0 meaning unlimited, see above), plus room for a pipelined start.
fn head_read_cap(limits: &crate::http::Limits) -> usize {
    let size = |limit: usize| {
        if limit == 0 {
            UNLIMITED_LINE_BYTES
        } else {
            limit
        }
    };
    size(limits.request_line)
        .saturating_add(
            limits
                .max_fields()
                .saturating_mul(size(limits.field_size) + 2),
        )
        .saturating_add(64 * 1024)
        .min(MAX_HEAD_BUFFER_BYTES)
}

/// How soon a worker retries an accept that failed for want of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a closing connection keeps discarding input before we close it.
const LINGER: Duration = Duration::from_secs(2);

/// After siblings we deferred to let a connection wait out the whole
/// `DEFER_FOR` this many times in a row, accept as if alone for
/// `BALANCE_BACKOFF`. One miss is not enough: on a loaded machine a sibling
/// can go unscheduled for 20 ms, and backing off then let one worker take a
/// whole burst (13 of 16 connections). A sibling busy in a long request
/// leaves the table by itself (`handoff.rs`), so what is left for this is a
/// stopped or wedged sibling, which costs three short delays a second.
const MISSES_BEFORE_BACKOFF: u32 = 3;
const BALANCE_BACKOFF: Duration = Duration::from_secs(1);

/// What `defer_to_sibling` decided about the connection waiting now.
enum Defer {
    /// Accept it.
    No,
    /// Leave it to a sibling holding fewer, for now.
    Wait,
    /// We left it to a sibling for `DEFER_FOR` and it may still be there: take it.
    TimedOut,
}

/// How often a partial head is re-checked against the limits.
const HEAD_RECHECK_BYTES: usize = 4096;

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// Producer threads of detached streams wake the loop through this.
const WAKER_TOKEN: Token = Token(usize::MAX - 2);
/// The hand-off channel: idle connections another worker let go.
const HANDOFF_TOKEN: Token = Token(usize::MAX - 3);
/// Tokens below this are listeners; connections start here.
const FIRST_CONN: usize = 1 << 20;

/// Builds a worker's app after fork.
pub type AppFactory<'a> = &'a dyn Fn() -> Result<Box<dyn App>, String>;

/// Everything a worker gets from the master at fork.
pub struct Spec<'a> {
    /// The settings (limits, timeouts, keep-alive) the worker serves by.
    pub config: &'a WorkerSettings,
    /// The APP spec, for the log line when the app fails to load.
    pub app_name: &'a str,
    /// The master's listening sockets, shared by every worker.
    pub listeners: &'a [Listener],
    /// This worker's heartbeat slot; the worker stamps it, the master reads it.
    pub slot: &'a Slot,
    /// The workers' shared count of connections held.
    pub balance: &'a Balance,
    /// This worker's seat in `balance` (None: more workers than seats;
    /// it accepts as if alone).
    pub seat: Option<usize>,
    /// The master's pid: a worker whose parent is no longer this exits.
    pub master: Pid,
    /// This worker's request quota (max-requests plus its jitter); None = no limit.
    pub max_requests: Option<u64>,
    /// Write end of the master's wake-up pipe: a byte here tells the master
    /// this worker's state changed (booted, retiring).
    pub notify_fd: RawFd,
    /// Descriptors of the master's that the worker must not keep.
    pub close_fds: Vec<RawFd>,
    /// Builds the worker's app once its setup is done.
    pub app: AppFactory<'a>,
    /// Run just before a normal exit (the `on_worker_exit` hook).
    pub on_exit: Option<&'a dyn Fn()>,
}

/// Run the worker; never returns.
pub fn run(spec: Spec<'_>) -> ! {
    process::close_inherited(&spec.close_fds);
    let code = match Worker::boot(&spec) {
        Ok(mut worker) => {
            worker.serve();
            if let Some(hook) = spec.on_exit {
                hook();
            }
            0
        }
        Err(code) => code,
    };
    process::exit_now(code)
}

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Serving,
    /// Finish what is open and exit (TERM, or quota reached); accept nothing.
    Draining,
}

struct Worker<'a> {
    spec: &'a Spec<'a>,
    app: Box<dyn App>,
    signals: SignalPipe,
    poll: Poll,
    /// Listeners that reported readiness and may have connections waiting.
    acceptable: Vec<bool>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    /// Of `open`, connections only lingering before close: not load.
    lingering: usize,
    /// Leaving waiting connections to a sibling holding fewer until then.
    defer_until: Option<Instant>,
    /// A sibling we deferred to did not take the connection in time (it is
    /// busy, stopped or gone), `MISSES_BEFORE_BACKOFF` times in a row:
    /// accept as if alone until then.
    balance_off_until: Option<Instant>,
    /// Deferrals in a row that the sibling let time out.
    sibling_misses: u32,
    /// Connections with buffered bytes or news to look at, in arrival order.
    ready: VecDeque<usize>,
    /// Connections pumping a detached stream.
    streaming: Vec<usize>,
    /// Idle connections the watcher thread may hand to a free worker.
    parking: Parking,
    /// The hand-off channel reported readiness and may hold connections.
    is_handoff_ready: bool,
    /// An accept failed (out of descriptors): try again at this instant.
    accept_retry_at: Option<Instant>,
    /// Accepting fails since the last success (logged once).
    is_accept_failing: bool,
    lifecycle: Lifecycle,
    served: u64,
    beat_every: Duration,
    access_format: Option<access_log::Format>,
    clock: Clock,
    out: Vec<u8>,
}

impl<'a> Worker<'a> {
    fn boot(spec: &'a Spec<'a>) -> Result<Worker<'a>, i32> {
        let fail = |what: &str, e: std::io::Error| {
            log::error!("worker failed to boot: {what}: {e}");
            EXIT_BOOT_FAILED
        };
        // Error lines go to the slot too, so the master can say why this
        // worker died if it dies young.
        let slot = spec.slot.clone();
        crate::logging::on_error(Box::new(move |line| slot.set_last_error(line)));
        signals::set_default(MASTER_SIGNALS).map_err(|e| fail("resetting signals", e))?;
        let signals = SignalPipe::install(&[Sig::SIGTERM, Sig::SIGUSR1])
            .map_err(|e| fail("signal pipe", e))?;
        // TERM also noted where the hand-off watcher sees it during a long request.
        crate::sys::drain::note_term(&signals).map_err(|e| fail("signals", e))?;
        signals::exit_on(&[Sig::SIGINT, Sig::SIGQUIT]).map_err(|e| fail("signals", e))?;
        signals::install_timeout_handler().map_err(|e| fail("signals", e))?;
        signals::ignore(&[
            Sig::SIGHUP,
            Sig::SIGTTIN,
            Sig::SIGTTOU,
            Sig::SIGWINCH,
            Sig::SIGUSR2,
            Sig::SIGPIPE,
        ])
        .map_err(|e| fail("signals", e))?;
        // The master forked us with every signal blocked; our handlers are
        // in place now, so let signals in.
        signals::unblock_all().map_err(|e| fail("signal mask", e))?;
        process::die_with_parent(spec.master).map_err(|e| fail("prctl", e))?;
        if let Some(who) = &spec.config.worker_identity {
            crate::sys::user::become_user(who, spec.config.initgroups)
                .map_err(|e| fail(&format!("switching to uid {} gid {}", who.uid, who.gid), e))?;
        }

        let app = (spec.app)().map_err(|e| {
            log::error!("app {:?} failed to load in worker: {e}", spec.app_name);
            EXIT_APP_LOAD_FAILED
        })?;

        let poll = Poll::new().map_err(|e| fail("epoll", e))?;
        for (i, l) in spec.listeners.iter().enumerate() {
            poll.registry()
                .register(&mut SourceFd(&l.fd()), Token(i), Interest::READABLE)
                .map_err(|e| fail("registering a listener", e))?;
        }
        poll.registry()
            .register(
                &mut SourceFd(&signals.fd()),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )
            .map_err(|e| fail("registering the signal pipe", e))?;
        poll.registry()
            .register(
                &mut SourceFd(&spec.balance.handoff().rx_fd()),
                HANDOFF_TOKEN,
                Interest::READABLE,
            )
            .map_err(|e| fail("registering the hand-off channel", e))?;
        let seat = spec.seat.map(|seat| (spec.balance.clone(), seat));
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| fail("cloning the poller for the hand-off watcher", e))?;
        let listener_fds = spec.listeners.iter().map(Listener::fd).collect();
        let parking = Parking::start(
            std::sync::Arc::clone(spec.balance.handoff()),
            seat,
            listener_fds,
            registry,
        )
        .map_err(|e| fail("starting the hand-off watcher thread", e))?;
        let waker =
            mio::Waker::new(poll.registry(), WAKER_TOKEN).map_err(|e| fail("stream waker", e))?;
        crate::stream::set_waker(std::sync::Arc::new(waker));

        let beat_every = spec.config.timeout.map_or(Duration::from_secs(1), |t| {
            (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
        });
        let access_format = if crate::logging::access_log_enabled() {
            access_log::Format::parse(&spec.config.access_log_format).ok()
        } else {
            None
        };
        let worker = Worker {
            spec,
            app,
            signals,
            poll,
            acceptable: vec![true; spec.listeners.len()],
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            lingering: 0,
            defer_until: None,
            balance_off_until: None,
            sibling_misses: 0,
            ready: VecDeque::new(),
            streaming: Vec::new(),
            parking,
            // Connections may wait there from before we were forked.
            is_handoff_ready: true,
            accept_retry_at: None,
            is_accept_failing: false,
            lifecycle: Lifecycle::Serving,
            served: 0,
            beat_every,
            access_format,
            clock: Clock::default(),
            out: Vec::with_capacity(4096),
        };
        spec.slot.set_state(WorkerState::Idle);
        worker.publish_held();
        worker.notify_master();
        log::info!("Booting worker with pid: {}", std::process::id());
        Ok(worker)
    }

    /// Wake the master so it looks at our slot now.
    fn notify_master(&self) {
        process::poke(self.spec.notify_fd);
    }

    fn serve(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            // Before leaving, take what siblings handed off: it might be
            // our own, handed off during our last request, and a
            // connection left in the channel when every worker is gone is
            // closed unanswered.
            if self.lifecycle == Lifecycle::Draining && self.open == 0 && !self.take_handed_off() {
                break;
            }
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                log::error!("worker poll failed: {e}");
                break;
            }
            self.spec.slot.beat();
            if events.is_empty() && process::getppid() != self.spec.master {
                // The master is gone (PDEATHSIG should have ended us already).
                break;
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => self.handle_signals(),
                    WAKER_TOKEN => {}
                    HANDOFF_TOKEN => self.is_handoff_ready = true,
                    Token(i) if i < FIRST_CONN => {
                        if let Some(flag) = self.acceptable.get_mut(i) {
                            *flag = true;
                        }
                    }
                    Token(t) => {
                        let k = t - FIRST_CONN;
                        if let Some(Some(conn)) = self.conns.get_mut(k) {
                            conn.maybe_readable = true;
                            conn.peer_closed |= event.is_read_closed();
                            self.ready.push_back(k);
                        }
                    }
                }
            }
            if self.accept_retry_at.is_some_and(|at| Instant::now() >= at) {
                self.accept_retry_at = None;
                self.acceptable.iter_mut().for_each(|a| *a = true);
            }
            self.forget_handed_off();
            let accepted = self.accept_one() || self.take_one_handed_off();
            let served_before = self.served;
            self.process_ready();
            self.forget_handed_off();
            if self.served != served_before && !accepted {
                // Let the other tasks that want this CPU go first. A worker
                // whose clients always have a request waiting would hold the
                // CPU for a whole scheduler slice (milliseconds) while the
                // workers sharing that CPU sit on their clients' requests;
                // yielding after each batch makes them take turns batch by
                // batch. When nobody else wants the CPU it is one cheap
                // syscall per batch. A turn that took a new connection does
                // not yield: connections are taken one per turn, and a
                // thousand arriving at once would each wait out a yield.
                std::thread::yield_now();
            }
            self.pump_streams();
            self.expire(Instant::now());
        }
        if self.spec.slot.state() != WorkerState::Retiring {
            self.spec.slot.set_state(WorkerState::Stopping);
        }
    }

    fn poll_timeout(&self) -> Duration {
        if !self.ready.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let wants_accept = self.lifecycle == Lifecycle::Serving
            && self.may_accept()
            && self.acceptable.iter().any(|&a| a);
        if wants_accept && self.defer_until.is_none_or(|t| now >= t) {
            return Duration::ZERO;
        }
        if self.lifecycle == Lifecycle::Serving && self.may_accept() && self.is_handoff_ready {
            return Duration::ZERO;
        }
        let next_deadline = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.deadline)
            .chain(self.accept_retry_at)
            .chain(self.defer_until.filter(|_| wants_accept))
            .map(|d| d.saturating_duration_since(now))
            .min()
            .unwrap_or(self.beat_every);
        next_deadline.min(self.beat_every)
    }

    fn handle_signals(&mut self) {
        for sig in self.signals.drain() {
            match sig {
                Sig::SIGTERM => self.start_draining("TERM"),
                Sig::SIGUSR1 => crate::logging::reopen(),
                _ => {}
            }
        }
    }

    fn start_draining(&mut self, why: &str) {
        if self.lifecycle == Lifecycle::Draining {
            return;
        }
        log::debug!("worker {} draining ({why})", std::process::id());
        self.lifecycle = Lifecycle::Draining;
        // Siblings must not leave connections to a worker that takes none.
        if let Some(seat) = self.spec.seat {
            self.spec.balance.vacate(seat);
        }
        self.parking.stop_handing_off();
        // Close our copies of the listening sockets, not just stop watching
        // them: while any process holds one, the kernel keeps completing
        // handshakes into its queue, and a client would wait there for
        // nobody. Once the master and every draining worker have closed
        // theirs, new connections are refused at once; on a reload (HUP,
        // USR2) the new workers or the new master still hold them, and
        // connections queue for those. (Closing ours is right with systemd
        // socket activation too: systemd keeps its own.) Nothing reads
        // `spec.listeners` again: accepting needs `Lifecycle::Serving`.
        for l in self.spec.listeners {
            let _ = self.poll.registry().deregister(&mut SourceFd(&l.fd()));
        }
        let fds: Vec<RawFd> = self.spec.listeners.iter().map(Listener::fd).collect();
        process::close_inherited(&fds);
        // Connections waiting for a first request get one more chance to send
        // it (answered with Connection: close), bounded by their current
        // deadline; this avoids resetting a request already on the wire.
    }

    fn may_accept(&self) -> bool {
        self.open < self.spec.config.worker_connections
    }

    /// Take one waiting connection, if any: one per turn, so workers that
    /// all woke for the same connection share the load instead of the first
    /// one to wake draining the whole queue. Returns whether it took one.
    fn accept_one(&mut self) -> bool {
        if self.lifecycle != Lifecycle::Serving || !self.may_accept() {
            return false;
        }
        if !self.acceptable.iter().any(|&a| a) {
            return false;
        }
        let now = Instant::now();
        let waited_for_sibling = match self.defer_to_sibling(now) {
            Defer::Wait => return false,
            Defer::No => false,
            Defer::TimedOut => true,
        };
        for i in 0..self.spec.listeners.len() {
            if !self.acceptable[i] {
                continue;
            }
            // Non-blocking from accept4, and TCP_NODELAY is inherited from
            // the listener: no further syscalls before the first read.
            match crate::sys::sockopt::accept_nonblocking(&self.spec.listeners[i].socket) {
                Ok((socket, addr)) => {
                    self.is_accept_failing = false;
                    if waited_for_sibling {
                        // Nobody took it while we waited: the sibling is
                        // stuck, or was not scheduled in time. If it keeps
                        // happening, waiting on it would only delay every
                        // new connection.
                        self.sibling_misses += 1;
                        if self.sibling_misses >= MISSES_BEFORE_BACKOFF {
                            self.sibling_misses = 0;
                            self.balance_off_until = Some(now + BALANCE_BACKOFF);
                        }
                    }
                    let deadline = now + self.spec.config.header_timeout;
                    let conn = Conn::new(socket, addr.as_socket(), deadline);
                    if let Some(conn) = self.on_listener(i, conn) {
                        self.add_conn(conn);
                    }
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if waited_for_sibling {
                        // A sibling took it while we waited: it is alive.
                        self.sibling_misses = 0;
                    }
                    self.acceptable[i] = false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE and friends: stop trying rather than spin, and
                    // try again when one of our connections closes or after
                    // ACCEPT_RETRY (descriptors may free up elsewhere). The
                    // listener itself raises no new edge for connections
                    // already queued.
                    // Logged once per episode, not on every retry.
                    if !self.is_accept_failing {
                        self.is_accept_failing = true;
                        log::error!(
                            "accept on {} failed: {e}; retrying every {}ms",
                            self.spec.listeners[i].name,
                            ACCEPT_RETRY.as_millis()
                        );
                    }
                    self.acceptable[i] = false;
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                }
            }
        }
        false
    }

    /// Set up what a connection from listener `i` begins with: a TLS
    /// session, a PROXY header to read. None: it is closed (logged).
    fn on_listener(&mut self, i: usize, conn: Conn) -> Option<Conn> {
        let listener = &self.spec.listeners[i];
        if !listener.is_tls && !listener.expects_proxy_header {
            return Some(conn);
        }
        if listener.expects_proxy_header
            && let Some(peer) = conn.peer
            && !self.spec.config.proxy_allow_from.allows(peer.ip())
        {
            // Anyone could claim any address in a PROXY header; only the
            // proxies named may. (A unix socket's peer is local, and
            // trusted like the file's permissions say.)
            log::warn!(
                "closed a connection from {peer} on {}: it is not in --proxy-allow-from ({}), so its PROXY header would not be believed",
                listener.name,
                self.spec.config.proxy_allow_from
            );
            return None;
        }
        let tls = match (&self.spec.config.tls, listener.is_tls) {
            (_, false) => None,
            (Some(tls), true) => match rustls::ServerConnection::new(Arc::clone(&tls.config)) {
                Ok(session) => Some(session),
                Err(e) => {
                    log::error!("cannot start a TLS session: {e}");
                    return None;
                }
            },
            (None, true) => {
                // The master checks that TLS binds have certificates.
                log::error!(
                    "{} is a TLS listener but no certificate is set",
                    listener.name
                );
                return None;
            }
        };
        Some(conn.on_listener(tls, listener.expects_proxy_header))
    }

    /// Whether to leave the waiting connection to a sibling holding fewer
    /// connections (see `balance`): wait up to `DEFER_FOR` for it to take it.
    fn defer_to_sibling(&mut self, now: Instant) -> Defer {
        let Some(seat) = self.spec.seat else {
            return Defer::No;
        };
        if self.balance_off_until.is_some_and(|t| now < t)
            || !self.spec.balance.sibling_has_fewer(seat, self.held())
        {
            self.defer_until = None;
            return Defer::No;
        }
        match self.defer_until {
            None => {
                self.defer_until = Some(now + balance::DEFER_FOR);
                Defer::Wait
            }
            Some(t) if now < t => Defer::Wait,
            Some(_) => {
                self.defer_until = None;
                Defer::TimedOut
            }
        }
    }

    /// Connections this worker is serving or keeping (not the lingering).
    fn held(&self) -> usize {
        self.open - self.lingering
    }

    /// Tell siblings how many connections we hold.
    fn publish_held(&self) {
        if let (Some(seat), Lifecycle::Serving) = (self.spec.seat, self.lifecycle) {
            self.spec.balance.publish(seat, self.held());
        }
    }

    fn add_conn(&mut self, conn: Conn) {
        let k = match self.free.pop() {
            Some(k) => {
                self.conns[k] = Some(conn);
                k
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.open += 1;
        self.publish_held();
        // The request is usually here already (TCP_DEFER_ACCEPT): read it
        // now; the connection is registered with the poller only if it has
        // to wait for something.
        self.ready.push_back(k);
    }

    /// Register connection `k` with the poller, once.
    fn watch(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        if conn.is_registered {
            return;
        }
        let registered = self.poll.registry().register(
            &mut SourceFd(&conn.fd()),
            Token(FIRST_CONN + k),
            Interest::READABLE,
        );
        match registered {
            Ok(()) => conn.is_registered = true,
            Err(e) => {
                log::error!("cannot watch a connection: {e}");
                self.close(k);
            }
        }
    }

    fn close(&mut self, k: usize) {
        if let Some(mut conn) = self.conns.get_mut(k).and_then(Option::take) {
            if conn.is_parked && !self.parking.unpark(k) && conn.is_registered {
                // Handed off meanwhile: closing our copy would not take the
                // socket, alive elsewhere, out of our epoll set.
                let _ = self.poll.registry().deregister(&mut SourceFd(&conn.fd()));
            }
            // No epoll_ctl(DEL): closing the socket (when `conn` drops, below)
            // removes it from the epoll set, one syscall fewer per
            // connection. Should a forked child of the app still hold a
            // copy for a moment, a late event for slot `k` only makes its
            // next occupant try a read that finds nothing.
            self.free.push(k);
            self.open -= 1;
            if conn.phase == Phase::Lingering {
                self.lingering -= 1;
            }
            self.publish_held();
            if self.accept_retry_at.take().is_some() {
                // A descriptor just came free: retry the accept that failed.
                self.acceptable.iter_mut().for_each(|a| *a = true);
            }
            if let Some(stream) = conn.stream.take() {
                // Dropping the receiver tells the producer the client is gone.
                self.end_stream(k, *stream);
            }
        }
    }

    /// Look at each connection with news once: read what arrived, and serve
    /// at most one request from it before moving on.
    fn process_ready(&mut self) {
        let turn = self.ready.len();
        for _ in 0..turn {
            let Some(k) = self.ready.pop_front() else {
                break;
            };
            self.process(k);
        }
    }

    fn process(&mut self, k: usize) {
        if !self.reclaim(k) {
            return;
        }
        self.read_and_serve(k);
        // Whatever is still open now waits for the client.
        self.watch(k);
        self.watch_writable(k);
        self.park_if_idle(k);
    }

    /// Ask epoll to report writability of connection `k` only while its
    /// output waits for the client (a stream, TLS records).
    fn watch_writable(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        let wants_write = conn.has_pending_output();
        if wants_write == conn.wants_write || !conn.is_registered {
            return;
        }
        conn.wants_write = wants_write;
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let _ = self.poll.registry().reregister(
            &mut SourceFd(&conn.fd()),
            Token(FIRST_CONN + k),
            interest,
        );
    }

    /// Take connection `k` off the hand-off table before reading from it.
    /// False: the watcher gave it to another worker; it is forgotten here.
    fn reclaim(&mut self, k: usize) -> bool {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return true;
        };
        if !conn.is_parked {
            return true;
        }
        conn.is_parked = false;
        if self.parking.unpark(k) {
            return true;
        }
        self.forget(k);
        false
    }

    /// Put connection `k` on the hand-off table if it is idle with nothing
    /// of it in our memory (no buffered input, no pending output).
    fn park_if_idle(&mut self, k: usize) {
        if self.lifecycle != Lifecycle::Serving {
            return;
        }
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        if conn.is_parked
            || !conn.is_movable
            || conn.phase != Phase::Idle
            || !conn.is_registered
            || conn.read_eof
            || !conn.buf.is_empty()
            || !conn.out.is_empty()
            || conn.stream.is_some()
        {
            return;
        }
        self.parking.park(k, conn.fd());
        conn.is_parked = true;
    }

    /// Drop our copies of the connections the watcher handed off.
    fn forget_handed_off(&mut self) {
        for k in self.parking.take_handed_off() {
            if self
                .conns
                .get(k)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.is_parked)
            {
                self.forget(k);
            }
        }
    }

    /// Forget connection `k`, now served by another worker: out of our
    /// epoll set, and a plain close of our descriptor (a shutdown would end
    /// the connection for its new owner too).
    fn forget(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) {
            conn.is_parked = false;
            if conn.is_registered {
                let _ = self.poll.registry().deregister(&mut SourceFd(&conn.fd()));
            }
        }
        self.close(k);
    }

    /// While serving: take one connection a sibling handed off, if any and
    /// if we have room (one per turn, as with accepting).
    fn take_one_handed_off(&mut self) -> bool {
        if self.lifecycle != Lifecycle::Serving || !self.may_accept() || !self.is_handoff_ready {
            return false;
        }
        self.take_handed_off()
    }

    /// Take one handed-off connection from the channel and serve it like a
    /// freshly accepted one. Returns whether there was one.
    fn take_handed_off(&mut self) -> bool {
        match self.spec.balance.handoff().receive() {
            Ok(fd) => {
                let socket = socket2::Socket::from(fd);
                let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
                // It was idle where it came from: idle here too, with a
                // fresh keep-alive allowance.
                let idle = self
                    .spec
                    .config
                    .keep_alive
                    .unwrap_or(self.spec.config.header_timeout);
                self.add_conn(Conn::new(socket, peer, Instant::now() + idle));
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.is_handoff_ready = false;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
            Err(e) => {
                // A connection lost in passing (we were out of
                // descriptors): the others may still come through.
                log::warn!("cannot take a connection handed off by another worker: {e}");
                e.kind() == std::io::ErrorKind::Other
            }
        }
    }

    /// Read the PROXY header a proxied connection begins with. True once
    /// it is in (the real client's address replaces the peer's) and the
    /// connection goes on to its TLS handshake or request; false while it
    /// is still coming, or when the connection was closed.
    fn read_proxy_header(&mut self, k: usize) -> bool {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return false;
        };
        if let Err(e) = conn.read_available(proxy_protocol::MAX_HEADER_BYTES) {
            log::debug!("read from {:?} failed: {e}", conn.peer);
            self.close(k);
            return false;
        }
        match proxy_protocol::parse(&conn.buf) {
            Ok(None) if conn.read_eof => {
                log::debug!(
                    "{} closed before sending its PROXY header",
                    conn.peer_label()
                );
                self.close(k);
                false
            }
            Ok(None) => false,
            Ok(Some((header, n))) => {
                if let proxy_protocol::Header::Proxied { source, .. } = header {
                    conn.set_peer(source);
                    conn.is_tls_at_proxy = proxy_protocol::says_client_used_tls(&conn.buf[..n]);
                }
                if let Err(e) = conn.after_proxy_header(n) {
                    self.handshake_failed(k, &e.to_string());
                    return false;
                }
                true
            }
            Err(e) => {
                log::warn!(
                    "closed a connection from {}: {e} (is the proxy in front sending the PROXY protocol, and is this bind meant to expect it?)",
                    conn.peer_label()
                );
                self.close(k);
                false
            }
        }
    }

    fn read_and_serve(&mut self, k: usize) {
        if self
            .conns
            .get(k)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.awaiting_proxy_header)
            && !self.read_proxy_header(k)
        {
            return;
        }
        let limits = &self.spec.config.limits;
        let cap = head_read_cap(limits);
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        if let Err(e) = conn.read_available(cap) {
            if conn.is_handshaking() {
                self.handshake_failed(k, &e.to_string());
            } else {
                log::debug!("read from {:?} failed: {e}", conn.peer);
                self.close(k);
            }
            return;
        }
        if conn.phase == Phase::Lingering {
            conn.buf.clear();
            if conn.read_eof {
                self.close(k);
            }
            return;
        }
        if conn.phase == Phase::Streaming {
            // A stream's client that hangs up is gone; anything it pipelines
            // waits for the stream to end.
            if conn.read_eof {
                log::debug!("client {:?} left its stream", conn.peer);
                self.close(k);
            }
            return;
        }
        if conn.buf.is_empty() {
            if conn.read_eof && conn.is_handshaking() && conn.has_tls_input {
                self.handshake_failed(k, "the client closed the connection");
            } else if conn.read_eof {
                self.close(k);
            }
            return;
        }
        if conn.phase == Phase::Idle {
            // The first byte of a head starts the header timeout.
            conn.phase = Phase::Head;
            conn.deadline = Instant::now() + self.spec.config.header_timeout;
        }
        if !conn.head_may_be_complete(HEAD_RECHECK_BYTES) {
            // A head arriving in pieces: acknowledge each piece at once, so a
            // client held back by Nagle's algorithm is not slowed to one
            // segment per delayed ACK.
            let _ = conn.socket.set_tcp_quickack(true);
            return;
        }
        match parse_head(&conn.buf, limits) {
            Ok(None) if conn.read_eof => self.close(k),
            Ok(None) if conn.buf.len() >= cap => {
                // Only reachable with limits turned off (0): the head is
                // larger than anything we are willing to buffer.
                self.finish(k, |conn, ctx| {
                    exchange::reject(conn, 431, "the request head is too large", ctx)
                })
            }
            Ok(None) => {}
            Ok(Some((head, n))) => {
                conn.consume(n);
                conn.rescan();
                self.serve_request(k, head);
            }
            Err(e) => {
                let status = e.status();
                let reason = e.to_string();
                self.finish(k, |conn, ctx| exchange::reject(conn, status, &reason, ctx));
            }
        }
    }

    /// A TLS handshake that failed or ran out of time: one debug line
    /// (clients that give up are common, and not the server's fault),
    /// counted for /metrics, and the connection closed.
    fn handshake_failed(&mut self, k: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        log::debug!("TLS handshake with {} failed: {why}", conn.peer_label());
        self.spec.slot.count_tls_handshake_failure();
        // The session is over (no close_notify after a failure); what was
        // sent (an alert, or the plain-text 400 for a client speaking HTTP)
        // is left to reach the client through a lingering close, as for
        // any last response.
        conn.tls = None;
        self.after_exchange(k, After::Close);
    }

    fn serve_request(&mut self, k: usize, head: crate::http::RequestHead) {
        self.served += 1;
        let last = self
            .spec
            .max_requests
            .is_some_and(|limit| self.served >= limit);
        if last {
            // Tell the master now, so the replacement boots while we finish.
            self.spec.slot.set_state(WorkerState::Retiring);
            self.notify_master();
        }
        self.parking.request_started();
        let mut app = std::mem::replace(
            &mut self.app,
            Box::new(|_: crate::app::Request<'_>| crate::app::respond(503, "text/plain", ())),
        );
        self.finish(k, |conn, ctx| {
            exchange::serve(conn, head, app.as_mut(), ctx)
        });
        self.app = app;
        let ended = self.parking.request_ended();
        if ended.republish {
            self.publish_held();
        }
        if ended.drain {
            // A TERM came during the request and the listeners are gone
            // already; its byte in the signal pipe finds us draining.
            self.start_draining("TERM");
        }
        let next = if last {
            WorkerState::Retiring
        } else {
            WorkerState::Idle
        };
        self.spec.slot.end_request(next);
        if last {
            log::debug!(
                "Autorestarting worker after current request ({} requests served).",
                self.served
            );
            self.start_draining("max-requests");
        }
    }

    /// Run one exchange on connection `k` and then keep, linger on or close it.
    fn finish<F>(&mut self, k: usize, run: F)
    where
        F: FnOnce(&mut Conn, &mut Context<'_>) -> After,
    {
        let may_keep_alive = self.lifecycle == Lifecycle::Serving
            && self.spec.config.keep_alive.is_some()
            && self.spec.slot.state() != WorkerState::Retiring;
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        let mut ctx = Context {
            slot: self.spec.slot,
            limits: &self.spec.config.limits,
            limit_request_body: self.spec.config.limit_request_body,
            may_keep_alive,
            beat_every: self.beat_every,
            slow_request_threshold: self.spec.config.slow_request_threshold,
            may_open_stream: self.streaming.len() < self.spec.config.max_streams_per_worker,
            forwarded: &self.spec.config.forwarded,
            access_format: self.access_format.as_ref(),
            clock: &mut self.clock,
            out: &mut self.out,
        };
        let after = run(conn, &mut ctx);
        self.after_exchange(k, after);
    }

    /// Keep, linger on, close or start streaming on connection `k`.
    fn after_exchange(&mut self, k: usize, after: After) {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        match after {
            After::Stream(stream) => {
                conn.phase = Phase::Streaming;
                conn.deadline = Instant::now() + stream.rx.idle_timeout;
                conn.stream = Some(stream);
                self.streaming.push(k);
            }
            After::KeepAlive if conn.read_eof && conn.buf.is_empty() => {
                // The client has said all it will say (a half-close).
                self.close(k);
            }

            After::KeepAlive => {
                conn.release_buffer();
                conn.phase = Phase::Idle;
                conn.deadline = Instant::now() + self.spec.config.keep_alive.unwrap_or_default();
                if !conn.buf.is_empty() || conn.maybe_readable || conn.read_eof {
                    // A pipelined request (or its start) is already here.
                    self.ready.push_back(k);
                }
            }
            After::Close => {
                // Even after `Connection: close` a client may have sent more
                // (the public corpus does): closing with unread input would
                // reset the connection and could destroy this response on
                // its way, so read and discard until the client closes.
                // (nginx skips this when nothing more seems to be coming; a
                // client still sending its next lines loses that race.) The
                // shutdown also sends the response the kernel held back
                // (MSG_MORE) in one packet with the FIN.
                conn.shutdown_write();
                if conn.buf.is_empty() && conn.read_eof {
                    self.close(k);
                } else {
                    conn.phase = Phase::Lingering;
                    conn.buf.clear();
                    conn.deadline = Instant::now() + LINGER;
                    self.ready.push_back(k);
                    self.lingering += 1;
                    self.publish_held();
                }
            }
        }
    }

    /// Close connections whose deadline passed: idle ones silently, a half-
    /// sent head with 408.
    fn expire(&mut self, now: Instant) {
        for k in 0..self.conns.len() {
            let Some(conn) = self.conns[k].as_ref() else {
                continue;
            };
            if conn.deadline > now {
                continue;
            }
            match conn.phase {
                Phase::Head => self.finish(k, |conn, ctx| {
                    exchange::reject(conn, 408, "the request head took too long to arrive", ctx)
                }),
                Phase::Idle if conn.awaiting_proxy_header => {
                    log::debug!(
                        "{} sent no PROXY header in time (--header-timeout)",
                        conn.peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
                    );
                    self.close(k);
                }
                Phase::Idle if conn.is_handshaking() => {
                    self.handshake_failed(k, "the client took too long (--header-timeout)")
                }
                Phase::Idle | Phase::Lingering => self.close(k),
                Phase::Streaming => {
                    log::debug!("a stream to {:?} went idle too long; closing it", conn.peer);
                    self.close(k);
                }
            }
            // A connection sent into Lingering by the 408 has a fresh deadline.
        }
    }
}
