//! Opening a path that must stay beneath a directory, whatever is renamed or
//! swapped for a symlink while it is looked up.
//!
//! Where the kernel has `openat2(2)` (Linux 5.6+), one call with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` does it: the kernel refuses any
//! step that leaves the directory (`..` past it, an absolute symlink, a
//! relative one climbing out) and `/proc` magic links, and the check and the
//! open are one atomic walk. Symlinks that stay beneath the directory are
//! followed.
//!
//! Elsewhere (an older kernel, or a seccomp filter that answers ENOSYS or
//! EPERM for a syscall it does not know, as older container runtimes do) the
//! same guarantee comes from a walk one component at a time: each `openat` is
//! relative to the directory fd the previous step opened, names are never `.`,
//! `..` or contain `/`, and `O_NOFOLLOW` refuses every symlink. So the walk
//! cannot leave the directory either, at the price of refusing symlinks that
//! would have stayed inside it.
//!
//! Both are safe wrappers over nix (which holds the `unsafe` of the raw
//! syscall); nothing here needs an `unsafe` block of its own.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::Mode;

/// How paths are resolved beneath a directory on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`; symlinks
    /// inside the directory are followed.
    Openat2,
    /// One `openat(O_NOFOLLOW)` per component; no symlink is followed.
    Walk,
}

/// Times `openat2` is retried when it reports a concurrent rename or mount
/// (EAGAIN, which `RESOLVE_BENEATH` may return rather than risk a wrong answer).
const RACE_RETRIES: usize = 3;

/// A directory opened once, beneath which paths are opened.
#[derive(Debug)]
pub struct Beneath {
    /// An `O_PATH` fd of the directory: it names the directory even if the
    /// directory is later renamed, and it cannot be read through.
    dir: OwnedFd,
    resolver: Resolver,
}

impl Beneath {
    /// Opens `dir` (following symlinks in `dir` itself: the operator named
    /// it) and finds out whether this kernel has `openat2`.
    pub fn open(dir: &Path) -> nix::Result<Beneath> {
        let dir = open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let resolver = match beneath(dir.as_fd(), ".", OFlag::O_PATH | OFlag::O_CLOEXEC) {
            Ok(_) => Resolver::Openat2,
            Err(Errno::ENOSYS | Errno::EPERM) => Resolver::Walk,
            Err(e) => return Err(e),
        };
        Ok(Beneath { dir, resolver })
    }

    /// The same directory, resolving with `resolver` (tests use this to
    /// exercise the fallback on a kernel that has `openat2`).
    pub fn with_resolver(self, resolver: Resolver) -> Beneath {
        Beneath { resolver, ..self }
    }

    /// Which of the two ways paths are resolved here.
    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// Opens `components` (each a single name: not empty, `.`, `..`, and no
    /// `/` or NUL) beneath the directory with `flags`; no components opens
    /// the directory itself. `O_CLOEXEC` is always added.
    pub fn open_file(&self, components: &[&str], flags: OFlag) -> nix::Result<OwnedFd> {
        if components
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains(['/', '\0']))
        {
            return Err(Errno::EINVAL);
        }
        let flags = flags | OFlag::O_CLOEXEC;
        match self.resolver {
            Resolver::Openat2 => {
                let path = if components.is_empty() {
                    ".".to_owned()
                } else {
                    components.join("/")
                };
                let mut tries = 0;
                loop {
                    match beneath(self.dir.as_fd(), &path, flags) {
                        Err(Errno::EAGAIN) if tries < RACE_RETRIES => tries += 1,
                        result => return result,
                    }
                }
            }
            Resolver::Walk => walk(self.dir.as_fd(), components, flags),
        }
    }
}

/// `openat2(dir, path, flags)` confined beneath `dir`.
fn beneath(dir: BorrowedFd<'_>, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(dir, path, how)
}

/// The fallback: every directory on the way opened with `O_NOFOLLOW`
/// relative to the one before, then the last component with `flags |
/// O_NOFOLLOW`. A symlink anywhere gives ELOOP (or ENOTDIR on the way).
fn walk(dir: BorrowedFd<'_>, components: &[&str], flags: OFlag) -> nix::Result<OwnedFd> {
    let Some((last, on_the_way)) = components.split_last() else {
        return openat(dir, ".", flags, Mode::empty());
    };
    let mut held: Option<OwnedFd> = None;
    for name in on_the_way {
        let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
        // O_PATH | O_NOFOLLOW alone would open a symlink itself; with
        // O_DIRECTORY a symlink is refused (ENOTDIR).
        let next = openat(
            at,
            *name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        held = Some(next);
    }
    let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
    openat(at, *last, flags | OFlag::O_NOFOLLOW, Mode::empty())
}
