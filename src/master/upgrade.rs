//! Zero-downtime binary upgrade (USR2), as in unicorn and gunicorn.
//!
//! The running master starts the binary at its original path again (so a
//! newly installed version runs), with the same arguments, handing over its
//! listening sockets as inherited descriptors named in `FORKHORN_FDS`. The
//! new master boots its workers on those sockets; once they all serve it
//! tells the old master to drain (TERM), renames its pidfile into place and
//! tells systemd it is the main process now. Until then the old master
//! serves as before, and if the new one dies it simply carries on.

use crate::listener::{Bind, BindSpec};
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::sys::process::{self, Pid};
use crate::sys::signals::Sig;

const FDS: &str = "FORKHORN_FDS";
const METRICS_FD: &str = "FORKHORN_METRICS_FD";
const FROM: &str = "FORKHORN_UPGRADE_FROM";

/// What a new master inherits from the one it replaces.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listening sockets, in the old master's bind order, each with what
    /// its connections begin with (TLS, a PROXY header) as the old master
    /// served them.
    pub listeners: Vec<Bind>,
    /// The old master's `--metrics-bind` socket (`FORKHORN_METRICS_FD`),
    /// reused rather than bound again while the old master still holds it.
    pub metrics_fd: Option<RawFd>,
    /// The master to take over from once our workers serve.
    pub old_master: Option<Pid>,
}

impl Inherited {
    /// Read (and remove) the upgrade variables.
    pub fn from_env() -> Inherited {
        let listeners = |s: String| s.split(',').filter_map(parse_listener).collect();
        let inherited = Inherited {
            listeners: std::env::var(FDS).map(listeners).unwrap_or_default(),
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

/// One `FORKHORN_FDS` entry: `FD:SCHEME`, the scheme as the listener is
/// named (`http`, `https`, `proxy+http`, `proxy+https`).
fn listener_entry(bind: &Bind) -> Option<String> {
    let BindSpec::Fd(fd) = bind.addr else {
        return None;
    };
    let scheme = match (bind.expects_proxy_header, bind.is_tls) {
        (false, false) => "http",
        (false, true) => "https",
        (true, false) => "proxy+http",
        (true, true) => "proxy+https",
    };
    Some(format!("{fd}:{scheme}"))
}

/// Read a `listener_entry` back; a bare `FD` is plain.
fn parse_listener(entry: &str) -> Option<Bind> {
    let (fd, scheme) = entry
        .trim()
        .split_once(':')
        .unwrap_or((entry.trim(), "http"));
    let fd: RawFd = fd.parse().ok()?;
    let (expects_proxy_header, rest) = match scheme.strip_prefix("proxy+") {
        Some(rest) => (true, rest),
        None => (false, scheme),
    };
    Some(Bind {
        addr: BindSpec::Fd(fd),
        is_tls: rest == "https",
        expects_proxy_header,
    })
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

    /// Start the new master, handing it `listeners` (descriptors, with
    /// their TLS and PROXY marks: the new master serves them as we did,
    /// whatever its configuration now says) and the metrics socket.
    /// Returns its pid; it is our child until we exit.
    pub fn spawn(
        &self,
        listeners: &[Bind],
        metrics_fd: Option<RawFd>,
        notify_socket: Option<&str>,
    ) -> std::io::Result<Pid> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(&self.args)
            .env(
                FDS,
                listeners
                    .iter()
                    .filter_map(listener_entry)
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
        let keep: Vec<RawFd> = listeners
            .iter()
            .filter_map(|b| match b.addr {
                BindSpec::Fd(fd) => Some(fd),
                _ => None,
            })
            .chain(metrics_fd)
            .collect();
        let child = crate::sys::process::spawn_keeping_fds(&mut cmd, &keep)?;
        Ok(Pid::from_raw(child.id() as i32))
    }
}

/// Where this master stands in an upgrade, in either role. One value, so a
/// master cannot be paused without a new master beside it, nor take over
/// from an old master while starting a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upgrade {
    /// No upgrade under way.
    #[default]
    None,
    /// We are the new master, started by `old`'s USR2: `old` is told to
    /// stop once our workers serve (`take_over`).
    TakingOver {
        /// The master we replace; our parent while it lives.
        old: Pid,
    },
    /// We started `new` on USR2; it has not taken over yet.
    Started {
        /// The new master, our child.
        new: Pid,
    },
    /// WINCH beside `new`: our workers are stopped and not replaced, so the
    /// new master serves alone; HUP brings them back (`resume`).
    Paused {
        /// The new master, our child.
        new: Pid,
    },
}

impl Upgrade {
    /// USR2: why a new master cannot be started now, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        match *self {
            Upgrade::None => None,
            Upgrade::Started { new } | Upgrade::Paused { new } => Some(format!(
                "a new master (pid:{new}) is already starting, ignoring"
            )),
            Upgrade::TakingOver { old } => Some(format!(
                "this master is still taking over from the old one (pid:{old}), ignoring"
            )),
        }
    }

    /// A new master was started on USR2.
    pub fn started(&mut self, new: Pid) {
        *self = Upgrade::Started { new };
    }

