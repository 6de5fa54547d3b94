//! One client connection inside a worker: its read buffer, and reads and
//! writes that wait under a deadline while keeping the heartbeat going.
//!
//! Waiting on a client (a slow upload, a client that reads slowly) is the
//! client's delay, bounded by our own deadlines, so the worker beats while it
//! waits. Only time spent inside the app goes unbeaten: that is what the
//! master's timeout is for.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::Socket;

use crate::heartbeat::Slot;

/// How long a client may pause while sending a body or reading a response.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where every read lands first (the worker reads on one thread).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
    /// An emptied connection buffer kept for the next read that needs one:
    /// a keep-alive connection gives its buffer back after each request and
    /// takes this one at its next, instead of a free and a malloc each time,
    /// while idle connections still hold none.
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the first byte of a request (new or kept alive).
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// We are done and have shut down our side; discarding what the client
    /// still sends so that closing does not reset our last response.
    Lingering,
    /// Pumping a detached stream (`stream` is set); requests the client
    /// pipelines meanwhile wait in the buffer.
    Streaming,
}

pub struct Conn {
    pub socket: Socket,
    pub peer: Option<SocketAddr>,
    /// `peer` as text, made at the first request that needs it: every
    /// request publishes it in the heartbeat slot, and a keep-alive
    /// connection should not format it again each time.
    peer_label: Option<Box<str>>,
    /// The address the client connected to, read at the first request that
    /// needs it (a WSGI app's `SERVER_PORT`); None inside for unix sockets.
    local: Option<Option<SocketAddr>>,
    /// Bytes read and not yet consumed (a head, body bytes, pipelined requests).
    pub buf: Vec<u8>,
    /// How much of `buf` was already searched for the end of a head.
    scanned: usize,
    pub phase: Phase,
    /// When the current phase runs out (keep-alive idle, header timeout, linger).
    pub deadline: Instant,
    /// The client shut down its sending side.
    pub read_eof: bool,
    /// The socket may hold unread bytes (edge-triggered readiness was reported
    /// and not yet drained).
    pub maybe_readable: bool,
    /// Requests answered on this connection.
    pub served: u64,
    /// epoll reported the peer's FIN (EPOLLRDHUP): read on to the end of
    /// stream even after a short read.
    pub peer_closed: bool,
    /// The detached stream being pumped, in Phase::Streaming.
    pub stream: Option<Box<super::completion::Streaming>>,
    /// Stream bytes not yet written (the client reads slower than the
    /// producer writes).
    pub out: Vec<u8>,
    /// Registered for writability too (while `out` is not empty).
    pub wants_write: bool,
    /// Registered with the worker's poller. A connection whose request is
    /// already in hand when it is accepted (TCP_DEFER_ACCEPT) is often
    /// answered and closed before it ever needs to be.
    pub is_registered: bool,
    /// On the hand-off table (`handoff.rs`): idle, and the watcher thread
    /// may give it to another worker. Unpark before touching the socket.
    pub is_parked: bool,
    /// The TLS session, on a TLS listener's connection: every read and
    /// write below goes through it.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Some TLS bytes came from the client: a connection that ends before
    /// any (a TCP health check) is no failed handshake.
    pub has_tls_input: bool,
    /// The client certificate's subject, read at the first request that
    /// needs it (outer None: not read yet).
    client_subject: Option<Option<Box<str>>>,
    /// The connection came in on a PROXY protocol listener and its header
    /// has not been read yet: reads are raw, whatever follows is the
    /// client's (a TLS handshake, or a request).
    pub awaiting_proxy_header: bool,
    /// The PROXY header said the client spoke TLS to the proxy (which
    /// ended it): the request's scheme is https.
    pub is_tls_at_proxy: bool,
    /// Another worker could take this connection over as it is (the
    /// hand-off passes only the descriptor): not a TLS session, whose state
    /// is in our memory, nor a proxied client, whose address came from
    /// the PROXY header.
    pub is_movable: bool,
}

impl Conn {
    pub fn new(socket: Socket, peer: Option<SocketAddr>, deadline: Instant) -> Conn {
        Conn {
            socket,
            peer,
            peer_label: None,
            local: None,
            buf: Vec::new(),
            scanned: 0,
            phase: Phase::Idle,
            deadline,
            read_eof: false,
            maybe_readable: true,
            served: 0,
            peer_closed: false,
            stream: None,
            out: Vec::new(),
            wants_write: false,
            is_registered: false,
            is_parked: false,
            tls: None,
            has_tls_input: false,
            client_subject: None,
            awaiting_proxy_header: false,
            is_tls_at_proxy: false,
            is_movable: true,
        }
    }

