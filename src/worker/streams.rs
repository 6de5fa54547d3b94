//! Pumping detached streams (`ResponseBody::Channel`) from the worker's loop:
//! chunks go out as producers send them, without blocking the loop on a
//! slow client; when a stream ends its connection goes back to serving
//! requests, or closes.

use std::time::Instant;

use super::Worker;
use super::completion::Streaming;
use super::conn::Phase;
use super::exchange::After;
use crate::http::response::{write_chunk, write_last_chunk};
use crate::stream::Next;

/// What one pump pass made of a stream.
enum Pumped {
    /// More to come, or output still waiting for the client.
    Open,
    /// Everything written; the stream is over.
    Done,
    /// The client is gone.
    Failed,
}

impl Worker<'_> {
    /// Move what producers sent to their clients, as far as sockets take it.
    pub(super) fn pump_streams(&mut self) {
        let mut k_index = 0;
        while k_index < self.streaming.len() {
            let k = self.streaming[k_index];
            match self.pump(k) {
                Pumped::Open => k_index += 1,
                Pumped::Done => {
                    self.streaming.swap_remove(k_index);
                    self.finish_stream(k);
                }
                Pumped::Failed => {
                    // close() ends the stream and takes it off the list.
                    self.close(k);
                }
            }
        }
    }

    fn pump(&mut self, k: usize) -> Pumped {
        let slot = self.spec.slot;
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return Pumped::Failed;
        };
        // Taken out while we work on the connection, put back below.
        let Some(mut stream) = conn.stream.take() else {
            return Pumped::Done;
        };
        let mut finished = false;
        loop {
            if conn.has_pending_output() {
                match conn.flush_out(slot) {
                    Ok(n) if n > 0 => conn.deadline = Instant::now() + stream.rx.idle_timeout,
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("stream to {:?} failed: {e}", conn.peer);
                        conn.stream = Some(stream);
                        return Pumped::Failed;
                    }
                }
                if conn.has_pending_output() {
                    break; // the client reads slower than we write
                }
            }
            if finished {
                break;
            }
            match stream.rx.next() {
                Next::Chunk(chunk) => {
                    stream.sent += chunk.len() as u64;
                    conn.deadline = Instant::now() + stream.rx.idle_timeout;
                    if stream.chunked {
                        write_chunk(&mut conn.out, &chunk);
                    } else {
                        conn.out.extend_from_slice(&chunk);
                    }
                }
                Next::Pending => break,
                Next::Aborted => {
                    log::debug!("stream to {:?} ended by its producer's error", conn.peer);
                    conn.stream = Some(stream);
                    return Pumped::Failed;
                }
                Next::Finished => {
                    if stream.chunked {
                        write_last_chunk(&mut conn.out);
                    }
                    finished = true;
                }
            }
        }
        conn.stream = Some(stream);
        let is_flushed = !conn.has_pending_output();
        self.watch_writable(k);
        if finished && is_flushed {
            Pumped::Done
        } else {
            Pumped::Open
        }
    }

    /// A stream that ran to its end: log it, then serve on or close.
    fn finish_stream(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        let Some(stream) = conn.stream.take() else {
            return;
        };
        let keep_alive =
            stream.keep_alive && self.spec.slot.state() != crate::heartbeat::WorkerState::Retiring;
        self.end_stream(k, *stream);
        // The phase is left for after_exchange to set.
        if let Some(conn) = self.conns.get_mut(k).and_then(Option::as_mut) {
            conn.phase = Phase::Idle;
        }
        self.after_exchange(
            k,
            if keep_alive {
                After::KeepAlive
            } else {
                After::Close
            },
        );
        self.park_if_idle(k);
    }

    /// Count and log a stream that ended (run to its end or cut off).
    pub(super) fn end_stream(&mut self, k: usize, stream: Streaming) {
        self.streaming.retain(|&s| s != k);
        let Streaming {
            rx,
            sent,
            completion,
            ..
        } = stream;
        drop(rx);
        completion.finish(
            sent,
            self.spec.slot,
            self.access_format.as_ref(),
            self.spec.config.slow_request_threshold,
        );
    }
}
