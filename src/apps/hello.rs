//! `hello`: the smallest possible app, for smoke tests and benchmarks.

use crate::app::{Request, Response, respond};

pub fn hello(_req: Request<'_>) -> Response {
    respond(200, "text/plain", "Hello, World!\n")
}
