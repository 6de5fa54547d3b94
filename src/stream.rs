//! Detached response streams: a response body fed by a thread the app
//! starts, pumped to the client by the worker's event loop.
//!
//! A sync worker serves one request at a time, so a response that trickles
//! out for a minute (Server-Sent Events from a model, say) would normally
//! hold a whole worker for that minute. With `ResponseBody::channel`, the
//! app returns at once; the worker keeps serving other requests and writes
//! each chunk to the client as the producer sends it. When the client goes
//! away, `send` starts failing, so the producer can stop.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How long a stream may go without a chunk before the worker ends it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks a producer may queue before `send` waits for the client.
pub const DEFAULT_CAPACITY: usize = 64;

/// Wakes the worker's event loop when a producer sends (set once per worker
/// process, after fork).
static WAKER: OnceLock<Arc<mio::Waker>> = OnceLock::new();

pub(crate) fn set_waker(waker: Arc<mio::Waker>) {
    let _ = WAKER.set(waker);
}

struct State {
    chunks: VecDeque<Vec<u8>>,
    /// The producer finished: every sender was dropped.
    is_finished: bool,
    /// The producer failed mid-stream: the client must not take what it got
    /// for the whole body.
    is_aborted: bool,
    /// The client or the worker gave up on the stream.
    is_closed: bool,
    senders: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when room frees up or the stream closes.
    room: Condvar,
    capacity: usize,
}

/// The producer's end of a detached stream. Clone it to send from several
/// threads; the stream ends when every clone is dropped.
pub struct StreamSender {
    shared: Arc<Shared>,
}

/// The stream is closed: the client went away or the worker ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the response stream is closed (the client went away or the worker ended it)")
    }
}

impl std::error::Error for Closed {}

impl StreamSender {
    /// Queue `chunk` for the client, waiting while the queue is full.
    /// Fails once the client has gone away.
    pub fn send(&self, chunk: impl Into<Vec<u8>>) -> Result<(), Closed> {
        let chunk = chunk.into();
        if chunk.is_empty() {
            return Ok(());
        }
        let mut state = self.shared.state.lock().map_err(|_| Closed)?;
        while state.chunks.len() >= self.shared.capacity && !state.is_closed {
            state = self.shared.room.wait(state).map_err(|_| Closed)?;
        }
        if state.is_closed {
            return Err(Closed);
        }
        state.chunks.push_back(chunk);
        drop(state);
        wake();
        Ok(())
    }

    /// End the stream as failed: the worker closes the connection without
    /// the chunked terminator, so the client sees a cut-off response rather
    /// than a complete one.
    pub fn abort(self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.is_aborted = true;
        }
        // Drop wakes the worker, which sees the abort.
    }

    /// Whether the client is gone (a producer waiting on something slow can
    /// check this between waits).
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().map_or(true, |s| s.is_closed)
    }
}

impl Clone for StreamSender {
    fn clone(&self) -> StreamSender {
        if let Ok(mut s) = self.shared.state.lock() {
            s.senders += 1;
        }
        StreamSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.senders -= 1;
            if s.senders == 0 {
                s.is_finished = true;
            }
        }
        wake();
    }
}

fn wake() {
    if let Some(waker) = WAKER.get() {
        let _ = waker.wake();
    }
}

/// The worker's end of a detached stream.
pub struct StreamReceiver {
    shared: Arc<Shared>,
    /// The worker ends the stream after this long without a chunk.
    pub idle_timeout: Duration,
}

/// What the receiver has for the worker now.
pub enum Next {
    /// The oldest queued chunk (never empty); write it to the client.
    Chunk(Vec<u8>),
    /// Nothing yet; the producer is still at work.
    Pending,
    /// The producer is done and everything was taken.
    Finished,
    /// The producer failed (`StreamSender::abort`): close without ending
    /// the body properly.
    Aborted,
}

impl StreamReceiver {
    /// Take the next chunk without waiting, freeing room for a producer
    /// blocked in `send`. Chunks queued before the last sender was dropped
    /// are all delivered before `Finished`.
    pub fn next(&self) -> Next {
        let Ok(mut state) = self.shared.state.lock() else {
            return Next::Finished;
        };
        match state.chunks.pop_front() {
            Some(chunk) => {
                drop(state);
                self.shared.room.notify_all();
                Next::Chunk(chunk)
            }
            None if state.is_aborted => Next::Aborted,
            None if state.is_finished => Next::Finished,
            None => Next::Pending,
        }
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.is_closed = true;
            s.chunks.clear();
        }
        self.shared.room.notify_all();
    }
}

/// A new stream whose queue holds up to `capacity` chunks (at least 1).
/// Apps normally call `ResponseBody::channel`, which also wraps the
/// receiver as the response body.
///
/// ```
/// use std::time::Duration;
/// use forkhorn::stream::{Closed, Next, channel};
///
/// let (tx, rx) = channel(8, Duration::from_secs(60));
/// tx.send("data: 1\n\n").unwrap();
/// tx.send("").unwrap(); // empty chunks are dropped, not queued
/// assert!(matches!(rx.next(), Next::Chunk(c) if c == b"data: 1\n\n"));
/// assert!(matches!(rx.next(), Next::Pending));
///
/// // The producer learns that the client is gone when the receiver is dropped.
/// drop(rx);
/// assert!(tx.is_closed());
/// assert_eq!(tx.send("data: 2\n\n"), Err(Closed));
/// ```
pub fn channel(capacity: usize, idle_timeout: Duration) -> (StreamSender, StreamReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            is_finished: false,
            is_aborted: false,
            is_closed: false,
            senders: 1,
        }),
        room: Condvar::new(),
        capacity: capacity.max(1),
    });
    (
        StreamSender {
            shared: shared.clone(),
        },
        StreamReceiver {
            shared,
            idle_timeout,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_arrive_in_order_and_the_end_is_seen() {
        let (tx, rx) = channel(4, DEFAULT_IDLE_TIMEOUT);
        tx.send("a").expect("send");
        tx.send(b"b".to_vec()).expect("send");
        assert!(matches!(rx.next(), Next::Chunk(c) if c == b"a"));
        assert!(matches!(rx.next(), Next::Chunk(c) if c == b"b"));
        assert!(matches!(rx.next(), Next::Pending));
        drop(tx);
        assert!(matches!(rx.next(), Next::Finished));
    }

    #[test]
    fn a_closed_stream_fails_the_producer_even_when_it_waits_for_room() {
        let (tx, rx) = channel(1, DEFAULT_IDLE_TIMEOUT);
        tx.send("fills the queue").expect("send");
        let producer = std::thread::spawn(move || tx.send("waits for room"));
        drop(rx);
        assert_eq!(producer.join().expect("join"), Err(Closed));
    }
}
