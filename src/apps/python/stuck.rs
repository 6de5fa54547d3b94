//! Where a timed-out Python worker was stuck: the timeout handler calls
//! `dump_stacks` after it has answered the client, so the error log gets
//! every Python thread's stack under the master's `WORKER TIMEOUT` line.

use std::os::raw::{c_char, c_int};

use pyo3::ffi;

unsafe extern "C" {
    /// CPython's own dumper, the one `faulthandler` uses from its signal
    /// handlers: it writes with write(2) and reads thread states without
    /// taking locks, so it is safe inside a signal handler. Exported by
    /// libpython 3.9 to 3.13 under this name.
    fn _Py_DumpTracebackThreads(
        fd: c_int,
        interp: *mut ffi::PyInterpreterState,
        current_tstate: *mut ffi::PyThreadState,
    ) -> *const c_char;
}

/// Have the timeout handler dump the Python stacks into the error log.
pub(crate) fn report_on_timeout() {
    // A descriptor of our own: the logger may reopen (and so close) its file
    // on USR1, and the handler must never write to a reused number.
    let fd = crate::logging::error_log_fd();
    // SAFETY: dup(2) on a descriptor this process owns; the copy is never
    // closed, so the handler's number stays valid for the process's life.
    let own = unsafe { libc::dup(fd) };
    if own >= 0 {
        crate::sys::signals::report_timeouts_with(dump_stacks, own);
    }
}

/// Runs inside the SIGABRT handler: only write(2) and CPython's dumper.
extern "C" fn dump_stacks(fd: c_int) {
    let mut line = [0u8; 96];
    let mut n = 0;
    for part in [
        b"[forkhorn] [".as_slice(),
        // SAFETY: getpid is async-signal-safe.
        digits(unsafe { libc::getpid() } as u64, &mut [0u8; 20]),
        b"] [CRITICAL] Python stacks of the timed-out worker:\n".as_slice(),
    ] {
        let take = part.len().min(line.len() - n);
        line[n..n + take].copy_from_slice(&part[..take]);
        n += take;
    }
    // SAFETY: write(2) is async-signal-safe; `line[..n]` is initialised.
    unsafe { libc::write(fd, line.as_ptr().cast(), n) };
    // SAFETY: _Py_DumpTracebackThreads is designed for signal handlers (see
    // its declaration); null interpreter and thread state make it look them
    // up itself, without locks.
    unsafe { _Py_DumpTracebackThreads(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
}

/// `n` in decimal, in `buf`, without allocating.
fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_are_written_without_allocating() {
        assert_eq!(super::digits(0, &mut [0; 20]), b"0");
        assert_eq!(super::digits(40213, &mut [0; 20]), b"40213");
        assert_eq!(
            super::digits(u64::MAX, &mut [0; 20]),
            b"18446744073709551615"
        );
    }
}
