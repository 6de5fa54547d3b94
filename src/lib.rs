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
//! [`arbiter`] to [`sys::signals`]. Besides the heartbeat slots
//! ([`heartbeat`]), master and workers share one more small table,
//! [`balance`]: how many connections each worker holds, so that a burst of
//! connections is spread over the workers.

pub mod access_log;
pub mod app;
pub mod apps;
pub mod arbiter;
pub mod balance;
pub mod config;
pub mod config_file;
pub mod control;
pub mod heartbeat;
pub mod http;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod oneshot;
pub mod overdue;
pub mod pidfile;
pub mod server;
pub mod stats;
pub mod stream;
pub mod sys;
pub mod systemd;
pub mod upgrade;
pub mod worker;
pub mod worker_exit;

pub use server::{Server, run};
