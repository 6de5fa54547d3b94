//! Where a timed-out Python worker was stuck: the timeout handler calls
//! `dump_stacks` after it has answered the client, so the error log gets
//! every Python thread's stack under the master's `WORKER TIMEOUT` line.

use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicI64, Ordering};

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

/// The local time's offset from UTC in seconds, read when the report is set
/// up: the handler cannot call localtime (it takes a lock).
static UTC_OFFSET: AtomicI64 = AtomicI64::new(0);

/// Have the timeout handler dump the Python stacks into the error log.
pub(crate) fn report_on_timeout() {
    // SAFETY: time(NULL) reads the clock; localtime_r fills the plain `tm`.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if !libc::localtime_r(&now, &mut tm).is_null() {
            UTC_OFFSET.store(tm.tm_gmtoff, Ordering::Relaxed);
        }
    }
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

/// Runs inside the SIGABRT handler: only clock_gettime(2), write(2) and
/// CPython's dumper. The first line has the shape of every log line.
extern "C" fn dump_stacks(fd: c_int) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe; `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let offset = UTC_OFFSET.load(Ordering::Relaxed);
    let stamp = timestamp(ts.tv_sec + offset, offset);
    let mut line = [0u8; 128];
    let mut n = 0;
    for part in [
        b"[".as_slice(),
        &stamp,
        b"] [".as_slice(),
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

/// `YYYY-MM-DD HH:MM:SS +HHMM` for `local` seconds since the epoch (UTC
/// shifted by `offset`), by arithmetic alone (the days-to-civil algorithm
/// of Howard Hinnant's date library).
fn timestamp(local: i64, offset: i64) -> [u8; 25] {
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00 00:00:00 +0000";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs / 3600);
    put(14, 2, secs / 60 % 60);
    put(17, 2, secs % 60);
    let minutes = offset.abs() / 60;
    put(21, 2, minutes / 60);
    put(23, 2, minutes % 60);
    out[20] = if offset < 0 { b'-' } else { b'+' };
    out
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
    fn timestamps_are_written_by_arithmetic() {
        // 2026-12-02 18:08:24 UTC.
        assert_eq!(
            &super::timestamp(1_796_234_904, 0),
            b"2026-12-02 18:08:24 +0000"
        );
        assert_eq!(&super::timestamp(0, 0), b"1970-01-01 00:00:00 +0000");
        // 2024-02-29 23:59:59 at UTC-05:30.
        let local = 1_709_251_199 - 19_800;
        assert_eq!(
            &super::timestamp(local, -19_800),
            b"2024-02-29 18:29:59 -0530"
        );
    }

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
