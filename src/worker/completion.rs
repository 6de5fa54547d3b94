//! What is left of a request once its response is on its way: what to count
//! and log when the response is complete, and a detached stream still being
//! pumped. Both outlive the exchange, so they live apart from it; `conn.rs`
//! holds a `Streaming` without knowing about exchanges.

use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::access_log;
use crate::heartbeat::Slot;
use crate::http::Version;

/// A detached stream the worker's loop is pumping to a client.
pub struct Streaming {
    pub rx: crate::stream::StreamReceiver,
    /// Chunked framing (HTTP/1.1), else the body ends at close.
    pub chunked: bool,
    /// Keep the connection for another request after the stream ends.
    pub keep_alive: bool,
    /// Body bytes written so far (the pump adds each chunk's length).
    pub sent: u64,
    pub completion: Completion,
}

/// What is logged and counted when a response is complete. Made by the
/// exchange once the head is written.
pub struct Completion {
    pub(super) peer: Option<std::net::SocketAddr>,
    pub(super) scheme: crate::app::Scheme,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) version: Version,
    /// Copied only when there is an access log (empty otherwise).
    pub(super) request_headers: Vec<(String, Vec<u8>)>,
    pub(super) status: u16,
    pub(super) response_headers: HeaderMap,
    pub(super) started: Instant,
    /// The access log's time (empty without an access log).
    pub(super) log_time: String,
}

impl Completion {
    /// Count the response in the slot, warn if it was slow, and write the
    /// access log line.
    pub fn finish(
        self,
        body_bytes: u64,
        slot: &Slot,
        access_format: Option<&access_log::Format>,
        slow_request_threshold: Option<Duration>,
    ) {
        let duration = self.started.elapsed();
        slot.record_response(self.status, duration);
        if slow_request_threshold.is_some_and(|t| duration > t) {
            log::warn!(
                "Slow request: {} {} peer={} status={} took {:.2}s",
                self.method,
                self.target,
                self.peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                self.status,
                duration.as_secs_f64()
            );
        }
        if let Some(format) = access_format {
            let line = format.render(&access_log::Record {
                peer: self.peer.as_ref(),
                method: &self.method,
                target: &self.target,
                version: self.version.as_str(),
                scheme: self.scheme.as_str(),
                request_headers: &self.request_headers,
                status: self.status,
                response_headers: &self.response_headers,
                body_bytes,
                duration,
                time: &self.log_time,
            });
            crate::logging::access(&line);
        }
    }
}
