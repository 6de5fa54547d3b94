//! Per-worker state built after fork, and hooks, configured in code.
//!
//! Each worker counts its own requests: the counter is made in the worker by
//! the app factory, so nothing is shared between processes (a connection
//! pool would be made the same way).
//!
//!     cargo run --example stateful -- 127.0.0.1:8000
//!     curl http://127.0.0.1:8000/

use std::time::Duration;

use forkhorn::app::{App, Request, Response, respond};

struct Counter {
    pid: u32,
    served: u64,
}

impl App for Counter {
    fn call(&mut self, _req: Request<'_>) -> Response {
        self.served += 1;
        respond(
            200,
            "text/plain",
            format!("worker {} has served {} requests\n", self.pid, self.served),
        )
    }
}

fn main() -> std::process::ExitCode {
    // This program has its own command line: one optional address.
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    forkhorn::Server::builder()
        .bind(&addr)
        .workers(2)
        .timeout(Duration::from_secs(10))
        .switch("no-control-socket")
        .app_factory(|| {
            Ok(Counter {
                pid: std::process::id(),
                served: 0,
            })
        })
        .when_ready(|| eprintln!("stateful: every worker is serving"))
        .on_exit(|| eprintln!("stateful: master exiting"))
        .run()
}
