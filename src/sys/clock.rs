//! Clocks: the monotonic one shared by master and workers, and local wall time for logs.

use std::ffi::CString;

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on CLOCK_MONOTONIC. Master and workers read the same clock, so a
/// value one process stores in a heartbeat slot means the same instant to the
/// other; wall-clock changes never make a worker look late. The vDSO serves
/// this without a syscall.
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64,
        // CLOCK_MONOTONIC exists on every Linux; fall back to "now is later than
        // anything stored" rather than panicking in a signal-sensitive path.
        Err(_) => u64::MAX / 2,
    }
}

/// Local wall time formatted with strftime(3), e.g. `%Y-%m-%d %H:%M:%S %z`.
pub fn local_time(format: &str) -> String {
    let Ok(format) = CString::new(format) else {
        return String::new();
    };
    // SAFETY: `time(NULL)` only reads the clock.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are
    // valid for the duration of the call, and localtime_r is the reentrant form.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return String::new();
    }
    let mut buf = [0u8; 128];
    // SAFETY: strftime writes at most `buf.len()` bytes into `buf` and returns how
    // many it wrote (0 when it did not fit); `format` is NUL-terminated.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
