//! Writing a response out once its head is in the output buffer: the whole
//! response in one write when the body is in memory, else the head and then
//! the body as it is read or streamed, chunk by chunk.

use std::io::{self, Read};
use std::time::Duration;

use super::conn::{CLIENT_IDLE_TIMEOUT, Conn};
use super::framing::Plan;
use crate::app::ResponseBody;
use crate::heartbeat::Slot;
use crate::http::ResponseFraming;
use crate::http::response::{write_chunk, write_last_chunk};

/// Write the head in `out` and then the body, as `plan` says. Returns body
/// bytes sent. When the plan does not keep the connection, it is shut down
/// right after (see `Conn::send_all_wait`).
pub fn write_response(
    conn: &mut Conn,
    body: ResponseBody,
    plan: Plan,
    out: &mut Vec<u8>,
    slot: &Slot,
    beat: Duration,
) -> io::Result<u64> {
    let chunked = plan.framing == ResponseFraming::Chunked;
    let is_last = !plan.keep_alive;
    // The whole response in one buffer: one write, and with `is_last` one
    // packet together with the FIN.
    let flags = if is_last { libc::MSG_MORE } else { 0 };
    let write_whole = |conn: &mut Conn, out: &[u8]| {
        conn.send_all_wait(out, flags, CLIENT_IDLE_TIMEOUT, slot, beat)
    };
    match body {
        // A HEAD request or a bodiless status, or a stream for one: only
        // the head is sent.
        _ if !plan.sends_body => write_whole(conn, out).map(|()| 0),
        ResponseBody::Channel(_) | ResponseBody::Empty => write_whole(conn, out).map(|()| 0),
        ResponseBody::Bytes(bytes) => {
            out.extend_from_slice(&bytes);
            write_whole(conn, out)?;
            Ok(bytes.len() as u64)
        }
        ResponseBody::Reader { mut reader, len } => {
            conn.write_all_wait(out, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            let mut sent = 0u64;
            // No bigger than the body: a small one should not cost 64 KiB.
            let size = len.map_or(64 * 1024, |n| n.clamp(1, 64 * 1024) as usize);
            let mut buf = vec![0u8; size];
            let mut frame = Vec::with_capacity(buf.len() + 32);
            loop {
                let want = match len {
                    Some(n) if sent >= n => break,
                    Some(n) => buf.len().min((n - sent) as usize),
                    None => buf.len(),
                };
                let n = match reader.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                frame.clear();
                if chunked {
                    write_chunk(&mut frame, &buf[..n]);
                } else {
                    frame.extend_from_slice(&buf[..n]);
                }
                conn.write_all_wait(&frame, CLIENT_IDLE_TIMEOUT, slot, beat)?;
                sent += n as u64;
            }
            if let Some(n) = len
                && sent < n
            {
                // The declared length cannot be honoured: the client must
                // not take a short body for a whole one.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "response body shorter than its length",
                ));
            }
            if chunked {
                frame.clear();
                write_last_chunk(&mut frame);
                conn.write_all_wait(&frame, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            }
            Ok(sent)
        }
        ResponseBody::Stream(produce) => {
            conn.write_all_wait(out, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            let mut sink = StreamSink {
                conn,
                chunked,
                slot,
                beat,
                sent: 0,
                frame: Vec::new(),
            };
            produce(&mut sink)?;
            if chunked {
                sink.frame.clear();
                write_last_chunk(&mut sink.frame);
                let frame = std::mem::take(&mut sink.frame);
                sink.conn
                    .write_all_wait(&frame, CLIENT_IDLE_TIMEOUT, slot, beat)?;
            }
            Ok(sink.sent)
        }
    }
}

/// Where a `ResponseBody::Stream` writes: each chunk is framed and reaches
/// the socket before `send` returns.
struct StreamSink<'c> {
    conn: &'c mut Conn,
    chunked: bool,
    slot: &'c Slot,
    beat: Duration,
    sent: u64,
    frame: Vec<u8>,
}

impl crate::app::ChunkSink for StreamSink<'_> {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.frame.clear();
        if self.chunked {
            write_chunk(&mut self.frame, data);
        } else {
            self.frame.extend_from_slice(data);
        }
        self.conn
            .write_all_wait(&self.frame, CLIENT_IDLE_TIMEOUT, self.slot, self.beat)?;
        self.sent += data.len() as u64;
        Ok(())
    }
}
