//! Descriptors handed to us by number (`--bind fd://N`, systemd's
//! `LISTEN_FDS`, an old master's `FORKHORN_FDS`).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Take ownership of inherited descriptor `fd`; None if it is not open.
///
/// The caller asserts `fd` was handed to this process to own (that is what
/// fd://N and the inheritance protocols mean) and that nothing else in the
/// process uses it.
pub fn adopt(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open and was handed to us to own (see the
    // function's contract); nothing else in this process uses it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
