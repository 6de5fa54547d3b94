//! Zero-downtime binary upgrade (USR2), as in unicorn and gunicorn.
//!
//! The running master starts the binary at its original path again (so a
//! newly installed version runs), with the same arguments, handing over its
//! listening sockets as inherited descriptors named in `FORKHORN_FDS`. The
//! new master boots its workers on those sockets; once they all serve it
//! tells the old master to drain (TERM), renames its pidfile into place and
//! tells systemd it is the main process now. Until then the old master
//! serves as before, and if the new one dies it simply carries on.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::sys::process::Pid;

const FDS: &str = "FORKHORN_FDS";
const METRICS_FD: &str = "FORKHORN_METRICS_FD";
const FROM: &str = "FORKHORN_UPGRADE_FROM";

/// What a new master inherits from the one it replaces.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listening sockets, in the old master's bind order.
    pub listener_fds: Vec<RawFd>,
    /// The old master's `--metrics-bind` socket (`FORKHORN_METRICS_FD`),
    /// reused rather than bound again while the old master still holds it.
    pub metrics_fd: Option<RawFd>,
    /// The master to take over from once our workers serve.
    pub old_master: Option<Pid>,
}

impl Inherited {
    /// Read (and remove) the upgrade variables.
    pub fn from_env() -> Inherited {
        let fds = |s: String| {
            s.split(',')
                .filter_map(|f| f.trim().parse().ok())
                .collect::<Vec<RawFd>>()
        };
        let inherited = Inherited {
            listener_fds: std::env::var(FDS).map(fds).unwrap_or_default(),
            metrics_fd: std::env::var(METRICS_FD).ok().and_then(|f| f.parse().ok()),
            old_master: std::env::var(FROM)
                .ok()
                .and_then(|p| p.parse().ok())
                .map(Pid::from_raw),
        };
        crate::sys::process::remove_env(&[FDS, METRICS_FD, FROM]);
        inherited
    }
}

/// How to start the new master: the binary's path as first resolved, so a
/// replaced file at that path is what runs, and the original arguments.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// Path of the binary, resolved once at start.
    pub exe: PathBuf,
    /// The arguments after `argv[0]`, unchanged.
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// Capture how this process was started.
    pub fn from_current_process() -> Option<Relaunch> {
        let mut argv = std::env::args_os();
        let argv0 = PathBuf::from(argv.next()?);
        let exe = if argv0.components().count() > 1 {
            std::fs::canonicalize(&argv0).ok()?
        } else {
            // Found on PATH: keep the PATH lookup's answer from now.
            std::env::var_os("PATH")
                .and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join(&argv0))
                        .find(|p| p.is_file())
                })
                .or_else(|| std::env::current_exe().ok())?
        };
        Some(Relaunch {
            exe,
            args: argv.collect(),
        })
    }

    /// Start the new master, handing it `listener_fds` (and the metrics
    /// socket). Returns its pid; it is our child until we exit.
    pub fn spawn(
        &self,
        listener_fds: &[RawFd],
        metrics_fd: Option<RawFd>,
        notify_socket: Option<&str>,
    ) -> std::io::Result<Pid> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(&self.args)
            .env(
                FDS,
                listener_fds
                    .iter()
                    .map(RawFd::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env(FROM, std::process::id().to_string());
        if let Some(fd) = metrics_fd {
            cmd.env(METRICS_FD, fd.to_string());
        }
        if let Some(socket) = notify_socket {
            cmd.env("NOTIFY_SOCKET", socket);
        }
        let keep: Vec<RawFd> = listener_fds.iter().copied().chain(metrics_fd).collect();
        let child = crate::sys::process::spawn_keeping_fds(&mut cmd, &keep)?;
        Ok(Pid::from_raw(child.id() as i32))
    }
}
