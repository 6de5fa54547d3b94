//! The smallest forkhorn program: your own app, with forkhorn's whole
//! command line and supervision.
//!
//!     cargo run --example hello -- -b 127.0.0.1:8000 -w 4
//!     curl http://127.0.0.1:8000/

use forkhorn::app::{Request, Response, respond};

fn main() -> std::process::ExitCode {
    forkhorn::run(|req: Request<'_>| -> Response {
        respond(
            200,
            "text/plain",
            format!(
                "Hello from {} in worker {}\n",
                req.uri().path(),
                std::process::id()
            ),
        )
    })
}
