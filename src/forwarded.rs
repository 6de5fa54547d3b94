//! Who the client is and which scheme it used, as told by proxies we trust
//! (`--forwarded-allow-ips`): the `Forwarded` field (RFC 7239) and the older
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Protocol` and
//! `X-Forwarded-Ssl`, one family or the other (`--forwarded-header`).
//!
//! Each proxy appends the address it received the connection from, so a list
//! reads client first, nearest proxy last, and anything left of a proxy's
//! entry may have been written by the client. The walk therefore starts at
//! the right and skips our own proxies (entries the allow list trusts); the
//! first entry it cannot vouch for is the client, and an entry that is no
//! address at all ends the walk with no answer rather than a guess.
//!
//! Most requests carry none of these fields, so [`resolve`] makes one pass
//! over the fields and never allocates: the right-to-left walk is done left to
//! right by remembering the right-most entry that would stop it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::allow_list::AllowList;

// The scheme the client used to reach the first proxy: what apps see.
pub use crate::app::Scheme;

impl Scheme {
    /// `http` or `https` in any case; anything else is not a scheme we serve.
    fn from_name(name: &[u8]) -> Option<Scheme> {
        if name.eq_ignore_ascii_case(b"https") {
            Some(Scheme::Https)
        } else if name.eq_ignore_ascii_case(b"http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }
}

/// Which fields the proxy in front writes (`--forwarded-header`); only
/// those are read. A proxy that writes `X-Forwarded-For` passes a client's
/// own `Forwarded` field on untouched (nginx does), so reading both would
/// let the client speak in the proxy's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// `X-Forwarded-For`, with `X-Forwarded-Proto`, `X-Forwarded-Protocol`
    /// and `X-Forwarded-Ssl` for the scheme (the default).
    XForwarded,
    /// `Forwarded` (RFC 7239), `for=` and `proto=`.
    Forwarded,
}

impl Fields {
    /// `--forwarded-header X-Forwarded-For` or `Forwarded`, in any case.
    pub fn parse(value: &str) -> Result<Fields, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Fields::XForwarded),
            "forwarded" => Ok(Fields::Forwarded),
            _ => Err(format!(
                "--forwarded-header {value}: name the header your proxy writes: X-Forwarded-For or Forwarded"
            )),
        }
    }
}

/// Whose forwarded fields are believed, and which fields
/// (`--forwarded-allow-ips`, `--forwarded-header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The proxies; a chain of them in the fields is walked past too.
    pub peers: AllowList,
    /// The family the proxies write.
    pub fields: Fields,
}

/// What the trusted proxies said; each `None` means: leave it as the connection says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolved {
    /// The client's address (IPv4-mapped addresses given as IPv4).
    pub client: Option<IpAddr>,
    /// The scheme the client used.
    pub scheme: Option<Scheme>,
}

/// Reads the client address and scheme from the forwarding fields of a
/// request that came from `peer`, believing them only if `trusted` allows
/// `peer`. `headers` are a request's header fields as sent (names in any
/// case; a field may repeat, and repeats are read as one list in order).
///
/// Only the `fields` family is read. With `Fields::Forwarded` the client
/// comes from `for=` and the scheme from the `proto=` of the right-most
/// element that a trusted proxy wrote (the client's element and those right
/// of it). With `Fields::XForwarded` the client comes from
/// `X-Forwarded-For`, and the scheme from the last `X-Forwarded-Proto`
/// value, else from `X-Forwarded-Protocol` (`ssl`, `https`, `http`), else
/// from `X-Forwarded-Ssl` (`on`, `off`): the first of these present
/// decides, and a value it does not know gives `None`, not the next.
pub fn resolve(
    peer: IpAddr,
    headers: &[(String, Vec<u8>)],
    trusted: &AllowList,
    fields: Fields,
) -> Resolved {
    if !trusted.allows(peer) {
        return Resolved::default();
    }
    resolve_from_trusted(headers, trusted, fields)
}

