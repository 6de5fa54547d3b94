//! Sockets the master serves itself (the control socket, the metrics
//! endpoint): each connection brings one request and gets one reply.
//!
//! Everything is non-blocking and driven from the master's poll loop, so a
//! slow or silent client can never stall supervision; the master stays
//! single-threaded. Each connection has a deadline and a size cap.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use socket2::Socket;

/// The longest a client may take to send its request and read the reply.
const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// The largest request accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Most connections served at once; more wait in the listen queue.
const MAX_CONNS: usize = 64;

/// Whether `input` holds a whole request: `Some(len)` when it does.
pub type Framing = fn(&[u8]) -> Option<usize>;

struct Conn {
    socket: Socket,
    input: Vec<u8>,
    /// The reply, once the request is whole; `written` bytes of it are sent.
    output: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// A listening socket and its connections, each answered once and closed.
/// Owned and driven by the master: `poll_set`, then `service`, then a
/// `reply` for each `Pending`.
pub struct OneShotServer {
    listener: Socket,
    /// Inode of our unix socket file, taken at start.
    inode: Option<u64>,
    framing: Framing,
    conns: Vec<Conn>,
}

/// A request waiting for its reply.
pub struct Pending {
    /// The connection to `reply` to. Valid only until the next `service`,
    /// which may drop connections and shift the others.
    pub index: usize,
    /// The whole request, as many bytes as the framing function said.
    pub request: Vec<u8>,
}

impl OneShotServer {
    /// Serve `listener` (made non-blocking here), with `framing` deciding
    /// when a request is whole. Notes the inode of a unix socket file for
    /// `is_bound_at`.
    pub fn new(listener: Socket, framing: Framing) -> io::Result<OneShotServer> {
        listener.set_nonblocking(true)?;
        let inode = listener.local_addr().ok().and_then(|a| {
            use std::os::unix::fs::MetadataExt;
            a.as_pathname()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.ino())
        });
        Ok(OneShotServer {
            listener,
            inode,
            framing,
            conns: Vec::new(),
        })
    }

    /// Descriptors to poll and what for.
    pub fn poll_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut set = Vec::with_capacity(self.conns.len() + 1);
        if self.conns.len() < MAX_CONNS {
            set.push((self.listener.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.conns {
            let flags = if c.output.is_some() {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            set.push((c.socket.as_fd(), flags));
        }
        set
    }

    /// The earliest connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| c.deadline).min()
    }

    /// Accept, read and write whatever is possible without blocking; drop
    /// connections that are done or overdue. Returns the requests that are
    /// now whole, for the caller to answer with `reply`.
    pub fn service(&mut self, now: Instant) -> Vec<Pending> {
        while self.conns.len() < MAX_CONNS {
            match self.listener.accept() {
                Ok((socket, _)) => {
                    if socket.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn {
                            socket,
                            input: Vec::new(),
                            output: None,
                            written: 0,
                            deadline: now + CONN_DEADLINE,
                        });
                    }
                }
                Err(_) => break,
            }
        }
        let mut pending = Vec::new();
        let framing = self.framing;
        self.conns.retain_mut(|c| {
            if now >= c.deadline {
                return false;
            }
            match &c.output {
                Some(out) => match (&c.socket).write(&out[c.written..]) {
                    Ok(n) => {
                        c.written += n;
                        c.written < out.len()
                    }
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                },
                None => {
                    let mut buf = [0u8; 4096];
                    loop {
                        match (&c.socket).read(&mut buf) {
                            Ok(0) => return framing(&c.input).is_some(),
                            Ok(n) => {
                                c.input.extend_from_slice(&buf[..n]);
                                if c.input.len() > MAX_REQUEST_BYTES {
                                    return false;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                            Err(_) => return false,
                        }
                    }
                }
            }
        });
        for (index, c) in self.conns.iter().enumerate() {
            if c.output.is_none()
                && let Some(len) = framing(&c.input)
            {
                pending.push(Pending {
                    index,
                    request: c.input[..len].to_vec(),
                });
            }
        }
        pending
    }

    /// Queue the reply to a pending request and try to send it now.
    pub fn reply(&mut self, index: usize, reply: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(index) {
            c.output = Some(reply);
            c.written = 0;
            let _ = c.socket.shutdown(std::net::Shutdown::Read);
        }
    }
}

impl OneShotServer {
    /// Whether the unix socket file at `path` is still ours, not one a
    /// newer process bound at the same path.
    pub fn is_bound_at(&self, path: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).is_ok_and(|m| Some(m.ino()) == self.inode)
    }

    /// The listening socket's descriptor, still owned by the server.
    pub fn listener_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    /// Every descriptor it holds (for a forked child to close).
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        std::iter::once(self.listener.as_raw_fd())
            .chain(self.conns.iter().map(|c| c.socket.as_raw_fd()))
            .collect()
    }
}
