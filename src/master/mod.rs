//! The master process: everything only it runs. It binds, forks and
//! supervises workers (`arbiter`), classifies their exits (`worker_exit`)
//! and times them out (`overdue`), serves the control socket and metrics
//! endpoint without threads (`control`, `metrics`, `oneshot`, `stats`),
//! and speaks to the world around it (`pidfile`, `systemd`, `upgrade`).
//! Workers never call into it; what both sides share (`heartbeat`,
//! `balance`, `listener`, `config`) lives beside it.

pub mod arbiter;
pub mod control;
pub mod metrics;
pub mod oneshot;
pub mod overdue;
pub mod pidfile;
pub mod stats;
pub mod systemd;
pub mod upgrade;
pub mod worker_exit;
