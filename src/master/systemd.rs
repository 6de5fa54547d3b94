//! systemd integration: readiness notification (`sd_notify`) and socket
//! activation (`LISTEN_FDS`). Both are no-ops outside systemd.
//!
//! The notify protocol is one datagram of `KEY=VALUE` lines to the socket in
//! `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`); it is
//! small enough to speak directly.

use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The master's line to systemd; inert when NOTIFY_SOCKET is unset.
pub struct Notifier {
    /// $NOTIFY_SOCKET as given, to hand to a new master on upgrade.
    pub socket_path: Option<String>,
    target: Option<SocketAddr>,
    socket: Option<UnixDatagram>,
    /// Half of WATCHDOG_USEC: how often to ping, when systemd asks for it.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    /// Read NOTIFY_SOCKET and WATCHDOG_USEC (only when WATCHDOG_PID, if set,
    /// names us). The variables are removed so workers and apps never act
    /// as the service themselves.
    pub fn from_env() -> Notifier {
        let socket_path = std::env::var("NOTIFY_SOCKET").ok();
        let target = socket_path.as_deref().and_then(|path| {
            if let Some(name) = path.strip_prefix('@') {
                SocketAddr::from_abstract_name(name.as_bytes()).ok()
            } else {
                SocketAddr::from_pathname(path).ok()
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        crate::sys::process::remove_env(&["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]);
        let socket = target.as_ref().and_then(|_| UnixDatagram::unbound().ok());
        Notifier {
            socket_path,
            target,
            socket,
            watchdog_every,
        }
    }

    /// Whether NOTIFY_SOCKET named a usable address (systemd sets it for
    /// `Type=notify` services).
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Send `KEY=VALUE` lines. Failures are logged once at debug: systemd
    /// going away must not disturb serving.
    pub fn send(&self, state: &str) {
        if let (Some(socket), Some(target)) = (&self.socket, &self.target)
            && let Err(e) = socket.send_to_addr(state.as_bytes(), target)
        {
            log::debug!("sd_notify failed: {e}");
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC=` with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    crate::sys::clock::monotonic_ns() / 1000
}

/// Listening sockets systemd passed us (`LISTEN_FDS`, starting at fd 3),
/// when `LISTEN_PID` names this process. The variables are removed so they
/// are not taken for ours by anything we start.
pub fn listen_fds() -> Vec<RawFd> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok());
    crate::sys::process::remove_env(&["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]);
    match (ours, count) {
        (true, Some(n)) if n > 0 => (3..3 + n).collect(),
        _ => Vec::new(),
    }
}
