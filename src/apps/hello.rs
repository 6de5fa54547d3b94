//! `hello`: the smallest possible app, for smoke tests and benchmarks.

use crate::app::{Request, Response, ResponseBody};

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
    // `respond` with a static content type, which needs no copy.
    let mut resp = http::Response::new(ResponseBody::from("Hello, World!\n"));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}
