//! Which peers are trusted: a list of IP addresses and CIDR networks.
//!
//! Two flags take one: `--forwarded-allow-ips` (whose `X-Forwarded-*` and
//! `Forwarded` fields are believed; gunicorn's flag and default,
//! `127.0.0.1,::1`) and `--proxy-allow-from` (who may send a PROXY protocol
//! header; `127.0.0.1`).
//!
//! A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses
//! (`::ffff:1.2.3.4`), so such an address is always judged as the IPv4 address
//! it carries: an entry `1.2.3.4` allows the peer `::ffff:1.2.3.4`, and an
//! entry `::ffff:1.2.3.4` (stored as `1.2.3.4`) allows the peer `1.2.3.4`.
//! An IPv6 network wider than the mapped range (`::/0`) does not cover IPv4
//! peers: it means every IPv6 address, and `*` means everyone.

use std::fmt;
use std::net::IpAddr;

/// Addresses and networks, parsed from a comma-separated flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// `*` was given: every peer is allowed. `nets` is then empty.
    any: bool,
    /// The entries in the order given; IPv4-mapped entries stored as IPv4.
    nets: Vec<Net>,
}

/// One entry: a network whose host bits are zero; a single address is a
/// network of full length (/32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// The hint every malformed entry gets.
const ENTRY_SHAPE: &str =
    "give addresses or CIDR networks (10.0.0.0/8) separated by commas, or * for any";

impl AllowList {
    /// Parses comma-separated addresses and CIDR networks (`"127.0.0.1, ::1"`,
    /// `"10.0.0.0/8,192.168.1.5"`, `"*"` for any peer). Empty entries are
    /// skipped, so an empty value gives a list that allows nobody.
    ///
    /// `flag` names the flag in the error, which names the entry and the fix:
    /// `--forwarded-allow-ips 10.0.0.300: not an IP address or network; give
    /// addresses or CIDR networks (10.0.0.0/8) separated by commas, or * for
    /// any`. A network with host bits set (`10.0.0.1/8`) is refused rather
    /// than masked, since it is usually a typo for a single address or for a
    /// different network; the error names the network it would mean.
    pub fn parse(flag: &str, value: &str) -> Result<AllowList, String> {
        let mut list = AllowList {
            any: false,
            nets: Vec::new(),
        };
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.any = true;
            } else {
                let net = Net::parse(entry).map_err(|why| format!("{flag} {entry}: {why}"))?;
                list.nets.push(net);
            }
        }
        if list.any {
            list.nets.clear();
        }
        Ok(list)
    }

    /// Whether `ip` is one of the listed addresses or inside a listed network.
    /// An IPv4-mapped IPv6 address is judged as its IPv4 address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.any || self.nets.iter().any(|net| net.contains(ip))
    }

    /// Whether the list is `*`, allowing every peer.
    pub fn is_any(&self) -> bool {
        self.any
    }
}

/// The canonical form: `*`, or the entries joined by commas without spaces,
/// single addresses without a prefix (`127.0.0.1,::1,10.0.0.0/8`); empty for
/// a list that allows nobody. Parsing it gives the same list back.
impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("*");
        }
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", net.addr)?;
            if net.prefix != full_prefix(net.addr) {
                write!(f, "/{}", net.prefix)?;
            }
        }
        Ok(())
    }
}

impl Net {
    /// Parses `addr` or `addr/prefix`; the error is the reason and the fix,
    /// without the entry (the caller adds it).
    fn parse(entry: &str) -> Result<Net, String> {
        let (addr_text, prefix_text) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr_text
            .trim_end()
            .parse()
            .map_err(|_| format!("not an IP address or network; {ENTRY_SHAPE}"))?;
        let max = full_prefix(addr);
        let prefix = match prefix_text.map(str::trim_start) {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                    return Err(format!(
                        "prefix \"{p}\" is not a number from 0 to {max} (the bits in an {family} address)"
                    ));
                }
            },
        };
        let network = masked(addr, prefix);
        if network != addr {
            return Err(format!(
                "host bits are set after /{prefix}; write the network as {network}/{prefix}, or give the address alone"
            ));
        }
        Ok(Net::without_mapping(addr, prefix))
    }

    /// Stores a network inside `::ffff:0:0/96` as the IPv4 network it maps,
    /// so that it is compared with IPv4 peers.
    fn without_mapping(addr: IpAddr, prefix: u8) -> Net {
        if let IpAddr::V6(v6) = addr
            && prefix >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Net {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            };
        }
        Net { addr, prefix }
    }

    /// Whether `ip` (already canonical) lies in this network. An address of
    /// the other family never does.
    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && masked(ip, self.prefix) == self.addr
    }
}

