//! Where a request came from: the client address, and the block of addresses one client
//! can draw from, which failed log-ins and connections are counted by.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv6Net};

/// The addresses one client may be taken to control: an IPv4 address (an IPv4-mapped IPv6
/// address is its IPv4 address), or the IPv6 network of a configured prefix length holding
/// the address. A subscriber is routinely given a whole /64 (or more) and draws addresses from
/// it at will, so counting IPv6 failures per address would let one client rotate through its
/// /64 and never reach a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceBlock {
    V4(Ipv4Addr),
    V6(Ipv6Net),
}

impl SourceBlock {
    /// The block of `ip` when IPv6 clients are counted per `/ipv6_prefix` (at most 128: a
    /// longer prefix counts as 128, one address).
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> SourceBlock {
        match ip {
            IpAddr::V4(v4) => SourceBlock::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceBlock::V4(v4),
                None => SourceBlock::V6(Ipv6Net::new_assert(v6, ipv6_prefix.min(128)).trunc()),
            },
        }
    }

    /// The block's first address (the IPv4 address itself).
    pub fn first(&self) -> IpAddr {
        match self {
            SourceBlock::V4(v4) => IpAddr::V4(*v4),
            SourceBlock::V6(net) => IpAddr::V6(net.network()),
        }
    }
}

/// An IPv4 address as itself, an IPv6 block as `network/prefix`.
impl std::fmt::Display for SourceBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceBlock::V4(v4) => v4.fmt(f),
            SourceBlock::V6(net) => net.fmt(f),
        }
    }
}

/// The address a request came from: the peer, unless the peer is a trusted proxy, in which
/// case the `X-Forwarded-For` chain is walked from the right (the hop the proxy itself added)
/// past every trusted proxy to the first address that is not one. An entry is an address, bare
/// or with the port some proxies add (`203.0.113.9:4711`, `[2001:db8::1]:4711`); an entry that
/// is not one ends the walk: nothing left of it can be believed.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a http::HeaderValue>,
    trusted: &[IpNet],
) -> IpAddr {
    // An IPv4 address written as IPv4-mapped IPv6 (`::ffff:10.0.0.5`, as a dual-stack socket
    // or a proxy may write it) is that IPv4 address, for trust as for counting.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop_address(hop).map(|ip| ip.to_canonical()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The address of one `X-Forwarded-For` entry: `IPv4`, `IPv6`, `[IPv6]`, `IPv4:port` or
/// `[IPv6]:port` (the port is dropped: it says nothing about who the client is). Anything else,
/// an unbracketed IPv6 address with a port included, is not an address.
fn hop_address(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (v4, port) = hop.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A decimal TCP port, 0 to 65535.
fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> Vec<http::HeaderValue> {
        values
            .iter()
            .map(|v| http::HeaderValue::from_str(v).unwrap())
            .collect()
    }

    #[test]
    fn an_ipv6_address_is_counted_by_its_prefix_and_an_ipv4_one_alone() {
        let block = |s: &str, prefix: u8| SourceBlock::of(ip(s), prefix).to_string();
        for (addr, prefix, want) in [
            ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
            ("2001:db8:1:2ff::1", 56, "2001:db8:1:200::/56"),
            ("2001:db8::1", 128, "2001:db8::1/128"),
            ("192.0.2.7", 64, "192.0.2.7"),
            ("192.0.2.8", 64, "192.0.2.8"),
            // IPv4-mapped IPv6 is the IPv4 address it maps.
            ("::ffff:192.0.2.7", 64, "192.0.2.7"),
        ] {
            assert_eq!(block(addr, prefix), want, "{addr}/{prefix}");
        }
        assert_eq!(
            SourceBlock::of(ip("2001:db8:1:2::9"), 64).first(),
            ip("2001:db8:1:2::")
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["203.0.113.9"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.7"), h.iter(), &trusted),
            ip("198.51.100.7")
        );
        // A trusted proxy's is believed.
        assert_eq!(
            client_ip(ip("10.1.2.3"), h.iter(), &trusted),
            ip("203.0.113.9")
        );
        // No proxies configured: never believed.
        assert_eq!(client_ip(ip("10.1.2.3"), h.iter(), &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged the leftmost entry; the proxy chain appended the real ones.
        let h = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), h.iter(), &trusted),
            ip("203.0.113.9")
        );
        // Garbage ends the walk at the last address believed.
        let h = xff(&["1.1.1.1, not-an-ip, 10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), h.iter(), &trusted),
            ip("10.0.0.5")
        );
        // No header from a trusted proxy: the proxy is the source.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff(&[]).iter(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address_for_trust_and_counting() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        for (peer, chain, want) in [
            // A trusted proxy written as IPv4-mapped in the chain is walked past (a black-box
            // finding: it ended the walk, and the proxy became the client).
            ("127.0.0.1", "203.0.113.9, ::ffff:127.0.0.1", "203.0.113.9"),
            // The peer itself, as a dual-stack socket reports it.
            ("::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"),
            // A client written that way is counted as its IPv4 address.
            ("127.0.0.1", "::ffff:203.0.113.9", "203.0.113.9"),
            ("::ffff:198.51.100.1", "203.0.113.9", "198.51.100.1"),
        ] {
            assert_eq!(
                client_ip(ip(peer), xff(&[chain]).iter(), &trusted),
                ip(want),
                "{peer} / {chain}"
            );
        }
    }

    #[test]
    fn a_forwarded_address_with_a_port_counts_as_its_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = |v: &str| client_ip(ip("10.0.0.1"), xff(&[v]).iter(), &trusted);
        for (hop, want) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("203.0.113.9", "203.0.113.9"),
            ("2001:db8::1", "2001:db8::1"),
            // The walk goes on past a trusted proxy written with a port.
            ("198.51.100.4:1, 10.0.0.5:443", "198.51.100.4"),
        ] {
            assert_eq!(client(hop), ip(want), "{hop}");
        }
        // What is still not an address ends the walk as before: the proxy stays the source.
        for hop in [
            "203.0.113.9:",
            "203.0.113.9:70000",
            "203.0.113.9:+1",
            "203.0.113.9:1:2",
            "2001:db8::1:4711:x",
            "[2001:db8::1]4711",
            "[2001:db8::1]:",
            "[203.0.113.9]:1",
            "[2001:db8::1",
            "host.example:80",
            "unknown",
        ] {
            assert_eq!(client(hop), ip("10.0.0.1"), "{hop}");
        }
    }
}
