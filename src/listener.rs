//! Listening sockets: parsing `--bind` values, binding them (or adopting
//! inherited descriptors), and naming them in the log.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    /// `HOST:PORT` or `[IPV6]:PORT`, the host resolved at parse time.
    Tcp(SocketAddr),
    /// `unix:PATH`: a socket file, created at bind and removed on exit.
    Unix(PathBuf),
    /// An already-listening socket inherited as this descriptor.
    Fd(RawFd),
}

impl BindSpec {
    /// Parse `HOST:PORT`, `[IPV6]:PORT`, `HOST` (port 8000), `unix:PATH` or `fd://N`.
    pub fn parse(value: &str) -> Result<BindSpec, String> {
        if let Some(path) = value.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!(
                    "--bind {value}: unix: needs a path, e.g. unix:/run/app.sock"
                ));
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = value.strip_prefix("fd://") {
            return match fd.parse::<RawFd>() {
                Ok(fd) if fd >= 0 => Ok(BindSpec::Fd(fd)),
                _ => Err(format!(
                    "--bind {value}: fd:// needs a descriptor number, e.g. fd://3"
                )),
            };
        }
        if let Ok(addr) = value.parse::<SocketAddr>() {
            return Ok(BindSpec::Tcp(addr));
        }
        // A bare host (or bracketed IPv6 address) means port 8000, as in gunicorn.
        let with_port = if value.contains(':') && !value.starts_with('[') {
            value.to_owned()
        } else if value.starts_with('[') && value.ends_with(']') {
            format!("{value}:8000")
        } else if value.contains(':') {
            value.to_owned()
        } else {
            format!("{value}:8000")
        };
        let bad = || {
            format!(
                "--bind {value}: not an address; use HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N"
            )
        };
        if let Some((_, port)) = with_port.rsplit_once(':')
            && port.parse::<u16>().is_err()
        {
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "--bind {value}: port {port} is out of range; use a port from 0 to 65535 (0 picks a free one)"
                ));
            }
            return Err(bad());
        }
        match with_port.to_socket_addrs() {
            Ok(mut addrs) => addrs.next().map(BindSpec::Tcp).ok_or_else(bad),
            Err(e) => Err(format!("--bind {value}: cannot resolve the host: {e}")),
        }
    }
}

/// One `--bind` value: where to listen, and what connections there begin
/// with before their first request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Where.
    pub addr: BindSpec,
    /// `https://`: a TLS handshake (`--certfile` and `--keyfile` say with what).
    pub is_tls: bool,
    /// `proxy+`: a PROXY protocol header from the proxy in front
    /// (`--proxy-protocol` sets it on every bind).
    pub expects_proxy_header: bool,
}

impl Bind {
    /// A plain listener at `addr`.
    pub fn plain(addr: BindSpec) -> Bind {
        Bind {
            addr,
            is_tls: false,
            expects_proxy_header: false,
        }
    }

    /// Parse a `--bind` value: any form `BindSpec::parse` takes, optionally
    /// behind `http://` (the same), `https://` (TLS), `proxy+http://` or
    /// `proxy+https://` (a PROXY protocol header first).
    pub fn parse(value: &str) -> Result<Bind, String> {
        let (expects_proxy_header, rest) = match value.strip_prefix("proxy+") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let (is_tls, addr) = if let Some(addr) = rest.strip_prefix("https://") {
            (true, addr)
        } else if let Some(addr) = rest.strip_prefix("http://") {
            (false, addr)
        } else if expects_proxy_header {
            return Err(format!(
                "--bind {value}: proxy+ goes before a scheme: proxy+http://HOST:PORT or proxy+https://HOST:PORT"
            ));
        } else {
            (false, rest)
        };
        let addr = BindSpec::parse(addr).map_err(|e| {
            // Name the whole value the user wrote, not the part after the scheme.
            e.replacen(&format!("--bind {addr}"), &format!("--bind {value}"), 1)
        })?;
        Ok(Bind {
            addr,
            is_tls,
            expects_proxy_header,
        })
    }
}