/// The prefix length of a single address of `addr`'s family.
fn full_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with every bit after the first `prefix` cleared; a `prefix` at
/// or beyond the family's length leaves it unchanged.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    // checked_shl gives None for a shift of the whole width, i.e. prefix 0,
    // whose mask is all zeros.
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(value: &str) -> AllowList {
        AllowList::parse("--forwarded-allow-ips", value).expect(value)
    }

    fn error(value: &str) -> String {
        AllowList::parse("--forwarded-allow-ips", value).expect_err(value)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    fn allows(value: &str, peer: &str) -> bool {
        list(value).allows(ip(peer))
    }

    #[test]
    fn the_default_allows_loopback_only() {
        let l = list("127.0.0.1,::1");
        assert!(l.allows(ip("127.0.0.1")));
        assert!(l.allows(ip("::1")));
        assert!(!l.allows(ip("127.0.0.2")));
        assert!(!l.allows(ip("10.0.0.1")));
        assert!(!l.allows(ip("::2")));
        assert!(!l.is_any());
    }

    #[test]
    fn ipv4_networks_match_by_prefix() {
        assert!(allows("10.0.0.0/8", "10.255.1.2"));
        assert!(!allows("10.0.0.0/8", "11.0.0.0"));
        assert!(allows("192.168.1.0/24", "192.168.1.255"));
        assert!(!allows("192.168.1.0/24", "192.168.2.0"));
        assert!(allows("172.16.0.0/12", "172.31.255.255"));
        assert!(!allows("172.16.0.0/12", "172.32.0.0"));
        assert!(allows("0.0.0.0/0", "203.0.113.9"));
        assert!(allows("192.168.1.5/32", "192.168.1.5"));
        assert!(!allows("192.168.1.5/32", "192.168.1.6"));
    }

    #[test]
    fn ipv6_networks_match_by_prefix() {
        assert!(allows("2001:db8::/32", "2001:db8:ffff::1"));
        assert!(!allows("2001:db8::/32", "2001:db9::1"));
        assert!(allows("fd00::/8", "fdab:1::9"));
        assert!(allows("2001:db8::/127", "2001:db8::1"));
        assert!(!allows("2001:db8::/127", "2001:db8::2"));
        assert!(allows("::/0", "2001:db8::1"));
    }

    #[test]
    fn families_do_not_mix() {
        assert!(!allows("0.0.0.0/0", "::1"));
        assert!(!allows("::/0", "10.0.0.1"));
        assert!(!allows("::/0", "::ffff:10.0.0.1"));
        assert!(!allows("::1", "127.0.0.1"));
    }

    #[test]
    fn mapped_peers_are_judged_as_ipv4() {
        assert!(allows("127.0.0.1", "::ffff:127.0.0.1"));
        assert!(allows("10.0.0.0/8", "::ffff:10.1.2.3"));
        assert!(!allows("10.0.0.0/8", "::ffff:11.1.2.3"));
    }

    #[test]
    fn mapped_entries_are_judged_as_ipv4() {
        assert!(allows("::ffff:127.0.0.1", "127.0.0.1"));
        assert!(allows("::ffff:127.0.0.1", "::ffff:127.0.0.1"));
        assert!(allows("::ffff:10.0.0.0/104", "10.9.8.7"));
        assert!(!allows("::ffff:10.0.0.0/104", "11.0.0.0"));
        assert!(allows("::ffff:0:0/96", "203.0.113.9"));
        assert_eq!(list("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn star_allows_everyone() {
        let l = list("*");
        assert!(l.is_any());
        assert!(l.allows(ip("203.0.113.9")));
        assert!(l.allows(ip("2001:db8::1")));
        assert_eq!(list("10.0.0.1, *").to_string(), "*");
        assert_eq!(list("*, 10.0.0.1"), list("*"));
    }

    #[test]
    fn empty_entries_are_skipped_and_an_empty_list_allows_nobody() {
        assert_eq!(list(" 127.0.0.1 , ,::1,"), list("127.0.0.1,::1"));
        for value in ["", " ", ",", " , ,"] {
            let l = list(value);
            assert!(!l.allows(ip("127.0.0.1")), "{value:?}");
            assert!(!l.is_any());
            assert_eq!(l.to_string(), "");
        }
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for (given, shown) in [
            ("127.0.0.1, ::1", "127.0.0.1,::1"),
            ("10.0.0.0/8,192.168.1.5", "10.0.0.0/8,192.168.1.5"),
            ("192.168.1.5/32", "192.168.1.5"),
            ("2001:0db8:0000::/32", "2001:db8::/32"),
            ("::1/128", "::1"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("*", "*"),
        ] {
            assert_eq!(list(given).to_string(), shown, "{given}");
            assert_eq!(list(shown), list(given), "{shown}");
        }
    }

    #[test]
    fn tolerates_spaces_around_the_slash() {
        assert_eq!(list("10.0.0.0 / 8"), list("10.0.0.0/8"));
    }

    #[test]
    fn rejects_what_is_not_an_address_naming_flag_entry_and_fix() {
        assert_eq!(
            error("127.0.0.1,10.0.0.300"),
            "--forwarded-allow-ips 10.0.0.300: not an IP address or network; give addresses or \
             CIDR networks (10.0.0.0/8) separated by commas, or * for any"
        );
        for bad in [
            "localhost",
            "10.0.0",
            "010.0.0.1",
            "[::1]",
            "127.0.0.1:80",
            "1.2.3.4 5.6.7.8",
            "**",
            "/8",
            "::1%eth0",
        ] {
            assert!(error(bad).contains("not an IP address or network"), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert_eq!(
            error("10.0.0.0/33"),
            "--forwarded-allow-ips 10.0.0.0/33: prefix \"33\" is not a number from 0 to 32 \
             (the bits in an IPv4 address)"
        );
        assert!(error("2001:db8::/129").contains("from 0 to 128 (the bits in an IPv6 address)"));
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/x",
            "::/256",
        ] {
            assert!(error(bad).contains("prefix"), "{bad}");
        }
    }

    #[test]
    fn rejects_host_bits_naming_the_network() {
        assert_eq!(
            error("10.0.0.1/8"),
            "--forwarded-allow-ips 10.0.0.1/8: host bits are set after /8; write the network as \
             10.0.0.0/8, or give the address alone"
        );
        assert!(error("2001:db8::1/32").contains("as 2001:db8::/32"));
        assert!(error("192.168.1.5/0").contains("as 0.0.0.0/0"));
    }

    #[test]
    fn the_flag_name_is_the_callers() {
        let e = AllowList::parse("--proxy-allow-from", "nope").unwrap_err();
        assert!(e.starts_with("--proxy-allow-from nope: "), "{e}");
    }
}
