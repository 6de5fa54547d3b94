//! What an app is: a function from an `http::Request` to an `http::Response`,
//! called in a worker process for one request at a time.

use std::io::{self, Read};
use std::net::SocketAddr;

/// A request as the app sees it. The body reads from the client's connection
/// and is bounded by `--limit-request-body`.
pub type Request<'c> = http::Request<Body<'c>>;

/// A response the app returns.
pub type Response = http::Response<ResponseBody>;

/// An app: anything that turns a request into a response. A worker builds
/// its app after fork, so per-worker state (pools, caches) is never shared.
///
/// Any `FnMut(Request) -> Response` closure is an app, so an app can be
/// called directly, without a server:
///
/// ```
/// use forkhorn::app::{self, App, Body, ResponseBody};
///
/// let mut hits = 0;
/// let mut counter = |req: app::Request<'_>| {
///     hits += 1;
///     app::respond(200, "text/plain", format!("{} #{hits}", req.uri().path()))
/// };
/// let req = http::Request::builder().uri("/count").body(Body::empty()).unwrap();
/// let resp = counter.call(req);
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.headers()["content-type"], "text/plain");
/// match resp.body() {
///     ResponseBody::Bytes(b) => assert_eq!(b, b"/count #1"),
///     _ => panic!("expected a bytes body"),
/// }
/// ```
pub trait App {
    /// Serves one request, in the worker process, one request at a time.
    /// The worker's heartbeat advances only while it reads the body or
    /// writes to the client, so a call that computes for longer than
    /// `--timeout` without doing either gets the worker killed.
    fn call(&mut self, req: Request<'_>) -> Response;
}

impl<F> App for F
where
    F: FnMut(Request<'_>) -> Response,
{
    fn call(&mut self, req: Request<'_>) -> Response {
        self(req)
    }
}

/// The client's address, in every request's extensions (None on unix
/// sockets): the peer's, or the one a PROXY header or a trusted proxy's
/// `X-Forwarded-For`/`Forwarded` gave (`--proxy-allow-from`,
/// `--forwarded-allow-ips`; port 0 when the proxy named none).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<SocketAddr>);

/// How the client reached the server, in every request's extensions:
/// `https` on a TLS listener, or as a trusted proxy said
/// (`X-Forwarded-Proto`, `Forwarded: proto=`), else `http`.
///
/// ```
/// # let req = http::Request::new(());
/// let is_secure = req.extensions().get::<forkhorn::app::Scheme>()
///     .is_some_and(|s| *s == forkhorn::app::Scheme::Https);
/// # assert!(!is_secure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain text.
    Http,
    /// TLS, here or at a trusted proxy in front.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The subject of the certificate the client showed on a TLS listener
/// (`--cert-reqs` 1 or 2), as `CN=name, O=org`; in the request's
/// extensions only when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSubject(pub String);

/// The address the client connected to (the listener's), in every
/// request's extensions (None on unix sockets).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub Option<SocketAddr>);

/// The request target exactly as the client sent it.
#[derive(Debug, Clone)]
pub struct RawTarget(pub String);

/// Header fields in the order and spelling the client sent them.
#[derive(Debug, Clone, Default)]
pub struct RawHeaders(pub Vec<(String, Vec<u8>)>);

/// A handle in every request's extensions that says "still working" for
/// the worker: `beat` counts as progress for `--timeout`, as bytes sent to
/// the client do, so a long computation that reports progress is not killed.
/// It may be cloned and used from any thread the app starts.
#[derive(Clone)]
pub struct Progress(crate::heartbeat::Slot);

impl Progress {
    pub(crate) fn new(slot: crate::heartbeat::Slot) -> Progress {
        Progress(slot)
    }

    /// Record progress now.
    pub fn beat(&self) {
        self.0.beat();
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Where a request body comes from: the worker's connection, or nothing.
pub(crate) trait BodySource: Read {
    fn trailers(&self) -> &[(String, Vec<u8>)];
}

/// A request body: read it like any `Read`. Reading it is optional; what the
/// app leaves unread is skipped or the connection closed after the response.
pub struct Body<'c> {
    source: Option<&'c mut dyn BodySource>,
}

impl<'c> Body<'c> {
    pub(crate) fn new(source: &'c mut dyn BodySource) -> Body<'c> {
        Body {
            source: Some(source),
        }
    }

    /// A body with no bytes (for tests and synthetic requests).
    pub fn empty() -> Body<'static> {
        Body { source: None }
    }

    /// Read the whole body into memory.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Trailer fields of a chunked body, once the body has been read to the end.
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        self.source.as_ref().map_or(&[], |s| s.trailers())
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Some(s) => s.read(buf),
            None => Ok(0),
        }
    }
}

/// Where a streamed response's chunks go. Each `send` reaches the client (or
/// fails) before it returns, and counts as progress for the worker's heartbeat.
pub trait ChunkSink {
    /// Writes `data` to the client as one chunk (as raw bytes to an HTTP/1.0
    /// client, whose response ends at close). An empty `data` sends nothing,
    /// so it cannot end the stream early. An error means the client is gone:
    /// stop producing.
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
}

/// A streaming producer: called once with the sink, after the head is sent.
pub type StreamFn = Box<dyn FnOnce(&mut dyn ChunkSink) -> io::Result<()>>;

/// A response body.
pub enum ResponseBody {
    /// No body; `Content-Length: 0` unless the status forbids a body.
    Empty,
    /// The whole body in memory, sent with the head in one write.
    Bytes(Vec<u8>),
    /// Read to the end; `len` known ahead gives a Content-Length, else chunked.
    Reader {
        /// Source of the body bytes, read in 64 KiB pieces.
        reader: Box<dyn Read>,
        /// Exact body length if known; the worker stops reading after this
        /// many bytes.
        len: Option<u64>,
    },
    /// Written chunk by chunk by the app, each flushed at once.
    Stream(StreamFn),
    /// Fed by a producer thread through a `StreamSender`; the worker pumps
    /// it to the client while it serves other requests (see `channel`).
    Channel(crate::stream::StreamReceiver),
}

impl ResponseBody {
    /// A body the app writes chunk by chunk: `stream(|sink| { sink.send(b"..")?; Ok(()) })`.
    pub fn stream<F>(f: F) -> ResponseBody
    where
        F: FnOnce(&mut dyn ChunkSink) -> io::Result<()> + 'static,
    {
        ResponseBody::Stream(Box::new(f))
    }
}

impl ResponseBody {
    /// A detached stream: returns the sender for a producer thread and the
    /// body to return at once. Each chunk sent reaches the client as soon as
    /// the worker's loop turns (immediately when it is idle); `send` fails
    /// once the client has gone away. Streams with no chunk for a minute are
    /// ended; see `channel_with` to choose.
    pub fn channel() -> (crate::stream::StreamSender, ResponseBody) {
        ResponseBody::channel_with(
            crate::stream::DEFAULT_CAPACITY,
            crate::stream::DEFAULT_IDLE_TIMEOUT,
        )
    }