/// A bound, listening socket shared by all workers.
#[derive(Debug)]
pub struct Listener {
    /// The listening socket, non-blocking. The master binds it before
    /// forking, so every worker inherits it; only workers accept.
    pub socket: Socket,
    /// What the log and status show: `http://127.0.0.1:8000` or `unix:/run/app.sock`.
    pub name: String,
    /// A unix socket file we created, to remove on exit.
    pub unix_path: Option<PathBuf>,
    /// Connections begin with a TLS handshake.
    pub is_tls: bool,
    /// Connections begin with a PROXY protocol header.
    pub expects_proxy_header: bool,
}

impl Listener {
    /// Bind `spec` with `backlog`. The socket is non-blocking: workers accept
    /// from an event loop, and the master never accepts.
    pub fn bind(bind: &Bind, backlog: i32) -> io::Result<Listener> {
        let mut listener = match &bind.addr {
            BindSpec::Tcp(addr) => bind_tcp(*addr, backlog)?,
            BindSpec::Unix(path) => bind_unix(path, backlog)?,
            BindSpec::Fd(fd) => adopt_fd(*fd)?,
        };
        listener.socket.set_nonblocking(true)?;
        listener.is_tls = bind.is_tls;
        listener.expects_proxy_header = bind.expects_proxy_header;
        if bind.is_tls {
            listener.name = match listener.name.strip_prefix("http://") {
                Some(addr) => format!("https://{addr}"),
                None => format!("https+{}", listener.name),
            };
        }
        if bind.expects_proxy_header {
            listener.name = format!("proxy+{}", listener.name);
        }
        Ok(listener)
    }

    /// The socket's descriptor, still owned by the listener.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Remove a unix socket file we created (called by the master on exit).
    pub fn remove_socket_file(&self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How long the kernel holds a connection that has sent nothing before
/// handing it to accept() anyway.
const DEFER_ACCEPT_SECS: i32 = 5;

fn tcp_name(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| bind_error(&addr.to_string(), e))?;
    socket.listen(backlog)?;
    // Best effort: without it workers still serve, just less evenly.
    let _ = crate::sys::sockopt::defer_accept(socket.as_raw_fd(), DEFER_ACCEPT_SECS);
    // Accepted sockets inherit it, so workers need no setsockopt per connection.
    socket.set_tcp_nodelay(true)?;
    let local = socket.local_addr()?.as_socket().unwrap_or(addr);
    Ok(Listener {
        socket,
        name: tcp_name(local),
        unix_path: None,
        is_tls: false,
        expects_proxy_header: false,
    })
}

fn bind_unix(path: &std::path::Path, backlog: i32) -> io::Result<Listener> {
    // A socket file left by a crashed server is removed; one that still
    // answers belongs to a live server and is an error.
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "cannot bind unix:{}: a server is already listening there (stop it or pick another path with -b)",
                    path.display()
                ),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    let addr = SockAddr::unix(path)?;
    socket
        .bind(&addr)
        .map_err(|e| bind_error(&format!("unix:{}", path.display()), e))?;
    socket.listen(backlog)?;
    Ok(Listener {
        socket,
        name: format!("unix:{}", path.display()),
        unix_path: Some(path.to_path_buf()),
        is_tls: false,
        expects_proxy_header: false,
    })
}

fn adopt_fd(fd: RawFd) -> io::Result<Listener> {
    let not_listening = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--bind fd://{fd}: descriptor {fd} is not a listening socket"),
        )
    };
    let socket = Socket::from(crate::sys::fd::adopt(fd).ok_or_else(not_listening)?);
    if !socket.is_listener().unwrap_or(false) {
        std::mem::forget(socket);
        return Err(not_listening());
    }
    // Workers rely on accepted sockets inheriting TCP_NODELAY (not on unix sockets).
    let _ = socket.set_tcp_nodelay(true);
    let local = socket.local_addr()?;
    let name = if let Some(addr) = local.as_socket() {
        tcp_name(addr)
    } else if let Some(path) = local.as_pathname() {
        format!("unix:{}", path.display())
    } else {
        format!("fd://{fd}")
    };
    Ok(Listener {
        socket,
        name,
        unix_path: None,
        is_tls: false,
        expects_proxy_header: false,
    })
}

