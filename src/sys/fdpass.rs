//! Passing open sockets between processes (SCM_RIGHTS over a unix socket
//! pair): the channel workers hand idle keep-alive connections through.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// A connected `SOCK_SEQPACKET` pair: whatever is sent on `tx` is received,
/// one message at a time and each by exactly one reader, on `rx`. Both ends
/// are close-on-exec (an upgraded master starts with its own) and
/// non-blocking in every call (`MSG_DONTWAIT`), so one process can read it
/// from an event loop while another blocks nowhere writing it.
#[derive(Debug)]
pub struct FdChannel {
    tx: OwnedFd,
    rx: OwnedFd,
}

/// The one payload byte each message carries (a message needs a byte for its
/// descriptor to ride on, and a zero-length read could be mistaken for EOF).
const TAG: u8 = b'c';

impl FdChannel {
    /// A new, empty channel.
    pub fn new() -> io::Result<FdChannel> {
        let (tx, rx) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        Ok(FdChannel { tx, rx })
    }

    /// The end to watch for readability (descriptors waiting).
    pub fn rx_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Send a copy of `fd`; the caller still owns (and should close) its own.
    /// `WouldBlock` means the channel is full.
    pub fn send(&self, fd: RawFd) -> io::Result<()> {
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&[TAG])];
        loop {
            match sendmsg::<()>(
                self.tx.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Take one descriptor if one is waiting (`WouldBlock` if none).
    pub fn receive(&self) -> io::Result<OwnedFd> {
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        loop {
            let mut iov = [IoSliceMut::new(&mut byte)];
            let msg = match recvmsg::<()>(
                self.rx.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            // MSG_CTRUNC (we were out of descriptors) surfaces as ENOBUFS:
            // the kernel closed what it could not give us.
            let cmsgs = msg.cmsgs().map_err(|e| {
                io::Error::other(format!(
                    "a passed connection was lost: {e} (out of descriptors?)"
                ))
            })?;
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = cmsg
                    && let Some(&fd) = fds.first()
                {
                    // SAFETY: SCM_RIGHTS just installed this descriptor in
                    // our table; nothing else in this process knows it. We
                    // send one per message, so there are no others to close.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            // A message without a descriptor carries nothing: read on.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_passed_socket_keeps_the_bytes_already_sent_to_it() {
        let channel = FdChannel::new().expect("channel");
        assert_eq!(
            channel.receive().expect_err("empty").kind(),
            io::ErrorKind::WouldBlock
        );
        let (mut client, server) = UnixStream::pair().expect("pair");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        channel.send(server.as_raw_fd()).expect("send");
        drop(server);
        let received = UnixStream::from(channel.receive().expect("a descriptor"));
        let mut buf = [0u8; 18];
        (&received).read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"GET / HTTP/1.1\r\n\r\n");
        (&received).write_all(b"ok").expect("write back");
        let mut back = [0u8; 2];
        client.read_exact(&mut back).expect("read back");
        assert_eq!(&back, b"ok");
    }
}