    /// `channel` with a queue of `capacity` chunks and an inactivity limit.
    pub fn channel_with(
        capacity: usize,
        idle_timeout: std::time::Duration,
    ) -> (crate::stream::StreamSender, ResponseBody) {
        let (tx, rx) = crate::stream::channel(capacity, idle_timeout);
        (tx, ResponseBody::Channel(rx))
    }
}

impl From<Vec<u8>> for ResponseBody {
    fn from(v: Vec<u8>) -> Self {
        ResponseBody::Bytes(v)
    }
}

impl From<String> for ResponseBody {
    fn from(s: String) -> Self {
        ResponseBody::Bytes(s.into_bytes())
    }
}

impl From<&'static str> for ResponseBody {
    fn from(s: &'static str) -> Self {
        ResponseBody::Bytes(s.as_bytes().to_vec())
    }
}

impl From<()> for ResponseBody {
    fn from(_: ()) -> Self {
        ResponseBody::Empty
    }
}

/// A response with `status`, a content type and `body`.
///
/// A status outside 100..=999 becomes 200, and a content type that is not a
/// valid header value is left out, so this never fails.
///
/// ```
/// use forkhorn::app::{respond, ResponseBody};
///
/// let resp = respond(404, "text/plain", "no such page\n");
/// assert_eq!(resp.status(), 404);
/// assert_eq!(resp.headers()["content-type"], "text/plain");
/// assert!(matches!(resp.body(), ResponseBody::Bytes(b) if b == b"no such page\n"));
///
/// let empty = respond(204, "text/plain", ());
/// assert!(matches!(empty.body(), ResponseBody::Empty));
/// ```
pub fn respond(status: u16, content_type: &str, body: impl Into<ResponseBody>) -> Response {
    let mut resp = http::Response::new(body.into());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Builds one worker's app, in the worker, after fork.
pub type AppFactory = std::sync::Arc<dyn Fn() -> Result<Box<dyn App>, String>>;

/// A hook: a function with no arguments, run at a point in the server's life.
pub type Hook = Box<dyn Fn()>;

/// Functions run at points in the server's life.
///
/// All but `on_worker_exit` run in the master process, which forks workers
/// and so must stay single-threaded: a hook must not leave a thread running.
#[derive(Default)]
pub struct Hooks {
    /// In the master, before the listeners are bound.
    pub on_starting: Option<Hook>,
    /// In the master, once every worker first serves.
    pub when_ready: Option<Hook>,
    /// In the master, on each reload (HUP), before new workers start.
    pub on_reload: Option<Hook>,
    /// In the master, just before it exits.
    pub on_exit: Option<Hook>,
    /// In each worker, just before it exits normally.
    pub on_worker_exit: Option<Hook>,
}
