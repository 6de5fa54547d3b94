//! Users and groups: resolving `--user`/`--group`, and dropping a worker's
//! privileges after fork (the master keeps its own to bind low ports,
//! signal workers and reopen logs).

use std::ffi::CString;
use std::io;

use nix::unistd::{Gid, Group, Uid, User};

/// Who a worker runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From `--user`, else the master's own uid.
    pub uid: u32,
    /// From `--group`, else the user's primary group.
    pub gid: u32,
    /// The user's name, for supplementary groups (`--initgroups`).
    pub user_name: Option<String>,
}

/// A user name or number.
pub fn resolve_user(value: &str) -> Result<(u32, u32, Option<String>), String> {
    let found = match value.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(value),
    };
    match found {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw(), Some(u.name))),
        // A bare number need not exist in /etc/passwd (containers often run
        // as such ids); its group is then the same number.
        Ok(None) => match value.parse::<u32>() {
            Ok(uid) => Ok((uid, uid, None)),
            Err(_) => Err(format!(
                "--user {value}: no such user (check /etc/passwd or give a number)"
            )),
        },
        Err(e) => Err(format!("--user {value}: cannot look the user up: {e}")),
    }
}

/// A group name or number.
pub fn resolve_group(value: &str) -> Result<u32, String> {
    if let Ok(gid) = value.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(value) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "--group {value}: no such group (check /etc/group or give a number)"
        )),
        Err(e) => Err(format!("--group {value}: cannot look the group up: {e}")),
    }
}

/// Become `who` for good: supplementary groups first, then the group, then
/// the user (after which the others can no longer be changed).
pub fn become_user(who: &Identity, initgroups: bool) -> io::Result<()> {
    let gid = Gid::from_raw(who.gid);
    match (&who.user_name, initgroups) {
        (Some(name), true) => {
            let name = CString::new(name.as_str())
                .map_err(|_| io::Error::other("user name has a NUL byte"))?;
            nix::unistd::initgroups(&name, gid)?;
        }
        _ => nix::unistd::setgroups(&[gid])?,
    }
    nix::unistd::setgid(gid)?;
    nix::unistd::setuid(Uid::from_raw(who.uid))?;
    Ok(())
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Set the process umask.
pub fn set_umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}