    /// WINCH: stop serving beside the new master. False when there is no
    /// new master beside us (WINCH is then ignored).
    pub fn pause(&mut self) -> bool {
        match *self {
            Upgrade::Started { new } | Upgrade::Paused { new } => {
                *self = Upgrade::Paused { new };
                true
            }
            Upgrade::None | Upgrade::TakingOver { .. } => false,
        }
    }

    /// HUP: serve again beside the new master (unicorn's manual rollback).
    /// True if we were paused.
    pub fn resume(&mut self) -> bool {
        match *self {
            Upgrade::Paused { new } => {
                *self = Upgrade::Started { new };
                true
            }
            _ => false,
        }
    }

    /// Whether our workers are stopped beside a new master (`pause`).
    pub fn is_paused(&self) -> bool {
        matches!(self, Upgrade::Paused { .. })
    }

    /// Whether we are the new master, not yet in charge.
    pub fn is_taking_over(&self) -> bool {
        matches!(self, Upgrade::TakingOver { .. })
    }

    /// A child exited: true if it was the new master we started (the
    /// upgrade is over, and paused workers come back).
    pub fn new_master_exited(&mut self, pid: Pid) -> bool {
        match *self {
            Upgrade::Started { new } | Upgrade::Paused { new } if new == pid => {
                *self = Upgrade::None;
                true
            }
            _ => false,
        }
    }

    /// Our workers all serve: the old master to tell to stop, if we are
    /// taking over; from then on we are in charge.
    pub fn take_over(&mut self) -> Option<Pid> {
        let Upgrade::TakingOver { old } = *self else {
            return None;
        };
        *self = Upgrade::None;
        Some(old)
    }
}

/// Tell the master we replace to drain and exit, if it is still there.
pub fn stop_old_master(old: Pid) {
    // The old master is our parent while it lives; once it is gone its
    // pid may belong to someone else, who must not get our TERM.
    if process::getppid() == old {
        log::info!("Upgrade: workers serving; telling the old master (pid:{old}) to stop");
        process::signal(old, Sig::SIGTERM);
    } else {
        log::info!("Upgrade: workers serving; the old master (pid:{old}) is already gone");
    }
}

/// `PIDFILE.2`: where a new master writes its pid until it takes over.
pub fn second_pidfile(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".2");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_handed_over_with_their_marks() {
        for (tls, proxy) in [(false, false), (true, false), (false, true), (true, true)] {
            let bind = Bind {
                addr: BindSpec::Fd(7),
                is_tls: tls,
                expects_proxy_header: proxy,
            };
            let entry = listener_entry(&bind).expect("an fd bind");
            assert_eq!(parse_listener(&entry), Some(bind), "{entry}");
        }
        // An older master's bare descriptor is plain.
        assert_eq!(parse_listener("5"), Some(Bind::plain(BindSpec::Fd(5))));
        assert_eq!(parse_listener("x:https"), None);
    }

    const NEW: Pid = Pid::from_raw(4001);
    const OLD: Pid = Pid::from_raw(4000);

    #[test]
    fn usr2_is_refused_while_an_upgrade_is_under_way_in_either_role() {
        assert_eq!(Upgrade::None.refusal(), None);
        for state in [
            Upgrade::Started { new: NEW },
            Upgrade::Paused { new: NEW },
            Upgrade::TakingOver { old: OLD },
        ] {
            assert!(state.refusal().is_some(), "{state:?}");
        }
    }

    #[test]
    fn winch_pauses_only_beside_a_new_master_and_hup_resumes() {
        let mut u = Upgrade::None;
        assert!(!u.pause());
        assert_eq!(u, Upgrade::None);
        let mut u = Upgrade::TakingOver { old: OLD };
        assert!(!u.pause());
        u = Upgrade::None;
        u.started(NEW);
        assert!(!u.is_paused());
        assert!(u.pause());
        assert_eq!(u, Upgrade::Paused { new: NEW });
        assert!(u.resume());
        assert_eq!(u, Upgrade::Started { new: NEW });
        assert!(!u.resume(), "resuming twice says nothing the second time");
    }

    #[test]
    fn the_new_master_exiting_ends_the_upgrade_and_the_pause() {
        let mut u = Upgrade::Paused { new: NEW };
        assert!(!u.new_master_exited(Pid::from_raw(9999)), "another child");
        assert!(u.is_paused());
        assert!(u.new_master_exited(NEW));
        assert_eq!(u, Upgrade::None);
    }

    #[test]
    fn taking_over_happens_once() {
        let mut u = Upgrade::TakingOver { old: OLD };
        assert!(u.is_taking_over());
        assert_eq!(u.take_over(), Some(OLD));
        assert_eq!(u.take_over(), None);
        assert_eq!(Upgrade::Started { new: NEW }.take_over(), None);
    }

    #[test]
    fn the_second_pidfile_is_beside_the_first() {
        assert_eq!(
            second_pidfile(Path::new("/run/forkhorn.pid")),
            PathBuf::from("/run/forkhorn.pid.2")
        );
    }
}
