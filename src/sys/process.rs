//! Processes: fork, reaping, signalling, and tying a worker's life to its master's.

use std::io;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
pub use nix::unistd::Pid;

/// Which side of a fork we are on.
pub enum Forked {
    /// In the master; the new child's pid.
    Parent(Pid),
    /// In the new child.
    Child,
}

/// fork(2). Only the master calls this, and the master never starts a thread.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the master is single-threaded, so the child cannot inherit a lock
    // held by another thread; the child runs only the worker's setup and loop.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this status.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {}", s.as_str()),
        }
    }
}

/// Collect every child that has ended, without blocking.
pub fn reap_exited() -> Vec<(Pid, Exit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, Exit::Signal(sig))),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            // Stopped/continued reports are not exits; keep collecting.
            Ok(_) => continue,
        }
    }
    out
}

/// Send `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: Pid, sig: Signal) {
    let _ = kill(pid, sig);
}

/// Whether a process with this pid exists (and we may signal it).
pub fn is_alive(pid: Pid) -> bool {
    match kill(pid, None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Have the kernel SIGKILL this process when its parent dies, then make sure
/// the parent did not die before we asked (the classic prctl race).
pub fn die_with_parent(expected_parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != expected_parent {
        // SAFETY: _exit is always sound; nothing of the worker has started yet.
        unsafe { libc::_exit(0) };
    }
    Ok(())
}

/// This process's pid.
pub fn getpid() -> Pid {
    nix::unistd::getpid()
}

/// The parent's pid; a worker compares it with its master's to notice
/// that the master is gone (the child is then re-parented).
pub fn getppid() -> Pid {
    nix::unistd::getppid()
}

/// End the process now with `code`, running no destructors (a forked child
/// must not run the master's).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always sound.
    unsafe { libc::_exit(code) }
}

/// Close descriptors a forked child inherited but must not keep.
pub fn close_inherited(fds: &[std::os::fd::RawFd]) {
    for &fd in fds {
        // SAFETY: the caller names descriptors that belong to the parent's
        // objects; the child never uses them and leaves with _exit, so no
        // destructor will close them a second time.
        unsafe { libc::close(fd) };
    }
}

/// Write one byte to a wake-up pipe; a full or closed pipe drops it.
pub fn poke(fd: std::os::fd::RawFd) {
    let byte = 1u8;
    // SAFETY: a one-byte write from a valid stack buffer.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// Raise the soft open-file limit to the hard limit: each worker may hold
/// up to --worker-connections sockets, and the common soft default (1024)
/// is far below what the hard limit allows.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Remove variables from the environment. Call only while the process has
/// one thread (the master always does; a worker before its app starts any).
pub fn remove_env(names: &[&str]) {
    for name in names {
        // SAFETY: the process is single-threaded here (see above), so no
        // other thread can be reading the environment.
        unsafe { std::env::remove_var(name) };
    }
}

/// Start `cmd` with `keep` left open across exec (listening sockets handed
/// to a new master), at the same descriptor numbers.
pub fn spawn_keeping_fds(
    cmd: &mut std::process::Command,
    keep: &[std::os::fd::RawFd],
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let keep = keep.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl(2), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}
