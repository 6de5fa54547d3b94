#![warn(missing_docs)]
//! forkhorn: a prefork HTTP/1.1 server and process supervisor for Linux.
//!
//! The process model, in one picture:
//!
//! ```text
//!   master (arbiter)   binds listeners, forks workers, reads heartbeats,
//!     |                handles signals; single-threaded, never serves.
//!     +-- worker 1     accepts, serves one request at a time, stamps its
//!     +-- worker 2     heartbeat slot (shared memory) as it goes.
//!     +-- worker N
//! ```
//!
//! Follow a request from [`worker`] (the loop) to `worker::exchange` (one
//! request and response) and [`http`] (framing, no I/O); follow a signal from
//! [`master::arbiter`] to [`sys::signals`]. The folders show the two
//! processes: [`master`] holds what only the master runs, [`worker`] what
//! only a worker runs; [`sys`] (every raw OS call, every `unsafe` block) and
//! [`http`] import nothing from the rest. Besides the heartbeat slots
//! ([`heartbeat`]), master and workers share one more small table,
//! [`balance`]: how many connections each worker holds, so that a burst of
//! connections is spread over the workers, and beside it the hand-off
//! channel through which a worker busy with a long request passes its idle
//! keep-alive connections to a free one (`worker::handoff`, whose watcher
//! thread makes every worker two-threaded; the master stays single-threaded).

pub mod access_log;
pub mod allow_list;
pub mod app;
pub mod apps;
pub mod balance;
pub mod config;
pub mod config_file;
pub mod forwarded;
pub mod heartbeat;
pub mod http;
pub mod listener;
pub mod logging;
pub mod master;
pub mod proxy_protocol;
pub mod server;
pub mod stream;
pub mod sys;
pub mod tls;
pub mod worker;

pub use server::{Server, run};
