//! Facts about processes from /proc.

/// A process's memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size (VmRSS), shared pages included.
    pub rss: u64,
    /// Pages only this process maps (Private_Clean + Private_Dirty of
    /// smaps_rollup): what a leak grows. Copy-on-write pages still shared
    /// with the master do not count until the worker writes to them.
    pub private: u64,
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory of `pid`, or None when it is gone or /proc is not readable.
pub fn memory(pid: i32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = kib_field(&status, "VmRSS:")?;
    let private = match std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        Ok(rollup) => {
            kib_field(&rollup, "Private_Clean:").unwrap_or(0)
                + kib_field(&rollup, "Private_Dirty:").unwrap_or(0)
        }
        // Kernels before 4.14 have no smaps_rollup; anonymous RSS is the
        // closest cheap figure.
        Err(_) => kib_field(&status, "RssAnon:").unwrap_or(rss),
    };
    Some(Memory { rss, private })
}

/// Connections waiting in a listening TCP socket's accept queue (the
/// kernel reports it in TCP_INFO as `tcpi_unacked` for listeners).
pub fn listen_queue(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes
    // into it and tells us how many.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: both pointers are valid for the call; a non-TCP socket makes
    // getsockopt fail, which we report as None.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(u64::from(info.tcpi_unacked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory() {
        let m = memory(std::process::id() as i32).expect("own memory");
        assert!(
            m.rss > 0 && m.private > 0 && m.private <= m.rss * 2,
            "{m:?}"
        );
    }
}