fn bind_error(what: &str, e: io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "address in use (is another server running? pick another port with -b)".to_owned()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; pick another port with -b)".to_owned()
        }
        io::ErrorKind::AddrNotAvailable => {
            "address not available on this machine (check the host part of -b)".to_owned()
        }
        _ => e.to_string(),
    };
    io::Error::new(e.kind(), format!("cannot bind {what}: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_bind_form() {
        assert_eq!(
            BindSpec::parse("127.0.0.1:0"),
            Ok(BindSpec::Tcp("127.0.0.1:0".parse().expect("addr")))
        );
        assert_eq!(
            BindSpec::parse("[::1]:8080"),
            Ok(BindSpec::Tcp("[::1]:8080".parse().expect("addr")))
        );
        assert_eq!(
            BindSpec::parse("127.0.0.1"),
            Ok(BindSpec::Tcp("127.0.0.1:8000".parse().expect("addr")))
        );
        assert_eq!(
            BindSpec::parse("unix:/tmp/x.sock"),
            Ok(BindSpec::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(BindSpec::parse("fd://3"), Ok(BindSpec::Fd(3)));
    }

    #[test]
    fn a_scheme_marks_tls_and_proxy_binds() {
        let tcp = BindSpec::Tcp("127.0.0.1:8443".parse().expect("addr"));
        let parsed = |v: &str| Bind::parse(v).expect(v);
        assert_eq!(parsed("127.0.0.1:8443"), Bind::plain(tcp.clone()));
        assert_eq!(parsed("http://127.0.0.1:8443"), Bind::plain(tcp.clone()));
        let tls = parsed("https://127.0.0.1:8443");
        assert!(tls.is_tls && !tls.expects_proxy_header);
        let both = parsed("proxy+https://127.0.0.1:8443");
        assert!(both.is_tls && both.expects_proxy_header);
        assert_eq!(both.addr, tcp);
        let proxied = parsed("proxy+http://unix:/run/x.sock");
        assert!(!proxied.is_tls && proxied.expects_proxy_header);
        assert_eq!(proxied.addr, BindSpec::Unix("/run/x.sock".into()));
        let err = Bind::parse("proxy+127.0.0.1:1").expect_err("no scheme");
        assert!(err.contains("proxy+http://"), "{err}");
        let err = Bind::parse("https://1.2.3.4:port").expect_err("bad port");
        assert!(err.starts_with("--bind https://1.2.3.4:port:"), "{err}");
    }

    #[test]
    fn a_tls_listener_is_named_https() {
        let l = Listener::bind(&Bind::parse("proxy+https://127.0.0.1:0").expect("spec"), 16)
            .expect("bind");
        assert!(l.name.starts_with("proxy+https://127.0.0.1:"), "{}", l.name);
        assert!(l.is_tls && l.expects_proxy_header);
    }

    #[test]
    fn refuses_nonsense_with_the_accepted_forms() {
        for bad in ["127.0.0.1:99999", "fd://x", "unix:", "1.2.3.4:port"] {
            let err = BindSpec::parse(bad).expect_err(bad);
            assert!(err.starts_with(&format!("--bind {bad}")), "{err}");
        }
    }

    #[test]
    fn an_out_of_range_port_names_the_range() {
        for bad in ["127.0.0.1:99999", "localhost:65536", "[::1]:700000"] {
            let err = BindSpec::parse(bad).expect_err(bad);
            assert!(err.contains("from 0 to 65535"), "{err}");
        }
        let err = BindSpec::parse("1.2.3.4:port").expect_err("not a number");
        assert!(!err.contains("65535"), "{err}");
    }

    #[test]
    fn a_port_in_use_names_the_fix() {
        let first = Listener::bind(&Bind::parse("127.0.0.1:0").expect("spec"), 16).expect("bind");
        let addr = first.name.trim_start_matches("http://").to_owned();
        let err = Listener::bind(&Bind::parse(&addr).expect("spec"), 16).expect_err("in use");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot bind {addr}: address in use (is another server running? pick another port with -b)"
            )
        );
    }
}
