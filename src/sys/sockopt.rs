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

/// accept4(2) with the new socket already non-blocking and close-on-exec:
/// one syscall where accept-then-fcntl takes two.
pub fn accept_nonblocking(
    listener: &socket2::Socket,
) -> io::Result<(socket2::Socket, socket2::SockAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = listener.as_raw_fd();
    // SAFETY: try_init hands us zeroed address storage and its length, which
    // accept4 fills in; we return the descriptor only when accept4 succeeded.
    let (new_fd, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let n = libc::accept4(
                fd,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n)
            }
        })
    }?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    let socket = unsafe { socket2::Socket::from_raw_fd(new_fd) };
    Ok((socket, addr))
}
