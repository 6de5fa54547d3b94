//! The request body as the app reads it: straight from the connection's
//! buffer and socket, decoded (Content-Length or chunked), bounded by
//! `--limit-request-body`, with `100 Continue` sent at the first read.

use std::io::{self, Read};
use std::time::Duration;

use super::conn::{CLIENT_IDLE_TIMEOUT, Conn};
use crate::app::BodySource;
use crate::heartbeat::Slot;
use crate::http::{BodyError, ChunkedDecoder, Framing, Limits, RequestHead, Version};

/// Body bytes we read and throw away after the app left them unread, so the
/// connection can be kept; past this we close instead.
const DRAIN_LIMIT: u64 = 64 * 1024;

enum BodyState {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// Reads a request body from the connection for the app.
pub struct BodyReader<'c> {
    conn: &'c mut Conn,
    state: BodyState,
    /// Decoded chunked bytes not yet handed to the app.
    decoded: Vec<u8>,
    decoded_pos: usize,
    limit: Option<u64>,
    total: u64,
    /// `Expect: 100-continue` still to be answered when the app first reads.
    continue_pending: bool,
    /// A framing error or limit breach: the response becomes this status.
    error: Option<(u16, String)>,
    slot: &'c Slot,
    beat: Duration,
    trailers: Vec<(String, Vec<u8>)>,
}

impl<'c> BodyReader<'c> {
    pub fn new(
        conn: &'c mut Conn,
        head: &RequestHead,
        slot: &'c Slot,
        limits: &Limits,
        limit: Option<u64>,
        beat: Duration,
    ) -> BodyReader<'c> {
        let state = match head.framing {
            Framing::None | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Box::new(ChunkedDecoder::new(limits))),
        };
        let continue_pending = head.expect_continue
            && head.version == Version::Http11
            && !matches!(state, BodyState::Done);
        BodyReader {
            conn,
            state,
            decoded: Vec::new(),
            decoded_pos: 0,
            limit,
            total: 0,
            continue_pending,
            error: None,
            slot,
            beat,
            trailers: Vec::new(),
        }
    }

    /// The framing error or limit breach that ended the body, if any: the
    /// response becomes its status instead of the app's.
    pub fn take_error(&mut self) -> Option<(u16, String)> {
        self.error.take()
    }

    fn fail(&mut self, status: u16, reason: String) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, reason.clone());
        self.error = Some((status, reason));
        self.state = BodyState::Done;
        err
    }

    /// Get more bytes from the client into the connection buffer.
    fn fill(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            self.conn.write_all_wait(
                b"HTTP/1.1 100 Continue\r\n\r\n",
                CLIENT_IDLE_TIMEOUT,
                self.slot,
                self.beat,
            )?;
        }
        match self
            .conn
            .read_wait(CLIENT_IDLE_TIMEOUT, self.slot, self.beat)
        {
            // The client closed its side mid-body. It may still read our
            // answer, so the app decides what to make of a short body (it sees
            // UnexpectedEof); the connection closes after the response.
            Ok(0) if matches!(self.state, BodyState::Chunked(_)) => Err(self.fail(
                400,
                "the chunked request body ended before its last chunk".into(),
            )),
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of the request body",
            )),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.fail(408, "client stopped sending the request body".into()))
            }
            Err(e) => Err(e),
        }
    }

    fn count(&mut self, n: usize) -> io::Result<()> {
        self.total += n as u64;
        match self.limit {
            Some(limit) if self.total > limit => Err(self.fail(
                413,
                format!("request body is over the limit of {limit} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// After the app: skip what it left unread if that is cheap. Returns
    /// whether the body was consumed to its end (so the connection may be kept).
    pub fn finish_bounded(&mut self) -> bool {
        let mut sink = [0u8; 8192];
        let mut skipped = 0u64;
        loop {
            if matches!(self.state, BodyState::Done) && self.decoded_pos >= self.decoded.len() {
                return self.error.is_none();
            }
            let remaining_known = match self.state {
                BodyState::Length(n) => Some(n),
                _ => None,
            };
            if remaining_known.is_some_and(|n| n > DRAIN_LIMIT) || skipped > DRAIN_LIMIT {
                return false;
            }
            // Only what has already arrived or arrives promptly is worth
            // waiting for; a client still uploading a large body gets closed.
            if self.conn.buf.is_empty() && self.decoded_pos >= self.decoded.len() {
                let _ = self.conn.read_available(usize::MAX);
                if self.conn.buf.is_empty() && !self.conn.read_eof {
                    return false;
                }
            }
            match self.read(&mut sink) {
                Ok(0) => return self.error.is_none() && matches!(self.state, BodyState::Done),
                Ok(n) => skipped += n as u64,
                Err(_) => return false,
            }
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.decoded_pos < self.decoded.len() {
                let n = out.len().min(self.decoded.len() - self.decoded_pos);
                out[..n].copy_from_slice(&self.decoded[self.decoded_pos..self.decoded_pos + n]);
                self.decoded_pos += n;
                return Ok(n);
            }
            match &mut self.state {
                BodyState::Done => {
                    return match &self.error {
                        Some((_, reason)) => {
                            Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone()))
                        }
                        None => Ok(0),
                    };
                }
                BodyState::Length(remaining) => {
                    if self.conn.buf.is_empty() {
                        self.fill()?;
                        continue;
                    }
                    let n = out.len().min(self.conn.buf.len()).min(*remaining as usize);
                    out[..n].copy_from_slice(&self.conn.buf[..n]);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = BodyState::Done;
                    }
                    self.conn.consume(n);
                    self.count(n)?;
                    return Ok(n);
                }
                BodyState::Chunked(decoder) => {
                    if self.conn.buf.is_empty() {
                        self.fill()?;
                        continue;
                    }
                    self.decoded.clear();
                    self.decoded_pos = 0;
                    let result = decoder.decode(&self.conn.buf, &mut self.decoded, 64 * 1024);
                    let consumed = match result {
                        Ok(c) => c,
                        Err(e) => {
                            let e: BodyError = e;
                            return Err(self.fail(e.status(), e.to_string()));
                        }
                    };
                    let done = decoder.is_done();
                    if done {
                        self.trailers = decoder.trailers().to_vec();
                    }
                    self.conn.consume(consumed);
                    if done {
                        self.state = BodyState::Done;
                    }
                    let produced = self.decoded.len();
                    self.count(produced)?;
                    if produced == 0 && !done && consumed == 0 {
                        self.fill()?;
                    }
                }
            }
        }
    }
}

impl BodySource for BodyReader<'_> {
    fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }
}
