//! Handing idle keep-alive connections to a free worker while this one is
//! busy.
//!
//! The app runs on the worker's main thread, one request at a time; while a
//! request runs long, a request arriving on one of the worker's idle
//! keep-alive connections would wait for it. So a small watcher thread
//! notices when the request in flight has run past `HANDOFF_AFTER` and sends
//! every *parked* connection (idle, nothing of it read into or waiting in our
//! memory) over the hand-off channel (`balance::Balance::handoff`), where the
//! first free worker takes it like a new connection. The socket is the same
//! kernel object, so a request the client already sent is still in its
//! receive buffer and nothing is lost; the client sees no difference but who
//! answers.
//!
//! Who owns a connection is settled under one mutex: the main thread parks a
//! connection when it goes idle and unparks it before reading from it; the
//! watcher only ever sends parked ones, and takes them off the table as it
//! does. A connection the main thread finds gone from the table is no longer
//! its own: it forgets it (deregister, plain close of its copy; never a
//! `shutdown`, which would act on the socket now served elsewhere).
//!
//! Cost on the keep-alive path: one uncontended lock to unpark before reading
//! and one to park after the response, plus one atomic store at the start
//! and end of each request, and no syscall: while requests keep coming the
//! watcher looks every `HANDOFF_AFTER` on its own clock, and only a worker
//! that has started no request for `QUIET_BEFORE_SLEEP` lets it sleep on a
//! condvar (an idle worker costs nothing), to be woken by the next request's
//! start.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::balance::Balance;
use crate::sys::fdpass::FdChannel;

/// How long a request may run before its worker's idle connections go to a
/// free worker. Short enough that a request arriving on one of them waits
/// barely longer than a fresh connection would; long enough that a worker
/// whose requests take a few milliseconds keeps its connections (moving one
/// costs a sendmsg and a recvmsg, and the clients' next requests lose the
/// warm cache of the worker they were on).
pub const HANDOFF_AFTER: Duration = Duration::from_millis(25);

/// How long a worker starts no request before its watcher sleeps until the
/// next one. Under load the watcher must not sleep on the condvar: every
/// request start would find it asleep, take the table's lock to wake it and
/// collide with it (measured: some 250 extra context switches a second per
/// worker, and a few percent of keep-alive throughput).
const QUIET_BEFORE_SLEEP: Duration = Duration::from_secs(1);

/// While a request runs past `HANDOFF_AFTER`, how often the watcher looks
/// for a TERM, to let go of the listening sockets (see `release_listeners`).
const TERM_CHECK: Duration = Duration::from_millis(50);

/// The parking table and the watcher's wake-up, shared by the main thread
/// and the watcher.
pub struct Parking {
    shared: Arc<Shared>,
    /// Sequence number of the last request started (main thread only).
    seq: u64,
}

struct Shared {
    table: Mutex<Table>,
    wake: Condvar,
    /// The request in flight (its sequence number), 0 between requests.
    /// Only the main thread writes it.
    in_flight: AtomicU64,
    /// The sequence number of the last request started, kept after it
    /// ends, so the watcher can tell a quiet worker from a busy one whose
    /// requests all fell between its looks. Only the main thread writes it.
    last_started: AtomicU64,
    /// The watcher waits for the next request; whoever starts one wakes it.
    is_watcher_asleep: AtomicBool,
    /// Cleared when the worker drains: its connections are closed after
    /// their next response, not moved.
    may_hand_off: AtomicBool,
    /// The watcher moved connections the main thread has not forgotten yet.
    has_handed_off: AtomicBool,
    channel: Arc<FdChannel>,
    /// This worker's seat in the accept balance, which the watcher empties
    /// while a request runs long: a busy worker is no sibling to leave new
    /// connections to. The main thread publishes its count again after.
    seat: Option<(Balance, usize)>,
    /// The watcher emptied the seat during the request in flight.
    is_seat_vacated: AtomicBool,
    /// The worker's copies of the listening sockets, and its poller.
    listeners: Vec<RawFd>,
    registry: mio::Registry,
    /// The watcher swapped the listeners for placeholders (TERM came during
    /// a long request); the main thread must drain as soon as it is back.
    is_listeners_released: AtomicBool,
}

/// What the main thread must do after a request.
pub struct Ended {
    /// The watcher emptied our balance seat: publish our count again.
    pub republish: bool,
    /// A TERM came and the watcher let go of the listeners: drain now.
    pub drain: bool,
}

