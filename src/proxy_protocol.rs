//! The PROXY protocol header (HAProxy's, versions 1 and 2): the address a
//! load balancer's client connected from, sent by the balancer as the first
//! bytes of the connection, before the client's own.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//! Version 1 is one text line (`PROXY TCP4 203.0.113.9 10.0.0.1 51234 443`
//! and CRLF); version 2 is a binary block behind a 12-byte signature.
//!
//! [`parse`] is called after every read on a growing buffer, so it must give
//! the same answer however the bytes were split: an error is reported as soon
//! as the bytes proving it have arrived, and always the first in byte order.
//! Bytes that cannot begin either version are [`ParseError::NotProxy`] at
//! once, so a plain HTTP request or TLS ClientHello is never waited on.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection: the client's address and the address it connected to.
    Proxied {
        /// The client's address and port.
        source: SocketAddr,
        /// The address and port the client connected to (the proxy's listener).
        destination: SocketAddr,
    },
    /// v2 LOCAL (a health check from the proxy itself), v1 UNKNOWN, or v2 PROXY with an
    /// address family we do not map (UNSPEC, unix): keep the connection's real peer.
    Local,
}

/// Why the first bytes of a connection are not an acceptable header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes cannot be the start of a v1 or v2 header (a plain request, a TLS handshake).
    NotProxy,
    /// v1: no CRLF within 107 bytes; v2: a length over `V2_MAX_LENGTH`.
    TooLong,
    /// It starts as a header but breaks the spec; the reason, for the log.
    Malformed(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotProxy => f.write_str("no proxy protocol header"),
            ParseError::TooLong => f.write_str("proxy protocol header too long"),
            ParseError::Malformed(why) => write!(f, "malformed proxy protocol header: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// How a v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Longest v1 header, CRLF included: the spec's bound, met by
/// `PROXY UNKNOWN` with two full IPv6 addresses and ports.
pub const V1_MAX_BYTES: usize = 107;

/// How a v2 header starts; it cannot begin an HTTP request or TLS record.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family and transport, and the 2-byte length.
const V2_FIXED_BYTES: usize = 16;

/// Largest v2 length (the bytes after the fixed 16) we accept. A real header
/// is 12 or 36 bytes of addresses plus a few TLVs (ALPN, authority, TLS
/// details), well under a kilobyte; the field allows 65535, and waiting for
/// that much from a peer is either an attack or a proxy misconfigured to
/// send things it should not.
pub const V2_MAX_LENGTH: usize = 4096;

/// The most bytes a header can take, so the caller's buffer can be sized to
/// always reach a verdict.
pub const MAX_HEADER_BYTES: usize = V2_FIXED_BYTES + V2_MAX_LENGTH;

/// Reads a PROXY protocol header (v1 or v2) at the start of `buf`.
///
/// Ok(None): the bytes so far are a valid beginning; read more.
/// Ok(Some((header, n))): the header is the first n bytes; what follows is the client's data.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ParseError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ParseError::NotProxy),
    }
}

