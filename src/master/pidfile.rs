//! The master's pidfile: written atomically, removed on exit, and never
//! overwritten while it names a live forkhorn.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::sys::process::{self, Pid};

/// The master's pidfile, held for the master's life. Dropping it removes
/// the file, but only while the file still holds our pid: a new master
/// that took over may have rewritten it.
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

impl Pidfile {
    /// Write our pid to `path`, refusing if it names a running forkhorn.
    pub fn create(path: &Path) -> io::Result<Pidfile> {
        if let Some(pid) = read_pid(path)
            && pid != std::process::id()
            && is_forkhorn(pid)
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "pidfile {} names a running forkhorn (pid {pid}); stop it first or pick another --pid",
                    path.display()
                ),
            ));
        }
        let stale = read_pid(path).filter(|&pid| pid != std::process::id());
        let pid = std::process::id();
        Pidfile::write(path, pid)?;
        if let Some(old) = stale {
            log::warn!(
                "replaced a stale pidfile at {} (pid {old} is not a running forkhorn; a previous forkhorn was killed)",
                path.display()
            );
        }
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
    }

    fn write(path: &Path, pid: u32) -> io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{pid}.tmp"));
        let cant = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot write pidfile {}: {e}", path.display()),
            )
        };
        let mut f = std::fs::File::create(&tmp).map_err(cant)?;
        writeln!(f, "{pid}").map_err(cant)?;
        f.sync_all().map_err(cant)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            cant(e)
        })
    }
}

impl Pidfile {
    /// Move the pidfile to `to` (a new master taking over renames its
    /// `PIDFILE.2` to `PIDFILE`).
    pub fn promote(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Remove it only if it is still ours (a new master may have taken over).
        if read_pid(&self.path) == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_forkhorn(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if !process::is_alive(Pid::from_raw(raw)) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    String::from_utf8_lossy(argv0).contains("forkhorn") || comm.contains("forkhorn")
}