#[derive(Default)]
struct Table {
    /// By connection slot: the descriptor of a parked connection.
    parked: Vec<Option<RawFd>>,
    parked_count: usize,
    /// Slots the watcher handed off since the main thread last looked.
    handed_off: Vec<usize>,
}

impl Parking {
    /// The table, and its watcher thread (started here: call this only in a
    /// worker, after fork, never in the master).
    pub fn start(
        channel: Arc<FdChannel>,
        seat: Option<(Balance, usize)>,
        listeners: Vec<RawFd>,
        registry: mio::Registry,
    ) -> std::io::Result<Parking> {
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            wake: Condvar::new(),
            in_flight: AtomicU64::new(0),
            last_started: AtomicU64::new(0),
            is_watcher_asleep: AtomicBool::new(false),
            may_hand_off: AtomicBool::new(true),
            has_handed_off: AtomicBool::new(false),
            channel,
            seat,
            is_seat_vacated: AtomicBool::new(false),
            listeners,
            registry,
            is_listeners_released: AtomicBool::new(false),
        });
        let watcher = Arc::clone(&shared);
        // Signals go to the main thread: its handlers act on the request
        // in flight (the timeout 504) and feed its loop.
        let mask = crate::sys::signals::block_all()?;
        let spawned = std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || watcher.watch());
        crate::sys::signals::restore_mask(&mask)?;
        spawned?;
        Ok(Parking { shared, seq: 0 })
    }

    /// Connection `k` (descriptor `fd`) went idle with nothing of it in our
    /// memory: the watcher may move it from now on.
    pub fn park(&self, k: usize, fd: RawFd) {
        let mut t = self.shared.lock();
        if t.parked.len() <= k {
            t.parked.resize(k + 1, None);
        }
        if t.parked[k].replace(fd).is_none() {
            t.parked_count += 1;
        }
    }

    /// Take parked connection `k` back before reading from it. False: the
    /// watcher handed it off; it is not ours to read any more.
    pub fn unpark(&self, k: usize) -> bool {
        let mut t = self.shared.lock();
        match t.parked.get_mut(k).and_then(Option::take) {
            Some(_) => {
                t.parked_count -= 1;
                true
            }
            None => {
                // Forgotten now, so not again from the handed-off list
                // (slot `k` may soon hold another connection).
                t.handed_off.retain(|&h| h != k);
                false
            }
        }
    }

    /// Slots handed off since the last call (cheap when there are none).
    pub fn take_handed_off(&self) -> Vec<usize> {
        if !self.shared.has_handed_off.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut t = self.shared.lock();
        self.shared.has_handed_off.store(false, Ordering::Relaxed);
        std::mem::take(&mut t.handed_off)
    }

    /// A request starts on the main thread.
    pub fn request_started(&mut self) {
        self.seq += 1;
        self.shared.last_started.store(self.seq, Ordering::Relaxed);
        self.shared.in_flight.store(self.seq, Ordering::SeqCst);
        // Paired with the watcher's store-then-load: either it sees this
        // request, or we see it asleep and wake it.
        if self.shared.is_watcher_asleep.load(Ordering::SeqCst) {
            let _t = self.shared.lock();
            self.shared.is_watcher_asleep.store(false, Ordering::SeqCst);
            self.shared.wake.notify_one();
        }
    }

    /// The request in flight is over.
    pub fn request_ended(&self) -> Ended {
        let s = &self.shared;
        s.in_flight.store(0, Ordering::SeqCst);
        // Paired with `step_aside` and `release_listeners`: either the
        // watcher sees the request over and does nothing, or we see its
        // flag and, by taking the lock, act only after it is done.
        let republish = s.is_seat_vacated.load(Ordering::SeqCst);
        let drain = s.is_listeners_released.load(Ordering::SeqCst);
        if republish || drain {
            let _t = s.lock();
            s.is_seat_vacated.store(false, Ordering::SeqCst);
        }
        Ended { republish, drain }
    }

    /// The worker drains: keep what it holds (see `may_hand_off`).
    pub fn stop_handing_off(&self) {
        self.shared.may_hand_off.store(false, Ordering::Relaxed);
    }
}

