//! Signal dispositions and the self-pipe.
//!
//! A handler here does one async-signal-safe thing and returns: it writes the
//! signal's number into a pipe (so the loop that polls the pipe learns which
//! signals came, in order, and how many), or, for the few signals that must act
//! even while a worker is stuck inside the app, it writes a canned response and
//! `_exit`s. Everything else happens in the loop.
//!
//! We install handlers with `sigaction` directly rather than through
//! signal-hook: a forked worker must put the master's signals back to SIG_DFL,
//! and signal-hook's registry cannot restore a default disposition once it has
//! installed its handler.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

pub use nix::sys::signal::Signal as Sig;

/// Write end of the current self-pipe; -1 before `SignalPipe::install`.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The connection a worker is answering, for the timeout handler; -1 when idle.
static CURRENT_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether any byte of the current response has been written.
static RESPONSE_STARTED: AtomicBool = AtomicBool::new(false);

/// Where the timeout handler records when it wrote its 504 (the worker's
/// heartbeat slot), so the master can count and log the response; null
/// until `set_timeout_mark`. Always from a `&'static AtomicU64`.
static TIMEOUT_MARK: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// A function the timeout handler calls after its 504, with the error log's
/// descriptor, to say where the worker was stuck (the Python host dumps the
/// interpreter's stacks); null until `report_timeouts_with`.
static TIMEOUT_REPORT: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
/// Where `TIMEOUT_REPORT` writes.
static TIMEOUT_REPORT_FD: AtomicI32 = AtomicI32::new(2);

/// What a client gets when the master times out the worker serving it: a
/// complete 504 instead of a reset, so proxies and people see why.
const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\n\
Server: forkhorn\r\n\
Content-Type: text/plain\r\n\
Content-Length: 43\r\n\
Connection: close\r\n\
\r\n\
worker timed out while serving the request\n";

/// Bytes of the whole timeout response, head and body.
pub const TIMEOUT_RESPONSE_BYTES: u64 = TIMEOUT_RESPONSE.len() as u64;
/// Bytes of the timeout response's body (the access log's `%(b)s`).
pub const TIMEOUT_BODY_BYTES: u64 = 43;

/// Exit status of a worker ended by the master's timeout signal.
pub const EXIT_TIMED_OUT: i32 = 134;

extern "C" fn push_to_pipe(sig: libc::c_int) {
    // SAFETY: errno is thread-local; we save and restore it so the interrupted
    // code never sees our write's errno.
    let errno = unsafe { *libc::__errno_location() };
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `byte` lives for the call. A
        // full pipe (EAGAIN: thousands of unread signals) drops this one.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

extern "C" fn exit_now(_sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and skips atexit handlers and
    // destructors, which may hold locks the interrupted code owns.
    unsafe { libc::_exit(0) }
}

extern "C" fn on_abort(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    let (code, sender) = unsafe { ((*info).si_code, (*info).si_pid()) };
    // SAFETY: getpid is async-signal-safe.
    let me = unsafe { libc::getpid() };
    if code != libc::SI_USER || sender == me {
        // abort() inside this process (an app crash): let it crash as usual,
        // with the default disposition abort() re-raises into.
        // SAFETY: signal(2) is async-signal-safe.
        unsafe { libc::signal(libc::SIGABRT, libc::SIG_DFL) };
        return;
    }
    // Sent by the master (or an operator): the worker is being timed out.
    let fd = CURRENT_FD.load(Ordering::Relaxed);
    if fd >= 0 && !RESPONSE_STARTED.load(Ordering::Relaxed) {
        let mut rest = TIMEOUT_RESPONSE;
        while !rest.is_empty() {
            // SAFETY: write(2) is async-signal-safe; `rest` is a static slice.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                break;
            }
            rest = &rest[n as usize..];
        }
        if rest.is_empty() {
            record_timeout_answer();
        }
    }
    let report = TIMEOUT_REPORT.load(Ordering::Acquire);
    if !report.is_null() {
        // SAFETY: only `report_timeouts_with` stores here, from a
        // `TimeoutReport`, whose contract is to be async-signal-safe.
        let report: TimeoutReport = unsafe { std::mem::transmute(report) };
        report(TIMEOUT_REPORT_FD.load(Ordering::Relaxed));
    }
    // SAFETY: as in exit_now.
    unsafe { libc::_exit(EXIT_TIMED_OUT) }
}

/// Stamp the timeout mark with the time the 504 went out. Async-signal-safe:
/// one clock_gettime(2) and one atomic store.
fn record_timeout_answer() {
    let mark = TIMEOUT_MARK.load(Ordering::Acquire);
    if mark.is_null() {
        return;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) is async-signal-safe; `ts` is a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return;
    }
    let ns = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
    // SAFETY: the pointer was made from a `&'static AtomicU64` in
    // `set_timeout_mark`, so it is valid and aligned for the process's life.
    unsafe { &*mark }.store(ns.max(1), Ordering::Release);
}

