//! Socket options the crates we use do not expose.

use std::io;
use std::os::fd::RawFd;

/// TCP_DEFER_ACCEPT: the kernel hands a connection to accept() only once the
/// client has sent data (or after `secs`). A worker then never takes a
/// connection that has nothing to serve yet and sits on it while busy with
/// another request.
pub fn defer_accept(fd: RawFd, secs: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads exactly size_of::<i32>() bytes from a valid
    // pointer to a local; a bad descriptor is reported as an error.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
