//! What a worker needs to let go of its listening sockets while its main
//! thread is still inside the app: its TERM noted where another thread can
//! see it, and a listening descriptor swapped for a harmless one.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use super::signals::SignalPipe;

/// The self-pipe's write end, for the TERM handler.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// A TERM arrived.
static TERM_SEEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(sig: libc::c_int) {
    // SAFETY: errno is thread-local; saved and restored around our write.
    let errno = unsafe { *libc::__errno_location() };
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `byte` lives for the call.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    // After the byte: whoever sees the flag finds the byte in the pipe.
    TERM_SEEN.store(true, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Route TERM into `pipe` as `SignalPipe::install` does, and also note it
/// for `term_seen`. Call after installing the pipe.
pub fn note_term(pipe: &SignalPipe) -> io::Result<()> {
    PIPE_WRITE.store(pipe.fds()[1], Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_term),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls write(2) and touches atomics, both
    // async-signal-safe.
    unsafe { sigaction(Signal::SIGTERM, &action) }?;
    Ok(())
}

/// Whether this process was sent TERM.
pub fn term_seen() -> bool {
    TERM_SEEN.load(Ordering::SeqCst)
}

/// Make descriptor `fd` point at `/dev/null` instead of what it held,
/// dropping this process's reference to that (a listening socket) while the
/// number stays taken: code that still holds the number (and will close it
/// later) can never reach a different file that reused it.
pub fn replace_with_placeholder(fd: RawFd) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup3 only rewires descriptor `fd`, which the caller owns and
    // no other thread uses meanwhile; `null` is open for the call.
    let rc = unsafe { libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