fn set(sig: Signal, handler: SigHandler, flags: SaFlags) -> io::Result<()> {
    let action = SigAction::new(handler, flags, SigSet::empty());
    // SAFETY: every handler in this module is async-signal-safe (they only
    // touch atomics and call write/_exit/signal/getpid), and SIG_DFL/SIG_IGN
    // are always sound.
    unsafe { sigaction(sig, &action) }
        .map(drop)
        .map_err(io::Error::from)
}

/// The read end of a self-pipe that receives the number of every routed signal.
pub struct SignalPipe {
    read: OwnedFd,
    // Kept open for as long as the pipe is installed: the handler writes to it.
    _write: OwnedFd,
}

impl SignalPipe {
    /// Route `signals` into a new pipe. Replaces the pipe of an earlier call
    /// (a forked worker installs its own in place of the master's).
    pub fn install(signals: &[Signal]) -> io::Result<SignalPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::SeqCst);
        for &sig in signals {
            set(sig, SigHandler::Handler(push_to_pipe), SaFlags::SA_RESTART)?;
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// Every signal received since the last call, oldest first.
    pub fn drain(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend(
                    buf[..n]
                        .iter()
                        .filter_map(|&b| Signal::try_from(i32::from(b)).ok()),
                ),
            }
        }
        out
    }

    /// The pipe's read end, for a poll set; readable when a
    /// signal is waiting.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

impl std::os::fd::AsFd for SignalPipe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Put `signals` back to their default action.
pub fn set_default(signals: &[Signal]) -> io::Result<()> {
    for &sig in signals {
        set(sig, SigHandler::SigDfl, SaFlags::empty())?;
    }
    Ok(())
}

/// Ignore `signals`.
pub fn ignore(signals: &[Signal]) -> io::Result<()> {
    for &sig in signals {
        set(sig, SigHandler::SigIgn, SaFlags::empty())?;
    }
    Ok(())
}

/// Make `signals` end the process at once with status 0, wherever it is
/// (a worker's quick stop: the app may be stuck in a long call).
pub fn exit_on(signals: &[Signal]) -> io::Result<()> {
    for &sig in signals {
        set(sig, SigHandler::Handler(exit_now), SaFlags::empty())?;
    }
    Ok(())
}

/// Make SIGABRT from another process answer the current request with a 504
/// and exit with `EXIT_TIMED_OUT`; an `abort()` inside the process still
/// crashes it as usual.
pub fn install_timeout_handler() -> io::Result<()> {
    set(
        Signal::SIGABRT,
        SigHandler::SigAction(on_abort),
        SaFlags::SA_SIGINFO,
    )
}

/// A report of where a timed-out worker was stuck, written to the descriptor
/// it is given. It runs inside the SIGABRT handler, so it must only do what
/// is safe there (write(2), reading memory no lock guards).
pub type TimeoutReport = extern "C" fn(fd: libc::c_int);

/// Have the timeout handler call `report` with `fd` (the error log) after it
/// has answered the client and before the worker exits.
pub fn report_timeouts_with(report: TimeoutReport, fd: RawFd) {
    TIMEOUT_REPORT_FD.store(fd, Ordering::Relaxed);
    TIMEOUT_REPORT.store(report as *mut (), Ordering::Release);
}

/// Have the timeout handler stamp `mark` with the CLOCK_MONOTONIC time at
/// which it wrote its 504 (the worker's heartbeat slot; see
/// `Slot::leak_timeout_mark`).
pub fn set_timeout_mark(mark: &'static AtomicU64) {
    TIMEOUT_MARK.store(std::ptr::from_ref(mark).cast_mut(), Ordering::Release);
}

/// Tell the timeout handler which connection the worker is answering now.
pub fn set_current_request(fd: Option<RawFd>) {
    RESPONSE_STARTED.store(false, Ordering::Relaxed);
    CURRENT_FD.store(fd.unwrap_or(-1), Ordering::Relaxed);
}

/// Record that the current response has started going out, so a timeout
/// can no longer prepend a 504 to it.
pub fn mark_response_started() {
    RESPONSE_STARTED.store(true, Ordering::Relaxed);
}

/// Block every signal, returning the mask to restore. The master forks with
/// signals blocked so a signal that lands between fork and the child's own
/// handlers cannot run the master's handler in the child.
pub fn block_all() -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    Ok(old)
}

/// Unblock every signal (a forked worker, once its own handlers are in place).
pub fn unblock_all() -> io::Result<()> {
    restore_mask(&SigSet::empty())
}

/// Restore a signal mask saved by `block_all`.
pub fn restore_mask(mask: &SigSet) -> io::Result<()> {
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(mask), None)?;
    Ok(())
}

impl SignalPipe {
    /// Both ends, for a forked child to close.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self._write.as_raw_fd()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_response_is_well_framed() {
        let text = std::str::from_utf8(TIMEOUT_RESPONSE).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 504 "));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(length, body.len());
        assert_eq!(TIMEOUT_BODY_BYTES as usize, body.len());
    }
}