/// `resolve` for a peer trusted whatever its address: a unix socket's,
/// which only a local proxy with the file's permissions can reach (as
/// gunicorn trusts it). `trusted` still decides how far back the chain of
/// proxies in the headers is believed.
pub fn resolve_from_trusted(
    headers: &[(String, Vec<u8>)],
    trusted: &AllowList,
    fields: Fields,
) -> Resolved {
    let mut forwarded: Option<ForwardedWalk> = None;
    let mut forwarded_for = ClientWalk::default();
    let mut proto = None;
    let mut protocol = None;
    let mut ssl = None;
    for (name, value) in headers {
        let name = name.as_bytes();
        if fields == Fields::Forwarded {
            if name.eq_ignore_ascii_case(b"forwarded") {
                forwarded.get_or_insert_default().read(value, trusted);
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            for entry in list_items(value) {
                forwarded_for.push(node(entry), trusted);
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            proto = list_items(value).last().or(proto);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-protocol") {
            protocol = list_items(value).last().or(protocol);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-ssl") {
            ssl = list_items(value).last().or(ssl);
        }
    }
    let forwarded_scheme = match &forwarded {
        Some(ForwardedWalk {
            proto: Proto::Said(scheme),
            ..
        }) => Some(*scheme),
        _ => None,
    };
    let scheme = forwarded_scheme
        .or_else(|| proto.map(Scheme::from_name))
        .or_else(|| protocol.map(from_protocol))
        .or_else(|| ssl.map(from_ssl))
        .flatten();
    let client = match &forwarded {
        Some(walk) => walk.clients.client(),
        None => forwarded_for.client(),
    };
    Resolved { client, scheme }
}

/// `X-Forwarded-Protocol`: `ssl` (gunicorn's secure value) or a scheme name.
fn from_protocol(value: &[u8]) -> Option<Scheme> {
    if value.eq_ignore_ascii_case(b"ssl") {
        Some(Scheme::Https)
    } else {
        Scheme::from_name(value)
    }
}

/// `X-Forwarded-Ssl`: `on` (gunicorn's secure value) or `off`.
fn from_ssl(value: &[u8]) -> Option<Scheme> {
    if value.eq_ignore_ascii_case(b"on") {
        Some(Scheme::Https)
    } else if value.eq_ignore_ascii_case(b"off") {
        Some(Scheme::Http)
    } else {
        None
    }
}

/// The walk from the right over one list of addresses, fed left to right.
#[derive(Default)]
struct ClientWalk {
    /// The first entry, if it was trusted: the answer when every entry is.
    leftmost: Option<IpAddr>,
    /// The right-most entry so far that stops the walk: an address we do not
    /// trust (`Some`), or an entry that is not an address (`None`).
    stop: Option<Option<IpAddr>>,
}

impl ClientWalk {
    /// Adds the next entry (`None`: not an address); returns whether it
    /// stops the walk, i.e. was not written by a trusted proxy.
    fn push(&mut self, entry: Option<IpAddr>, trusted: &AllowList) -> bool {
        let entry = entry.map(|ip| ip.to_canonical());
        match entry {
            Some(ip) if trusted.allows(ip) => {
                if self.stop.is_none() && self.leftmost.is_none() {
                    self.leftmost = Some(ip);
                }
                false
            }
            _ => {
                self.stop = Some(entry);
                true
            }
        }
    }

    /// The client: where the walk stopped, or the left-most entry if nothing stopped it.
    fn client(&self) -> Option<IpAddr> {
        match self.stop {
            Some(entry) => entry,
            None => self.leftmost,
        }
    }
}

/// The walk over `Forwarded` elements: the `for=` walk, plus the `proto=`
/// to believe.
#[derive(Default)]
struct ForwardedWalk {
    clients: ClientWalk,
    proto: Proto,
}

/// The right-most `proto=` at or after the element where the walk stops so
/// far. Elements left of that one came from the client's side, so a `proto`
/// there is not believed.
#[derive(Default, Clone, Copy)]
enum Proto {
    /// No element since the stop has a `proto`.
    #[default]
    Unsaid,
    /// The last one said this (`None`: not http or https, or unreadable).
    Said(Option<Scheme>),
}

/// What one `Forwarded` element says; `None` fields were absent.
#[derive(Default)]
struct Element {
    /// `for=`: the address, or `None` if it is not one.
    node: Option<Option<IpAddr>>,
    /// `proto=`: the scheme, or `None` if it is not http or https.
    proto: Option<Option<Scheme>>,
}

impl ForwardedWalk {
    /// Reads one `Forwarded` field value. A malformed element counts as one
    /// whose `for` and `proto` are unreadable, and reading resumes after the
    /// next comma outside a quoted string.
    fn read(&mut self, value: &[u8], trusted: &AllowList) {
        let mut rest = value;
        loop {
            rest = match element(rest) {
                Ok((element, after)) => {
                    self.take(element, trusted);
                    after
                }
                Err(after) => {
                    let unreadable = Element {
                        node: Some(None),
                        proto: Some(None),
                    };
                    self.take(unreadable, trusted);
                    after
                }
            };
            match rest.split_first() {
                Some((b',', after)) => rest = after,
                _ => return,
            }
        }
    }

    fn take(&mut self, element: Element, trusted: &AllowList) {
        if let Some(node) = element.node
            && self.clients.push(node, trusted)
        {
            self.proto = Proto::Unsaid;
        }
        if let Some(scheme) = element.proto {
            self.proto = Proto::Said(scheme);
        }
    }
}

/// Parses one element (`for=...;proto=...`) at the start of `s`, returning
/// it and the rest starting at the comma or end. On a syntax error returns
/// the rest from the next comma outside a quoted string.
fn element(s: &[u8]) -> Result<(Element, &[u8]), &[u8]> {
    let mut element = Element::default();
    let mut i = 0;
    loop {
        i = skip_ows(s, i);
        match s.get(i) {
            None | Some(b',') => return Ok((element, &s[i..])),
            Some(b';') => {
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        let Some((name, value, after)) = pair(s, i) else {
            return Err(skip_to_comma(s, i));
        };
        // RFC 7239 §4: a parameter must not occur twice in one element.
        let duplicate = if name.eq_ignore_ascii_case(b"for") {
            element.node.replace(value.text().and_then(node)).is_some()
        } else if name.eq_ignore_ascii_case(b"proto") {
            element
                .proto
                .replace(value.text().and_then(Scheme::from_name))
                .is_some()
        } else {
            false
        };
        i = skip_ows(s, after);
        match s.get(i) {
            _ if duplicate => return Err(skip_to_comma(s, i)),
            None | Some(b',') => {}
            Some(b';') => i += 1,
            Some(_) => return Err(skip_to_comma(s, i)),
        }
    }
}

/// A parameter value: a token, or the inside of a quoted string.
enum Value<'a> {
    Token(&'a [u8]),
    Quoted { inner: &'a [u8], has_escapes: bool },
}

impl<'a> Value<'a> {
    /// The value's text, or `None` for a quoted string with backslash escapes:
    /// no address or scheme needs one, and undoing them would allocate.
    fn text(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Token(text) => Some(text),
            Value::Quoted { inner, has_escapes } => (!has_escapes).then_some(inner),
        }
    }
}

/// Parses `token "=" (token / quoted-string)` at `s[i..]`; returns the name,
/// the value and the index after it, or `None` if it is not one.
fn pair(s: &[u8], i: usize) -> Option<(&[u8], Value<'_>, usize)> {
    let name_end = token_end(s, i);
    if name_end == i || s.get(name_end) != Some(&b'=') {
        return None;
    }
    let start = name_end + 1;
    if s.get(start) != Some(&b'"') {
        let end = token_end(s, start);
        return (end > start).then(|| (&s[i..name_end], Value::Token(&s[start..end]), end));
    }
    let mut j = start + 1;
    let mut has_escapes = false;
    loop {
        match s.get(j)? {
            b'"' => break,
            b'\\' => {
                has_escapes = true;
                j += 2;
            }
            _ => j += 1,
        }
    }
    let inner = &s[start + 1..j];
    Some((&s[i..name_end], Value::Quoted { inner, has_escapes }, j + 1))
}

/// The index after the run of token characters (RFC 9110 `tchar`) at `s[i..]`.
fn token_end(s: &[u8], i: usize) -> usize {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    i + s[i..].iter().take_while(|b| is_tchar(b)).count()
}

fn skip_ows(s: &[u8], i: usize) -> usize {
    i + s[i..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()
}

/// `s` from the first comma at or after `i` that is outside a quoted
/// string, or empty. `i` must be outside a quoted string.
fn skip_to_comma(s: &[u8], i: usize) -> &[u8] {
    let mut in_quotes = false;
    let mut j = i;
    while let Some(&b) = s.get(j) {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\\' if in_quotes => j += 1,
            b',' if !in_quotes => return &s[j..],
            _ => {}
        }
        j += 1;
    }
    &[]
}

/// The non-empty items of a comma-separated field value, trimmed of spaces and tabs.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

/// A node's address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`; `None` for anything else
/// (`unknown`, an obfuscated `_name`, garbage). The port may be numeric or
/// obfuscated (`_abc`, RFC 7239 §6.3); it is checked, then dropped.
fn node(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (v4, port) = text.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// RFC 7239 `node-port`: 1 to 5 digits up to 65535, or `_` and 1*(ALPHA / DIGIT / "." / "_" / "-").
fn is_port(text: &str) -> bool {
    if let Some(name) = text.strip_prefix('_') {
        return !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    }
    text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    fn allow(value: &str) -> AllowList {
        AllowList::parse("--forwarded-allow-ips", value).expect(value)
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The family a test's fields are in: `Forwarded` if it has one.
    fn family(headers: &[(String, Vec<u8>)]) -> Fields {
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("forwarded"))
        {
            Fields::Forwarded
        } else {
            Fields::XForwarded
        }
    }

    /// `resolve`, reading the family the fields are in.
    fn resolve_as_sent(
        peer: IpAddr,
        headers: &[(String, Vec<u8>)],
        trusted: &AllowList,
    ) -> Resolved {
        resolve(peer, headers, trusted, family(headers))
    }

    /// Resolves `pairs` from 127.0.0.1 with the default allow list.
    fn from_loopback(pairs: &[(&str, &str)]) -> Resolved {
        resolve_as_sent(ip("127.0.0.1"), &fields(pairs), &allow("127.0.0.1,::1"))
    }

    fn client(pairs: &[(&str, &str)]) -> Option<IpAddr> {
        from_loopback(pairs).client
    }

    fn scheme(pairs: &[(&str, &str)]) -> Option<Scheme> {
        from_loopback(pairs).scheme
    }

    fn some(text: &str) -> Option<IpAddr> {
        Some(ip(text))
    }

    #[test]
    fn a_spoofed_entry_left_of_the_proxys_is_ignored() {
        let headers = fields(&[("X-Forwarded-For", "6.6.6.6, 203.0.113.9")]);
        let resolved = resolve_as_sent(ip("127.0.0.1"), &headers, &allow("127.0.0.1,::1"));
        assert_eq!(resolved.client, some("203.0.113.9"));
    }

    #[test]
    fn nothing_is_believed_from_an_untrusted_peer() {
        let headers = fields(&[
            ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=1.2.3.4;proto=https"),
        ]);
        for peer in ["203.0.113.7", "10.0.0.1", "::2"] {
            let resolved = resolve_as_sent(ip(peer), &headers, &allow("127.0.0.1,::1"));
            assert_eq!(resolved, Resolved::default(), "{peer}");
        }
        assert_eq!(
            resolve_as_sent(ip("1.2.3.4"), &headers, &allow("")),
            Resolved::default()
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_skipped() {
        let headers = fields(&[("X-Forwarded-For", "203.0.113.9, 10.0.0.2")]);
        let resolved = resolve_as_sent(ip("10.0.0.1"), &headers, &allow("10.0.0.0/8"));
        assert_eq!(resolved.client, some("203.0.113.9"));
        let headers = fields(&[(
            "X-Forwarded-For",
            "6.6.6.6, 203.0.113.9, 10.0.0.3, 10.0.0.2",
        )]);
        let resolved = resolve_as_sent(ip("10.0.0.1"), &headers, &allow("10.0.0.0/8"));
        assert_eq!(resolved.client, some("203.0.113.9"));
    }

    #[test]
    fn when_every_entry_is_trusted_the_leftmost_is_the_client() {
        let headers = fields(&[("X-Forwarded-For", "10.0.0.3, 10.0.0.2")]);
        let resolved = resolve_as_sent(ip("10.0.0.1"), &headers, &allow("10.0.0.0/8"));
        assert_eq!(resolved.client, some("10.0.0.3"));
        assert_eq!(
            client(&[("X-Forwarded-For", "127.0.0.1")]),
            some("127.0.0.1")
        );
    }

    #[test]
    fn any_trusts_the_peer_and_takes_the_leftmost() {
        let headers = fields(&[("X-Forwarded-For", "6.6.6.6, 203.0.113.9")]);
        let resolved = resolve_as_sent(ip("198.51.100.1"), &headers, &allow("*"));
        assert_eq!(resolved.client, some("6.6.6.6"));
    }

    #[test]
    fn repeated_fields_are_one_list_in_order() {
        let pairs = [
            ("X-Forwarded-For", "6.6.6.6"),
            ("Accept", "*/*"),
            ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
        ];
        assert_eq!(client(&pairs), some("203.0.113.9"));
        let pairs = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-FORWARDED-FOR", "6.6.6.6"),
        ];
        assert_eq!(client(&pairs), some("6.6.6.6"));
    }

    #[test]
    fn an_entry_that_is_not_an_address_stops_the_walk() {
        for value in [
            "unknown",
            "203.0.113.9, unknown",
            "203.0.113.9, garbage, 127.0.0.1",
            "203.0.113.9, 1.2.3.4:http",
            "203.0.113.9, [::1",
        ] {
            assert_eq!(client(&[("X-Forwarded-For", value)]), None, "{value}");
        }
        assert_eq!(
            client(&[("X-Forwarded-For", "unknown, 203.0.113.9")]),
            some("203.0.113.9")
        );
    }

    #[test]
    fn address_forms() {
        for (value, expected) in [
            ("203.0.113.9", "203.0.113.9"),
            ("203.0.113.9:5678", "203.0.113.9"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
            ("[::ffff:203.0.113.9]:1", "203.0.113.9"),
            ("203.0.113.9:_port", "203.0.113.9"),
        ] {
            assert_eq!(
                client(&[("X-Forwarded-For", value)]),
                some(expected),
                "{value}"
            );
        }
        for value in [
            "203.0.113.9:65536",
            "203.0.113.9:",
            "[2001:db8::1]4711",
            "[203.0.113.9]",
            "2001:db8::1]",
            "fe80::1%eth0",
            "203.0.113.9:_",
            "_hidden",
            "203.0.113.9 203.0.113.10",
        ] {
            assert_eq!(client(&[("X-Forwarded-For", value)]), None, "{value}");
        }
    }

    #[test]
    fn empty_items_and_spaces_are_skipped() {
        assert_eq!(
            client(&[("X-Forwarded-For", " ,203.0.113.9 ,\t, ")]),
            some("203.0.113.9")
        );
        assert_eq!(client(&[("X-Forwarded-For", "")]), None);
    }

    #[test]
    fn forwarded_for_the_rfc_7239_examples() {
        for (value, expected) in [
            ("for=\"_gazonk\"", None),
            (
                "For=\"[2001:db8:cafe::17]:4711\"",
                some("2001:db8:cafe::17"),
            ),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                some("192.0.2.60"),
            ),
            ("for=192.0.2.43, for=198.51.100.17", some("198.51.100.17")),
            ("for=unknown", None),
            ("for=\"192.0.2.43:47011\"", some("192.0.2.43")),
            ("for=\"[2001:db8:cafe::17]\"", some("2001:db8:cafe::17")),
        ] {
            assert_eq!(client(&[("Forwarded", value)]), expected, "{value}");
        }
    }

    #[test]
    fn forwarded_is_walked_from_the_right_like_x_forwarded_for() {
        let value = "for=6.6.6.6, for=203.0.113.9;proto=https, for=10.0.0.2";
        let headers = fields(&[("Forwarded", value)]);
        let resolved = resolve_as_sent(ip("10.0.0.1"), &headers, &allow("10.0.0.0/8"));
        assert_eq!(resolved.client, some("203.0.113.9"));
        assert_eq!(resolved.scheme, Some(Scheme::Https));
        let pairs = [
            ("Forwarded", "for=6.6.6.6"),
            ("forwarded", "for=203.0.113.9"),
        ];
        assert_eq!(client(&pairs), some("203.0.113.9"));
        assert_eq!(
            client(&[("Forwarded", "for=203.0.113.9, for=unknown")]),
            None
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_even_without_for() {
        let both = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=198.51.100.4"),
        ];
        assert_eq!(client(&both), some("198.51.100.4"));
        let no_for = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "proto=https"),
        ];
        assert_eq!(client(&no_for), None);
        assert_eq!(scheme(&no_for), Some(Scheme::Https));
    }

    #[test]
    fn forwarded_syntax_is_read_leniently_where_harmless() {
        for value in [
            "for=203.0.113.9",
            "FOR=203.0.113.9",
            "by=10.0.0.1;for=203.0.113.9;host=example.com",
            "for=203.0.113.9 ; proto=https",
            ";;for=203.0.113.9;",
            " , for=203.0.113.9 ,",
            "host=\"a,b;c\";for=203.0.113.9",
            "ext=\"q\\\"uote\";for=203.0.113.9",
        ] {
            assert_eq!(
                client(&[("Forwarded", value)]),
                some("203.0.113.9"),
                "{value}"
            );
        }
    }

    #[test]
    fn malformed_forwarded_elements_count_as_unreadable() {
        for value in [
            "for",
            "for=",
            "for 203.0.113.9",
            "for=203.0.113.9 x",
            "for=\"203.0.113.9",
            "for=203.0.113.9;for=198.51.100.4",
            "for=[2001:db8::1]",
            "for=\"203.0.113\\.9\"",
            "=203.0.113.9",
            "for=6.6.6.6, for=\"203.0.113.9, for=198.51.100.4",
        ] {
            assert_eq!(client(&[("Forwarded", value)]), None, "{value}");
        }
        // A malformed element on the client's side does not hide the proxy's.
        for value in ["junk, for=203.0.113.9", "for=\"a,b\" x, for=203.0.113.9"] {
            assert_eq!(
                client(&[("Forwarded", value)]),
                some("203.0.113.9"),
                "{value}"
            );
        }
        let split = [
            ("Forwarded", "for=\"6.6.6.6"),
            ("Forwarded", "for=203.0.113.9"),
        ];
        assert_eq!(client(&split), some("203.0.113.9"));
    }

    #[test]
    fn forwarded_proto_from_the_rightmost_element_a_trusted_proxy_wrote() {
        assert_eq!(
            scheme(&[("Forwarded", "for=203.0.113.9;proto=https")]),
            Some(Scheme::Https)
        );
        assert_eq!(
            scheme(&[("Forwarded", "for=203.0.113.9;PROTO=HTTP")]),
            Some(Scheme::Http)
        );
        assert_eq!(
            scheme(&[("Forwarded", "proto=http, proto=\"https\"")]),
            Some(Scheme::Https)
        );
        assert_eq!(scheme(&[("Forwarded", "proto=https, for=127.0.0.2")]), None);
        // The client sent the first element; our proxy wrote the second without proto.
        let spoof = [("Forwarded", "for=6.6.6.6;proto=https, for=203.0.113.9")];
        assert_eq!(scheme(&spoof), None);
        // An unreadable element resets what was said before it.
        let hidden = [("Forwarded", "for=203.0.113.9;proto=https;for=1.2.3.4")];
        assert_eq!(scheme(&hidden), None);
        // A proto on the trusted side is kept when a trusted hop adds none.
        let headers = fields(&[("Forwarded", "for=203.0.113.9;proto=https, for=10.0.0.2")]);
        let resolved = resolve_as_sent(ip("10.0.0.1"), &headers, &allow("10.0.0.0/8"));
        assert_eq!(resolved.scheme, Some(Scheme::Https));
    }

    #[test]
    fn unknown_forwarded_proto_is_none_and_x_forwarded_proto_is_not_read_beside_it() {
        let pairs = [
            ("Forwarded", "for=203.0.113.9;proto=wss"),
            ("X-Forwarded-Proto", "https"),
        ];
        assert_eq!(scheme(&pairs), None);
        let pairs = [
            ("Forwarded", "for=203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
        ];
        assert_eq!(scheme(&pairs), None);
    }

    #[test]
    fn x_forwarded_proto_last_value_wins() {
        assert_eq!(
            scheme(&[("X-Forwarded-Proto", "https")]),
            Some(Scheme::Https)
        );
        assert_eq!(
            scheme(&[("x-forwarded-proto", "HTTPS")]),
            Some(Scheme::Https)
        );
        assert_eq!(
            scheme(&[("X-Forwarded-Proto", "https, http")]),
            Some(Scheme::Http)
        );
        let pairs = [
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Proto", "https"),
        ];
        assert_eq!(scheme(&pairs), Some(Scheme::Https));
        let pairs = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", " ")];
        assert_eq!(scheme(&pairs), Some(Scheme::Https));
        assert_eq!(scheme(&[("X-Forwarded-Proto", "ftp")]), None);
        let pairs = [("X-Forwarded-Proto", "ftp"), ("X-Forwarded-Ssl", "on")];
        assert_eq!(scheme(&pairs), None);
    }

    #[test]
    fn gunicorn_secure_scheme_headers() {
        assert_eq!(
            scheme(&[("X-Forwarded-Protocol", "ssl")]),
            Some(Scheme::Https)
        );
        assert_eq!(
            scheme(&[("X-Forwarded-Protocol", "SSL")]),
            Some(Scheme::Https)
        );
        assert_eq!(
            scheme(&[("X-Forwarded-Protocol", "http")]),
            Some(Scheme::Http)
        );
        assert_eq!(scheme(&[("X-Forwarded-Protocol", "tcp")]), None);
        assert_eq!(scheme(&[("X-Forwarded-Ssl", "on")]), Some(Scheme::Https));
        assert_eq!(scheme(&[("X-Forwarded-Ssl", "off")]), Some(Scheme::Http));
        assert_eq!(scheme(&[("X-Forwarded-Ssl", "yes")]), None);
        let pairs = [("X-Forwarded-Ssl", "on"), ("X-Forwarded-Proto", "http")];
        assert_eq!(scheme(&pairs), Some(Scheme::Http));
    }

    #[test]
    fn no_forwarding_fields_resolve_to_nothing() {
        assert_eq!(from_loopback(&[]), Resolved::default());
        let plain = [
            ("Host", "example.com"),
            ("Accept", "*/*"),
            ("X-Forwarded-Host", "a"),
        ];
        assert_eq!(from_loopback(&plain), Resolved::default());
    }

    #[test]
    fn a_mapped_peer_is_judged_as_ipv4() {
        let headers = fields(&[("X-Forwarded-For", "203.0.113.9")]);
        let resolved = resolve_as_sent(ip("::ffff:127.0.0.1"), &headers, &allow("127.0.0.1"));
        assert_eq!(resolved.client, some("203.0.113.9"));
    }

    #[test]
    fn a_mapped_entry_is_trusted_as_ipv4() {
        let headers = fields(&[("X-Forwarded-For", "203.0.113.9, ::ffff:10.0.0.2")]);
        let resolved = resolve_as_sent(ip("10.0.0.1"), &headers, &allow("10.0.0.0/8"));
        assert_eq!(resolved.client, some("203.0.113.9"));
    }

    #[test]
    fn scheme_names() {
        assert_eq!(Scheme::Http.as_str(), "http");
        assert_eq!(Scheme::Https.as_str(), "https");
    }

    #[test]
    fn only_the_family_the_proxy_writes_is_read() {
        // nginx appends X-Forwarded-For and passes the client's own
        // Forwarded on: it must not speak for the proxy.
        let headers = fields(&[
            ("Forwarded", "for=10.1.2.3;proto=https"),
            ("X-Forwarded-For", "203.0.113.5"),
        ]);
        let trusted = allow("127.0.0.1");
        let xff = resolve(ip("127.0.0.1"), &headers, &trusted, Fields::XForwarded);
        assert_eq!(xff.client, Some(ip("203.0.113.5")));
        assert_eq!(xff.scheme, None);
        // And the other way round.
        let headers = fields(&[
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=203.0.113.5"),
        ]);
        let fwd = resolve(ip("127.0.0.1"), &headers, &trusted, Fields::Forwarded);
        assert_eq!(fwd.client, Some(ip("203.0.113.5")));
        assert_eq!(fwd.scheme, None);
    }

    #[test]
    fn the_header_name_is_checked() {
        assert_eq!(Fields::parse("X-Forwarded-For"), Ok(Fields::XForwarded));
        assert_eq!(Fields::parse("forwarded"), Ok(Fields::Forwarded));
        let err = Fields::parse("X-Real-IP").expect_err("unknown");
        assert!(err.starts_with("--forwarded-header X-Real-IP:"), "{err}");
    }
}