/// Whether `buf` agrees with `expected` for as many bytes as both have.
fn starts_like(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ParseError> {
    if !starts_like(buf, V1_PREFIX) {
        return Err(ParseError::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_BYTES {
            Err(ParseError::TooLong)
        } else {
            Ok(None)
        };
    };
    // The prefix check passed and has no LF, so lf >= V1_PREFIX.len().
    if buf[lf - 1] != b'\r' {
        return Err(ParseError::Malformed("line ends in a bare LF, not CRLF"));
    }
    let header = parse_v1_line(&buf[V1_PREFIX.len()..lf - 1])?;
    Ok(Some((header, lf + 1)))
}

/// The v1 line after `PROXY `, CRLF excluded.
fn parse_v1_line(line: &[u8]) -> Result<Header, ParseError> {
    let mut fields = line.split(|&b| b == b' ');
    // split always yields at least one (possibly empty) field.
    let protocol = fields.next().unwrap_or_default();
    let is_v4 = match protocol {
        // The spec lets anything follow UNKNOWN up to the CRLF, unread.
        b"UNKNOWN" => return Ok(Header::Local),
        b"TCP4" => true,
        b"TCP6" => false,
        b"" if !line.is_empty() => return Err(SINGLE_SPACES),
        _ => {
            return Err(ParseError::Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut rest: [&[u8]; 4] = [&[]; 4];
    let mut count = 0;
    for field in fields {
        if field.is_empty() {
            return Err(SINGLE_SPACES);
        }
        if count == rest.len() {
            return Err(ParseError::Malformed(
                "more than two addresses and two ports",
            ));
        }
        rest[count] = field;
        count += 1;
    }
    if count < rest.len() {
        return Err(ParseError::Malformed(
            "fewer than two addresses and two ports",
        ));
    }
    let [src, dst, sport, dport] = rest;
    let (source, destination) = if is_v4 {
        (
            v1_address::<Ipv4Addr>(src, "source is not an IPv4 address")?,
            v1_address::<Ipv4Addr>(dst, "destination is not an IPv4 address")?,
        )
    } else {
        (
            v1_address::<Ipv6Addr>(src, "source is not an IPv6 address")?,
            v1_address::<Ipv6Addr>(dst, "destination is not an IPv6 address")?,
        )
    };
    let sport = v1_port(sport).ok_or(ParseError::Malformed("source port is not 0 to 65535"))?;
    let dport =
        v1_port(dport).ok_or(ParseError::Malformed("destination port is not 0 to 65535"))?;
    Ok(Header::Proxied {
        source: SocketAddr::new(source, sport),
        destination: SocketAddr::new(destination, dport),
    })
}

const SINGLE_SPACES: ParseError = ParseError::Malformed("fields not separated by single spaces");

/// An address of the family `A` (std's parsers are strict: no leading zeros
/// in IPv4 octets, no zone in IPv6).
fn v1_address<A>(field: &[u8], why: &'static str) -> Result<IpAddr, ParseError>
where
    A: std::str::FromStr + Into<IpAddr>,
{
    std::str::from_utf8(field)
        .ok()
        .and_then(|text| text.parse::<A>().ok())
        .map(Into::into)
        .ok_or(ParseError::Malformed(why))
}

/// A port as the spec writes it: decimal digits, no sign, no leading zero
/// (a sender that pads is not following the spec, so we do not guess).
fn v1_port(field: &[u8]) -> Option<u16> {
    let canonical = field == b"0" || matches!(field, [b'1'..=b'9', ..] if field.len() <= 5);
    if !canonical || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = field
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(value).ok()
}

/// v2 command (low nibble of byte 13).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Local,
    Proxy,
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ParseError> {
    if !starts_like(buf, &V2_SIGNATURE) {
        return Err(ParseError::NotProxy);
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(ParseError::Malformed("version is not 2"));
    }
    let command = match version_command & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(ParseError::Malformed("command is not LOCAL or PROXY")),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // Bytes of addresses the family needs. LOCAL ignores the family, as the spec says.
    let address_bytes = match (command, family) {
        (Command::Local, _) | (Command::Proxy, 0x00) => 0,
        (Command::Proxy, 0x11 | 0x12) => 12,
        (Command::Proxy, 0x21 | 0x22) => 36,
        (Command::Proxy, 0x31 | 0x32) => 216,
        _ => return Err(ParseError::Malformed("unknown address family or transport")),
    };
    if buf.len() < V2_FIXED_BYTES {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX_LENGTH {
        return Err(ParseError::TooLong);
    }
    if length < address_bytes {
        return Err(ParseError::Malformed("length too short for the addresses"));
    }
    let total = V2_FIXED_BYTES + length;
    let Some(block) = buf.get(V2_FIXED_BYTES..total) else {
        return Ok(None);
    };
    // Anything after the addresses is TLVs, which we do not use.
    let header = match (command, address_bytes) {
        (Command::Proxy, 12) => v2_proxied(
            IpAddr::from(octets::<4>(&block[0..])),
            IpAddr::from(octets::<4>(&block[4..])),
            &block[8..12],
        ),
        (Command::Proxy, 36) => v2_proxied(
            IpAddr::from(octets::<16>(&block[0..])),
            IpAddr::from(octets::<16>(&block[16..])),
            &block[32..36],
        ),
        _ => Header::Local,
    };
    Ok(Some((header, total)))
}

/// PP2_TYPE_SSL: what the client's connection to the proxy was.
const TLV_SSL: u8 = 0x20;
/// In PP2_TYPE_SSL's first byte: the client spoke TLS to the proxy.
const PP2_CLIENT_SSL: u8 = 0x01;

/// Whether a header (its bytes, as long as `parse` measured it) says the
/// client spoke TLS to the proxy: a v2 PROXY header with a PP2_TYPE_SSL TLV
/// whose PP2_CLIENT_SSL bit is set. A proxy that ends TLS and passes the
/// connection on in TCP mode has no other way to tell (v1 has none).
pub fn says_client_used_tls(header: &[u8]) -> bool {
    if !header.starts_with(&V2_SIGNATURE) || header.len() < V2_FIXED_BYTES {
        return false;
    }
    if header[12] & 0x0f != 1 {
        return false; // LOCAL: the proxy's own connection
    }
    let address_bytes = match header[13] {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => 0,
    };
    let mut tlvs = header
        .get(V2_FIXED_BYTES + address_bytes..)
        .unwrap_or_default();
    while let [kind, len_hi, len_lo, rest @ ..] = tlvs {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo]));
        let Some(value) = rest.get(..len) else {
            return false;
        };
        if *kind == TLV_SSL {
            return value
                .first()
                .is_some_and(|client| client & PP2_CLIENT_SSL != 0);
        }
        tlvs = &rest[len..];
    }
    false
}

/// The first `N` bytes of `bytes`, which the length check made sure are there.
fn octets<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Builds a proxied header from the two addresses and the 4 port bytes
/// (source then destination, big-endian) that follow them.
fn v2_proxied(source: IpAddr, destination: IpAddr, ports: &[u8]) -> Header {
    Header::Proxied {
        source: SocketAddr::new(source, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([ports[2], ports[3]])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect(text)
    }

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    fn malformed(buf: &[u8]) -> &'static str {
        match parse(buf) {
            Err(ParseError::Malformed(why)) => why,
            other => panic!(
                "{:?}: expected Malformed, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// A v2 header: signature, version/command, family, length, then `body`.
    fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        v2_with_length(version_command, family, body.len() as u16, body)
    }

    fn v2_with_length(version_command: u8, family: u8, length: u16, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// 203.0.113.9:51234 -> 10.0.0.1:443 as a v2 IPv4 address block.
    const TCP4_BLOCK: [u8; 12] = [203, 0, 113, 9, 10, 0, 0, 1, 0xc8, 0x22, 0x01, 0xbb];

    fn tcp6_block() -> Vec<u8> {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0xc8, 0x22, 0x01, 0xbb]);
        block
    }

    /// Two TLVs as a proxy might send them: ALPN "h2" and authority "example.com".
    const TLVS: &[u8] = b"\x01\x00\x02h2\x02\x00\x0bexample.com";

    /// Checks every proper prefix of `header` asks for more, and that the
    /// whole, followed by a request, parses as `expected` and leaves the request.
    fn parses_byte_by_byte(header: &[u8], expected: Header) {
        for end in 0..header.len() {
            assert_eq!(
                parse(&header[..end]),
                Ok(None),
                "prefix of {end} bytes of {header:?}"
            );
        }
        assert_eq!(parse(header), Ok(Some((expected, header.len()))));
        let mut stream = header.to_vec();
        stream.extend_from_slice(REQUEST);
        assert_eq!(parse(&stream), Ok(Some((expected, header.len()))));
        assert_eq!(&stream[header.len()..], REQUEST);
    }

    #[test]
    fn v1_tcp4() {
        let header = b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 443\r\n";
        parses_byte_by_byte(header, proxied("203.0.113.9:51234", "10.0.0.1:443"));
    }

    #[test]
    fn v1_tcp6() {
        let header = b"PROXY TCP6 2001:db8::9 2001:db8::1 51234 443\r\n";
        parses_byte_by_byte(header, proxied("[2001:db8::9]:51234", "[2001:db8::1]:443"));
    }

    #[test]
    fn v1_ports_at_the_ends_of_the_range() {
        let header = b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n";
        parses_byte_by_byte(header, proxied("1.2.3.4:0", "5.6.7.8:65535"));
    }

    #[test]
    fn v1_unknown_is_local_whatever_follows() {
        parses_byte_by_byte(b"PROXY UNKNOWN\r\n", Header::Local);
        parses_byte_by_byte(
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
            Header::Local,
        );
    }

    #[test]
    fn v1_longest_line_fits_and_one_more_byte_does_not() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_BYTES - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), 107);
        parses_byte_by_byte(&line, Header::Local);

        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_BYTES - 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(ParseError::TooLong));
        assert_eq!(parse(&long[..107]), Err(ParseError::TooLong));
        assert_eq!(parse(&long[..106]), Ok(None));
    }

    #[test]
    fn v1_without_a_line_end_is_too_long() {
        let mut buf = b"PROXY TCP4 ".to_vec();
        buf.resize(4096, b'1');
        assert_eq!(parse(&buf), Err(ParseError::TooLong));
    }

    #[test]
    fn v1_malformed_lines() {
        let cases: &[(&[u8], &str)] = &[
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces"),
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "single spaces"),
            (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "fewer than"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "fewer than"),
            (b"PROXY TCP4\r\n", "fewer than"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "more than"),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
            (b"PROXY UNKNOWNX\r\n", "protocol"),
            (b"PROXY \r\n", "protocol"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n", "source port"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                "destination port",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "source port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0x2\r\n", "destination port"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n",
                "destination port",
            ),
            (
                b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
                "source is not an IPv4",
            ),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "source is not an IPv4"),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
                "source is not an IPv4",
            ),
            (
                b"PROXY TCP4 1.2.3.4 example.com 1 2\r\n",
                "destination is not an IPv4",
            ),
            (
                b"PROXY TCP4 2001:db8::9 5.6.7.8 1 2\r\n",
                "source is not an IPv4",
            ),
            (
                b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
                "source is not an IPv6",
            ),
            (
                b"PROXY TCP6 [2001:db8::9] 2001:db8::1 1 2\r\n",
                "source is not an IPv6",
            ),
            (
                b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 2\r\n",
                "source is not an IPv6",
            ),
            (
                b"PROXY TCP6 2001:db8::9 \xff 1 2\r\n",
                "destination is not an IPv6",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
            (b"PROXY UNKNOWN\n", "bare LF"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "destination port"),
        ];
        for (line, expected) in cases {
            let why = malformed(line);
            assert!(
                why.contains(expected),
                "{:?}: {why}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v1_bare_lf_is_reported_as_soon_as_it_arrives() {
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4\nmore"),
            Err(ParseError::Malformed("line ends in a bare LF, not CRLF"))
        );
    }

    #[test]
    fn v2_tcp4() {
        parses_byte_by_byte(
            &v2(0x21, 0x11, &TCP4_BLOCK),
            proxied("203.0.113.9:51234", "10.0.0.1:443"),
        );
    }

    #[test]
    fn v2_tcp4_with_tlvs() {
        let mut body = TCP4_BLOCK.to_vec();
        body.extend_from_slice(TLVS);
        parses_byte_by_byte(
            &v2(0x21, 0x11, &body),
            proxied("203.0.113.9:51234", "10.0.0.1:443"),
        );
    }

    #[test]
    fn v2_tcp6() {
        parses_byte_by_byte(
            &v2(0x21, 0x21, &tcp6_block()),
            proxied("[2001:db8::9]:51234", "[2001:db8::1]:443"),
        );
    }

    #[test]
    fn v2_tcp6_with_tlvs() {
        let mut body = tcp6_block();
        body.extend_from_slice(TLVS);
        parses_byte_by_byte(
            &v2(0x21, 0x21, &body),
            proxied("[2001:db8::9]:51234", "[2001:db8::1]:443"),
        );
    }

    #[test]
    fn v2_udp_gives_the_addresses_too() {
        parses_byte_by_byte(
            &v2(0x21, 0x12, &TCP4_BLOCK),
            proxied("203.0.113.9:51234", "10.0.0.1:443"),
        );
        parses_byte_by_byte(
            &v2(0x21, 0x22, &tcp6_block()),
            proxied("[2001:db8::9]:51234", "[2001:db8::1]:443"),
        );
    }

    #[test]
    fn v2_local_is_local_and_consumes_its_length() {
        parses_byte_by_byte(&v2(0x20, 0x00, &[]), Header::Local);
        parses_byte_by_byte(&v2(0x20, 0x11, &TCP4_BLOCK), Header::Local);
        // LOCAL ignores the family byte, even one PROXY would refuse, and any length.
        parses_byte_by_byte(&v2(0x20, 0x77, b"xyz"), Header::Local);
    }

    #[test]
    fn v2_unspec_and_unix_are_local() {
        parses_byte_by_byte(&v2(0x21, 0x00, &[]), Header::Local);
        parses_byte_by_byte(&v2(0x21, 0x00, TLVS), Header::Local);
        parses_byte_by_byte(&v2(0x21, 0x31, &[b'/'; 216]), Header::Local);
        parses_byte_by_byte(&v2(0x21, 0x32, &[0; 220]), Header::Local);
    }

    #[test]
    fn v2_bad_version_and_command_are_seen_at_byte_13() {
        let mut header = v2(0x11, 0x11, &TCP4_BLOCK);
        assert_eq!(malformed(&header[..13]), "version is not 2");
        assert_eq!(malformed(&header), "version is not 2");
        header[12] = 0x31;
        assert_eq!(malformed(&header), "version is not 2");
        header[12] = 0x22;
        assert_eq!(malformed(&header[..13]), "command is not LOCAL or PROXY");
        header[12] = 0x2f;
        assert_eq!(malformed(&header), "command is not LOCAL or PROXY");
    }

    #[test]
    fn v2_unknown_families_are_malformed() {
        for family in [0x01, 0x10, 0x13, 0x20, 0x41, 0xff] {
            let header = v2(0x21, family, &TCP4_BLOCK);
            assert_eq!(
                malformed(&header[..14]),
                "unknown address family or transport",
                "{family:#x}"
            );
        }
    }

    #[test]
    fn v2_length_shorter_than_the_addresses() {
        for (family, needed) in [(0x11, 12u16), (0x21, 36), (0x31, 216)] {
            let header = v2_with_length(0x21, family, needed - 1, &[0; 300]);
            assert_eq!(
                malformed(&header[..16]),
                "length too short for the addresses"
            );
            let exact = v2_with_length(0x21, family, needed, &[0; 216][..usize::from(needed)]);
            assert!(parse(&exact).unwrap().is_some(), "{family:#x}");
        }
    }

    #[test]
    fn v2_oversize_length_is_refused_before_the_body_arrives() {
        let header = v2_with_length(0x21, 0x11, (V2_MAX_LENGTH + 1) as u16, &[]);
        assert_eq!(parse(&header), Err(ParseError::TooLong));
        let header = v2_with_length(0x21, 0x11, u16::MAX, &[]);
        assert_eq!(parse(&header), Err(ParseError::TooLong));
        let largest = v2(0x21, 0x11, &[0; V2_MAX_LENGTH]);
        assert_eq!(largest.len(), MAX_HEADER_BYTES);
        assert_eq!(
            parse(&largest).map(|h| h.map(|(_, n)| n)),
            Ok(Some(MAX_HEADER_BYTES))
        );
    }

    #[test]
    fn short_beginnings_ask_for_more() {
        for start in [
            &b"P"[..],
            b"PRO",
            b"PROXY",
            b"PROXY ",
            b"\r",
            b"\r\n\r\n\0",
            b"\r\n\r\n\0\r\nQUIT",
        ] {
            assert_eq!(parse(start), Ok(None), "{start:?}");
        }
    }

    #[test]
    fn plain_http_and_tls_are_not_proxy_at_the_first_telling_byte() {
        for start in [
            &b"G"[..],
            b"GET / HTTP/1.1\r\n",
            b"POST",
            b"\x16",
            b"\x16\x03\x01\x02\x00\x01",
            b"PUT / HTTP/1.1\r\n",
            b"PROXZ",
            b"PROXY\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
            b"\r\n\r\n\x01",
            b"\r\n\r\n\0\r\nQUIT\r",
            b"\0",
        ] {
            assert_eq!(parse(start), Err(ParseError::NotProxy), "{start:?}");
        }
    }

    #[test]
    fn errors_read_as_log_reasons() {
        assert_eq!(ParseError::NotProxy.to_string(), "no proxy protocol header");
        assert_eq!(
            ParseError::TooLong.to_string(),
            "proxy protocol header too long"
        );
        assert_eq!(
            ParseError::Malformed("version is not 2").to_string(),
            "malformed proxy protocol header: version is not 2"
        );
    }

    #[test]
    fn an_ssl_tlv_says_the_client_used_tls() {
        let addresses = b"\xc6\x33\x64\x07\x0a\x00\x00\x01\x9c\xbb\x01\xbb";
        let with = |tlvs: &[u8]| {
            let mut body = addresses.to_vec();
            body.extend_from_slice(tlvs);
            v2(0x21, 0x11, &body)
        };
        // ALPN first, then SSL with PP2_CLIENT_SSL and verify = 0.
        let tls = with(b"\x01\x00\x02h2\x20\x00\x05\x01\x00\x00\x00\x00");
        assert!(matches!(parse(&tls), Ok(Some((Header::Proxied { .. }, n))) if n == tls.len()));
        assert!(says_client_used_tls(&tls));
        let plain = with(b"\x20\x00\x05\x00\x00\x00\x00\x00");
        assert!(!says_client_used_tls(&plain));
        assert!(!says_client_used_tls(&with(TLVS)));
        assert!(
            !says_client_used_tls(&with(b"\x20\x00\x09\x01")),
            "a cut TLV"
        );
        assert!(!says_client_used_tls(&v2(0x20, 0x11, &tls[16..])), "LOCAL");
        assert!(!says_client_used_tls(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
    }
}
