//! Every raw OS call forkhorn makes: fork, signal dispositions, the self-pipe,
//! waitpid, mmap, clocks. Each function here is small and safe to call; the
//! `unsafe` they need stays in this folder, next to the reason it is sound.

pub mod clock;
pub mod drain;
pub mod fd;
pub mod fdpass;
pub mod openat2;
pub mod process;
pub mod procfs;
pub mod shm;
pub mod signals;
pub mod sockopt;
pub mod user;