/// What one hand-off pass did.
enum Pass {
    /// Every parked connection went (or there were none).
    Done,
    /// The channel is full (every worker busy and a backlog waiting): try
    /// again a little later.
    Full,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent (every
        // update is a single step), so a poisoned lock is used as is.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watcher thread's whole life.
    fn watch(&self) {
        // The request whose connections were already dealt with.
        let mut handled = 0;
        // The last request seen started, and since when none has.
        let mut last_seen = 0;
        let mut quiet_since = Instant::now();
        loop {
            let current = self.in_flight.load(Ordering::SeqCst);
            if current == 0 {
                let started = self.last_started.load(Ordering::Relaxed);
                if started != last_seen {
                    last_seen = started;
                    quiet_since = Instant::now();
                }
                if quiet_since.elapsed() >= QUIET_BEFORE_SLEEP {
                    self.sleep_until_next_request(handled);
                } else {
                    std::thread::sleep(HANDOFF_AFTER);
                }
                continue;
            }
            if current == handled {
                // A long request goes on: watch for a TERM meanwhile.
                std::thread::sleep(TERM_CHECK);
                self.release_listeners(current);
                continue;
            }
            std::thread::sleep(HANDOFF_AFTER);
            if self.in_flight.load(Ordering::SeqCst) != current {
                continue; // over (or another one started: give it its time)
            }
            if !self.may_hand_off.load(Ordering::Relaxed) {
                handled = current;
                continue;
            }
            self.release_listeners(current);
            self.step_aside(current);
            match self.hand_off_parked() {
                Pass::Done => handled = current,
                Pass::Full => {}
            }
        }
    }

    /// Empty our balance seat while request `current` runs on.
    fn step_aside(&self, current: u64) {
        let Some((balance, seat)) = &self.seat else {
            return;
        };
        let _t = self.lock();
        self.is_seat_vacated.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) == current {
            balance.vacate(*seat);
        }
    }

    /// A TERM came while request `current` runs on: let go of our copies
    /// of the listening sockets now, not when the request ends, so that new
    /// connections are refused (or queue for the next server) instead of
    /// waiting in a queue this worker will never accept from. The main
    /// thread uses the listeners only between requests, and drains as soon
    /// as it is back (`request_ended`), before it could accept again.
    fn release_listeners(&self, current: u64) {
        if !crate::sys::drain::term_seen()
            || !self.may_hand_off.load(Ordering::Relaxed)
            || self.is_listeners_released.load(Ordering::Relaxed)
        {
            return;
        }
        let _t = self.lock();
        self.is_listeners_released.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) != current {
            return; // the main thread is back and drains by itself
        }
        for &fd in &self.listeners {
            // Out of our epoll set first: the socket lives on in other
            // processes, so replacing our descriptor would not remove it.
            let _ = self.registry.deregister(&mut mio::unix::SourceFd(&fd));
            if let Err(e) = crate::sys::drain::replace_with_placeholder(fd) {
                log::warn!("cannot close a listening socket while draining: {e}");
            }
        }
        log::debug!(
            "worker {} closed its listening sockets during a long request (TERM)",
            std::process::id()
        );
    }

    fn sleep_until_next_request(&self, handled: u64) {
        let mut t = self.lock();
        self.is_watcher_asleep.store(true, Ordering::SeqCst);
        let now = self.in_flight.load(Ordering::SeqCst);
        if now != 0 && now != handled {
            self.is_watcher_asleep.store(false, Ordering::SeqCst);
            return;
        }
        while self.is_watcher_asleep.load(Ordering::SeqCst) {
            t = self.wake.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Send every parked connection over the channel, one per message, so
    /// that each may go to a different free worker.
    fn hand_off_parked(&self) -> Pass {
        let mut t = self.lock();
        if t.parked_count == 0 {
            return Pass::Done;
        }
        let mut moved = 0;
        let mut pass = Pass::Done;
        for k in 0..t.parked.len() {
            let Some(fd) = t.parked[k] else { continue };
            match self.channel.send(fd) {
                Ok(()) => {
                    t.parked[k] = None;
                    t.parked_count -= 1;
                    t.handed_off.push(k);
                    moved += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    pass = Pass::Full;
                    break;
                }
                Err(e) => {
                    // Not expected (the channel lives as long as the
                    // master); the connections simply stay here.
                    log::warn!("cannot hand an idle connection to another worker: {e}");
                    break;
                }
            }
        }
        if moved > 0 {
            self.has_handed_off.store(true, Ordering::Release);
            log::debug!(
                "worker {} busy for over {}ms; handed {moved} idle connections to a free worker",
                std::process::id(),
                HANDOFF_AFTER.as_millis()
            );
        }
        pass
    }
}