    /// A connection from a listener that speaks TLS (`tls` set) or expects
    /// a PROXY header first.
    pub fn on_listener(mut self, tls: Option<rustls::ServerConnection>, proxied: bool) -> Conn {
        self.is_movable = tls.is_none() && !proxied;
        self.tls = tls.map(Box::new);
        self.awaiting_proxy_header = proxied;
        self
    }

    /// The client's address changed (from a PROXY header).
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
        self.peer_label = None;
    }

    /// The PROXY header was the first `n` bytes read: what followed is the
    /// client's, plain text for the request, or the start of the TLS
    /// handshake, handed to the session (an error is a failed handshake).
    pub fn after_proxy_header(&mut self, n: usize) -> io::Result<()> {
        self.awaiting_proxy_header = false;
        let Some(tls) = self.tls.as_deref_mut() else {
            self.consume(n);
            self.rescan();
            return Ok(());
        };
        let mut rest = &self.buf[n.min(self.buf.len())..];
        self.has_tls_input |= !rest.is_empty();
        while !rest.is_empty() {
            tls.read_tls(&mut rest)?;
            decrypt(tls, &self.socket)?;
        }
        self.buf.clear();
        self.rescan();
        // The rest of the handshake may be in the socket already.
        self.maybe_readable = true;
        Ok(())
    }

    /// Whether a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// The subject of the certificate the client showed (TLS with
    /// `--cert-reqs` 1 or 2), as `CN=name, O=org`.
    pub fn client_subject(&mut self) -> Option<&str> {
        let tls = self.tls.as_deref()?;
        self.client_subject
            .get_or_insert_with(|| {
                let leaf = tls.peer_certificates()?.first()?;
                crate::tls::subject(leaf).map(String::into_boxed_str)
            })
            .as_deref()
    }

    /// Output is waiting for the client to read: stream bytes, or TLS
    /// records (a handshake answer the socket did not take at once).
    pub fn has_pending_output(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Shut our sending side: a TLS session says close_notify first (as far
    /// as the socket takes it now), so the client knows the response was
    /// not cut short, and ends there. Nothing can be sent after the
    /// shutdown, and what a lingering connection still receives is
    /// discarded unread, so from here on the socket is read raw.
    pub fn shutdown_write(&mut self) {
        if let Some(mut tls) = self.tls.take() {
            tls.send_close_notify();
            let _ = flush_tls(&mut tls, &self.socket, libc::MSG_MORE);
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }

    /// The client's address as text ("-" when unknown).
    pub fn peer_label(&mut self) -> &str {
        let peer = self.peer;
        self.peer_label.get_or_insert_with(|| {
            peer.map_or_else(|| "-".into(), |p| p.to_string().into_boxed_str())
        })
    }

    /// The listener's address this connection came in on (None on a unix
    /// socket): one getsockname(2) per connection.
    pub fn local_addr(&mut self) -> Option<SocketAddr> {
        let socket = &self.socket;
        *self
            .local
            .get_or_insert_with(|| socket.local_addr().ok().and_then(|a| a.as_socket()))
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Drop the first `n` bytes of the buffer (a consumed head or body part).
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.scanned = self.scanned.saturating_sub(n);
    }

    /// Read what the kernel has now, without waiting, up to `cap` buffered
    /// bytes. Returns how many bytes were added.
    pub fn read_available(&mut self, cap: usize) -> io::Result<usize> {
        let mut added = 0;
        while self.maybe_readable && !self.read_eof && self.buf.len() < cap {
            match self.read_once() {
                Ok(0) => break,
                Ok(n) => added += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(added)
    }

    /// One read(2) into the buffer; 0 means end of stream (sets `read_eof`).
    fn read_once(&mut self) -> io::Result<usize> {
        // Read into the worker's one scratch buffer and keep only what
        // arrived: an idle connection then holds no buffer at all, and no
        // per-read buffer is zero-filled.
        if self.buf.capacity() == 0 {
            SPARE.with_borrow_mut(|spare| std::mem::swap(&mut self.buf, spare));
        }
        if self.tls.is_some() && !self.awaiting_proxy_header {
            return self.read_once_tls();
        }
        let result = SCRATCH.with_borrow_mut(|scratch| {
            let n = (&self.socket).read(&mut scratch[..])?;
            self.buf.extend_from_slice(&scratch[..n]);
            Ok::<usize, io::Error>(n)
        });
        match result {
            Ok(n) => {
                if n == 0 {
                    self.read_eof = true;
                    self.maybe_readable = false;
                } else if n < READ_CHUNK && !self.peer_closed {
                    // A short read means the kernel had no more just now; the
                    // next arrival raises a fresh edge. Saves an EAGAIN read.
                    self.maybe_readable = false;
                }
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.maybe_readable = false;
                }
                Err(e)
            }
        }
    }

    /// `read_once` through TLS: decrypted bytes the session holds first,
    /// then records from the socket, answering handshake messages as they
    /// come. A TLS error (a failed handshake, a bad record) is InvalidData.
    fn read_once_tls(&mut self) -> io::Result<usize> {
        let Conn {
            tls,
            socket,
            buf,
            maybe_readable,
            peer_closed,
            read_eof,
            has_tls_input,
            ..
        } = self;
        let Some(tls) = tls.as_deref_mut() else {
            return Ok(0);
        };
        // What an earlier turn could not send (the socket was full) goes first.
        flush_tls(tls, socket, 0)?;
        let mut added = 0;
        loop {
            let plain =
                SCRATCH.with_borrow_mut(|scratch| match tls.reader().read(&mut scratch[..]) {
                    Ok(n) => {
                        buf.extend_from_slice(&scratch[..n]);
                        Ok(Some(n))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(e),
                })?;
            match plain {
                // The client's close_notify: a clean end of stream, after
                // what it sent before it.
                Some(0) => break,
                // More may come from the socket: the caller reads on, up
                // to its cap.
                Some(n) if *maybe_readable => return Ok(n),
                // The socket is empty, so no event will bring us back:
                // take all the session holds now (pipelined requests, a
                // close_notify behind them).
                Some(n) => {
                    added += n;
                    continue;
                }
                None => {}
            }
            // Records already read but not yet decrypted: rustls stops
            // decrypting while its plaintext buffer is full, so a flight of
            // pipelined requests can sit here after the socket is empty.
            if decrypt(tls, socket)?.plaintext_bytes_to_read() > 0 {
                continue;
            }
            if added > 0 {
                return Ok(added);
            }
            if !*maybe_readable {
                // The last read from the socket was short: it is empty.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut recv = Recv { socket, asked: 0 };
            let got = tls.read_tls(&mut recv);
            *has_tls_input |= got.as_ref().is_ok_and(|&n| n > 0);
            match got {
                Ok(0) => break,
                // Fewer bytes than rustls had room for: the kernel had no
                // more just now, as in `read_once`. Saves an EAGAIN read per
                // request. (rustls's room varies: near a full record it asks
                // for less than its usual 4 KiB.)
                Ok(n) if n < recv.asked && !*peer_closed => *maybe_readable = false,
                Ok(_) => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        *maybe_readable = false;
                    }
                    return Err(e);
                }
            }
            decrypt(tls, socket)?;
        }
        *read_eof = true;
        *maybe_readable = false;
        Ok(added)
    }

    /// Read at least one byte, waiting up to `idle` for it. Ok(0) is end of stream.
    pub fn read_wait(
        &mut self,
        idle: Duration,
        slot: &Slot,
        beat_every: Duration,
    ) -> io::Result<usize> {
        let deadline = Instant::now() + idle;
        loop {
            if self.read_eof {
                return Ok(0);
            }
            self.maybe_readable = true;
            match self.read_once() {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(
                    self.socket.as_fd(),
                    PollFlags::POLLIN,
                    deadline,
                    slot,
                    beat_every,
                )?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Write all of `data`, waiting up to `idle` whenever the client is not
    /// reading. Every successful write counts as progress.
    pub fn write_all_wait(
        &mut self,
        data: &[u8],
        idle: Duration,
        slot: &Slot,
        beat_every: Duration,
    ) -> io::Result<()> {
        self.send_all_wait(data, 0, idle, slot, beat_every)
    }

    /// `write_all_wait` with send(2) flags. For the last bytes a connection
    /// carries, when the caller shuts it down right after, MSG_MORE lets the
    /// kernel hold them for the FIN that the shutdown sends: a small response and
    /// the end of the connection leave in one packet instead of two, one
    /// segment less for both sides to process per connection.
    pub fn send_all_wait(
        &mut self,
        mut data: &[u8],
        flags: libc::c_int,
        idle: Duration,
        slot: &Slot,
        beat_every: Duration,
    ) -> io::Result<()> {
        if let Some(tls) = self.tls.as_deref_mut() {
            return send_tls_wait(tls, &self.socket, data, flags, idle, slot, beat_every);
        }
        while !data.is_empty() {
            match self.socket.send_with_flags(data, flags) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    slot.add_bytes_out(n);
                    data = &data[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let deadline = Instant::now() + idle;
                    wait_for(
                        self.socket.as_fd(),
                        PollFlags::POLLOUT,
                        deadline,
                        slot,
                        beat_every,
                    )?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Write as much of `out` as the socket takes now, without waiting.
    /// Returns bytes written; an error means the client is gone.
    pub fn flush_out(&mut self, slot: &Slot) -> io::Result<usize> {
        if let Some(tls) = self.tls.as_deref_mut() {
            return flush_out_tls(tls, &self.socket, &mut self.out, slot);
        }
        let mut written = 0;
        while written < self.out.len() {
            match (&self.socket).write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    slot.add_bytes_out(n);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.drain(..written);
        Ok(written)
    }

    /// Whether the buffer may now hold a whole head: a blank line appeared
    /// since the last look, or the buffer is big enough that limits must be
    /// checked. Avoids re-parsing a head on every byte of a slow client.
    pub fn head_may_be_complete(&mut self, limit_check_every: usize) -> bool {
        let start = self.scanned.saturating_sub(3);
        let found = has_blank_line(&self.buf[start..]);
        let grew_a_lot =
            self.buf.len() / limit_check_every.max(1) != self.scanned / limit_check_every.max(1);
        self.scanned = self.buf.len();
        found || grew_a_lot || self.read_eof
    }

    /// Reset the head scan (after the buffer was parsed and a head consumed).
    pub fn rescan(&mut self) {
        self.scanned = 0;
    }

    /// Give an emptied buffer's memory back, so idle keep-alive
    /// connections cost almost nothing. A small read buffer goes to the
    /// worker's spare (see `SPARE`) for the next request to reuse.
    pub fn release_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            let buf = std::mem::take(&mut self.buf);
            if buf.capacity() <= READ_CHUNK {
                SPARE.with_borrow_mut(|spare| {
                    if spare.capacity() == 0 {
                        *spare = buf;
                    }
                });
            }
        }
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = Vec::new();
        }
    }
}

/// The socket as rustls's input, noting how much room each read offered.
struct Recv<'s> {
    socket: &'s Socket,
    asked: usize,
}

impl Read for Recv<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked = buf.len();
        (&*self.socket).read(buf)
    }
}

/// The answer to a plain-text request on a TLS listener.
const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 52\r\nConnection: close\r\n\r\nThis port speaks HTTPS: use https:// to talk to it.\n";

/// Whether a TLS error means the client spoke something else: its first
/// byte is no TLS record type (a request line starts with a letter).
fn is_plain_text(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
    )
}

/// Decrypt the records rustls has read, and send what it answers
/// (handshake messages, alerts). A TLS error is InvalidData.
fn decrypt(tls: &mut rustls::ServerConnection, socket: &Socket) -> io::Result<rustls::IoState> {
    match tls.process_new_packets() {
        Ok(state) => {
            flush_tls(tls, socket, 0)?;
            Ok(state)
        }
        Err(e) => {
            if is_plain_text(&e) {
                // Somebody typed http:// for an https:// port: tell them in
                // words they can read, as nginx does, not in an alert.
                let _ = (&*socket).write(PLAIN_HTTP_ON_TLS_PORT);
            } else {
                // rustls queued an alert telling the client why; send it
                // if the socket takes it now.
                let _ = flush_tls(tls, socket, 0);
            }
            Err(io::Error::new(io::ErrorKind::InvalidData, e))
        }
    }
}

/// Send TLS records the session holds, as far as the socket takes them
/// now. Returns the bytes written.
fn flush_tls(
    tls: &mut rustls::ServerConnection,
    socket: &Socket,
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut written = 0;
    while tls.wants_write() {
        match tls.write_tls(&mut SendWith { socket, flags }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// `Conn::send_all_wait` through TLS: encrypt as much as the session
/// buffers, send it, waiting for the client as the plain path does.
fn send_tls_wait(
    tls: &mut rustls::ServerConnection,
    socket: &Socket,
    mut data: &[u8],
    flags: libc::c_int,
    idle: Duration,
    slot: &Slot,
    beat_every: Duration,
) -> io::Result<()> {
    loop {
        if !data.is_empty() {
            let n = tls.writer().write(data)?;
            slot.add_bytes_out(n);
            data = &data[n..];
        }
        flush_tls(tls, socket, flags)?;
        if tls.wants_write() {
            wait_for(
                socket.as_fd(),
                PollFlags::POLLOUT,
                Instant::now() + idle,
                slot,
                beat_every,
            )?;
        } else if data.is_empty() {
            return Ok(());
        }
    }
}

/// `Conn::flush_out` through TLS: `out` keeps what the session did not
/// take; returns the bytes moved (taken or sent), 0 when the socket is full.
fn flush_out_tls(
    tls: &mut rustls::ServerConnection,
    socket: &Socket,
    out: &mut Vec<u8>,
    slot: &Slot,
) -> io::Result<usize> {
    let mut taken = 0;
    let mut moved = 0;
    loop {
        moved += flush_tls(tls, socket, 0)?;
        if tls.wants_write() || taken == out.len() {
            break;
        }
        let n = tls.writer().write(&out[taken..])?;
        if n == 0 {
            break;
        }
        slot.add_bytes_out(n);
        taken += n;
        moved += n;
    }
    out.drain(..taken);
    Ok(moved)
}

/// The socket as rustls's output, sent with send(2) flags (MSG_MORE for a
/// response the FIN follows).
struct SendWith<'s> {
    socket: &'s Socket,
    flags: libc::c_int,
}

impl Write for SendWith<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.socket.send_with_flags(data, self.flags)
    }

    // rustls hands over several records at once: one sendmsg(2) for all.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.socket.send_vectored_with_flags(bufs, self.flags)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `bytes` hold the end of a head: `\n\n` or `\n\r\n`. Jumps
/// from one LF to the next rather than comparing every window, since it
/// runs on each request's head.
fn has_blank_line(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        rest = &rest[i + 1..];
        match rest {
            [b'\n', ..] | [b'\r', b'\n', ..] => return true,
            _ => {}
        }
    }
    false
}

/// poll(2) one descriptor until it is ready or `deadline` passes, beating
/// the heartbeat at least every `beat_every`.
fn wait_for(
    fd: std::os::fd::BorrowedFd<'_>,
    flags: PollFlags,
    deadline: Instant,
    slot: &Slot,
    beat_every: Duration,
) -> io::Result<()> {
    loop {
        let Some(ms) = poll_millis(Instant::now(), deadline, beat_every) else {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow"));
        };
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => slot.beat(),
            Ok(_) => {
                slot.beat();
                return Ok(());
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long one poll(2) in `wait_for` may sleep: until the deadline, but no
/// longer than a heartbeat period, and at least 1 ms (0 would not sleep at
/// all). None once the deadline has passed.
fn poll_millis(now: Instant, deadline: Instant, beat_every: Duration) -> Option<u16> {
    if now >= deadline {
        return None;
    }
    let wait = (deadline - now).min(beat_every);
    Some(u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{has_blank_line, poll_millis};

    #[test]
    fn a_blank_line_is_found_with_or_without_cr() {
        assert!(has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(has_blank_line(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(has_blank_line(b"\n\r\n"));
        assert!(has_blank_line(b"\n\n"));
        assert!(!has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r"));
        assert!(!has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!has_blank_line(b"\n\r"));
        assert!(!has_blank_line(b"\r\n\r\r\n"));
        assert!(!has_blank_line(b""));
    }

    #[test]
    fn a_passed_deadline_stops_the_wait() {
        let now = Instant::now();
        assert_eq!(poll_millis(now, now, Duration::from_secs(1)), None);
        let earlier = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        assert_eq!(poll_millis(now, earlier, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_far_deadline_waits_one_heartbeat_at_a_time() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        assert_eq!(
            poll_millis(now, deadline, Duration::from_millis(250)),
            Some(250)
        );
    }

    #[test]
    fn a_near_deadline_waits_only_until_it() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(40);
        assert_eq!(poll_millis(now, deadline, Duration::from_secs(1)), Some(40));
    }

    #[test]
    fn less_than_a_millisecond_left_still_sleeps_one() {
        let now = Instant::now();
        let deadline = now + Duration::from_micros(300);
        assert_eq!(poll_millis(now, deadline, Duration::from_secs(1)), Some(1));
    }

    #[test]
    fn a_long_heartbeat_period_is_capped_at_what_poll_takes() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(3600);
        assert_eq!(
            poll_millis(now, deadline, Duration::from_secs(600)),
            Some(u16::MAX)
        );
    }
}
