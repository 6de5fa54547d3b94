//! `chaos`: routes that misbehave on purpose, to exercise supervision.
//!
//! `/sleep?s=N`, `/spin?s=N`, `/crash`, `/panic`, `/exit?code=N`, `/leak?mb=N`,
//! `/stream?chunks=N&interval_ms=M`, `/detached?chunks=N&interval_ms=M` (the
//! same from a producer thread, as a detached stream), `/orphan?s=N` (leaves an orphaned
//! grandchild behind), `/pid`; anything else answers with the pid.

use std::time::{Duration, Instant};

use super::query_param;
use crate::app::{Request, Response, ResponseBody, respond};

/// Accepts `chaos` and `chaos:boot-fail`; anything else is an error that
/// names both.
pub fn check(spec: &str) -> Result<(), String> {
    match spec {
        "chaos" | "chaos:boot-fail" => Ok(()),
        _ => Err(format!(
            "app {spec:?}: use chaos, or chaos:boot-fail (every worker exits with status 1 at boot)"
        )),
    }
}

/// The `chaos` app; one per worker, built after fork.
pub struct Chaos {
    /// Memory `/leak` grew and keeps, touched so it is really resident.
    leaked: Vec<Vec<u8>>,
}

impl Chaos {
    /// Build the app for this worker. With `chaos:boot-fail` the worker
    /// exits with status 1 right here, to exercise the master's boot-failure
    /// handling.
    pub fn new(spec: &str) -> Result<Chaos, String> {
        check(spec)?;
        if spec == "chaos:boot-fail" {
            log::error!("chaos:boot-fail: this worker fails at boot on purpose");
            std::process::exit(1);
        }
        Ok(Chaos { leaked: Vec::new() })
    }
}

fn pid_body() -> String {
    format!("{}\n", std::process::id())
}

impl crate::app::App for Chaos {
    fn call(&mut self, req: Request<'_>) -> Response {
        let target = req.uri().to_string();
        let path = req.uri().path();
        match path {
            "/sleep" => {
                let s: f64 = query_param(&target, "s").unwrap_or(1.0);
                std::thread::sleep(Duration::from_secs_f64(s.clamp(0.0, 86_400.0)));
                respond(200, "text/plain", pid_body())
            }
            "/spin" => {
                let s: f64 = query_param(&target, "s").unwrap_or(1.0);
                let until = Instant::now() + Duration::from_secs_f64(s.clamp(0.0, 86_400.0));
                let mut x: u64 = 0;
                while Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                respond(200, "text/plain", pid_body())
            }
            "/crash" => std::process::abort(),
            "/panic" => panic!("chaos /panic: a panic in the app, on purpose"),
            "/exit" => std::process::exit(query_param(&target, "code").unwrap_or(1)),
            "/leak" => {
                let mb: usize = query_param(&target, "mb").unwrap_or(1);
                let mut block = vec![0u8; mb.min(1 << 16) << 20];
                // Touch every page so the memory is resident, not just reserved.
                for i in (0..block.len()).step_by(4096) {
                    block[i] = 1;
                }
                self.leaked.push(block);
                let total: usize = self.leaked.iter().map(Vec::len).sum();
                respond(
                    200,
                    "text/plain",
                    format!("leaked {} MiB in {}\n", total >> 20, std::process::id()),
                )
            }
            "/stream" => {
                let chunks: u32 = query_param(&target, "chunks").unwrap_or(5);
                let interval =
                    Duration::from_millis(query_param(&target, "interval_ms").unwrap_or(100));
                let mut resp = respond(200, "text/plain", ());
                *resp.body_mut() = ResponseBody::stream(move |sink| {
                    for i in 0..chunks {
                        if i > 0 {
                            std::thread::sleep(interval);
                        }
                        sink.send(format!("chunk {i}\n").as_bytes())?;
                    }
                    Ok(())
                });
                resp
            }
            "/detached" => {
                // Like /stream, but fed by a thread while the worker serves on.
                let chunks: u32 = query_param(&target, "chunks").unwrap_or(5);
                let interval =
                    Duration::from_millis(query_param(&target, "interval_ms").unwrap_or(100));
                let (tx, body) = ResponseBody::channel();
                std::thread::spawn(move || {
                    for i in 0..chunks {
                        if i > 0 {
                            std::thread::sleep(interval);
                        }
                        if tx.send(format!("chunk {i}\n")).is_err() {
                            return; // the client went away
                        }
                    }
                });
                let mut resp = respond(200, "text/plain", ());
                *resp.body_mut() = body;
                resp
            }
            "/orphan" => {
                // A shell that starts a background sleep and exits: the sleep
                // is orphaned and re-parented to PID 1 (or a subreaper).
                let secs: f64 = query_param(&target, "s").unwrap_or(0.5);
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("sleep {secs} >/dev/null 2>&1 &"))
                    .status();
                match status {
                    Ok(_) => respond(200, "text/plain", pid_body()),
                    Err(e) => respond(500, "text/plain", format!("cannot start sh: {e}\n")),
                }
            }
            _ => respond(200, "text/plain", pid_body()),
        }
    }
}
