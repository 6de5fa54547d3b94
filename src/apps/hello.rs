//! `hello`: the smallest possible app, for smoke tests and benchmarks.

use crate::app::{Request, Response, respond};

/// Answers every request with `200 Hello, World!` and never reads the body.
///
/// ```
/// use forkhorn::app::{Body, ResponseBody};
///
/// let req = http::Request::new(Body::empty());
/// let resp = forkhorn::apps::hello::hello(req);
/// assert_eq!(resp.status(), 200);
/// assert!(matches!(resp.body(), ResponseBody::Bytes(b) if b == b"Hello, World!\n"));
/// ```
pub fn hello(_req: Request<'_>) -> Response {
    respond(200, "text/plain", "Hello, World!\n")
}
