//! Where a request came from.

use std::net::IpAddr;

use ipnet::IpNet;

/// The address a request came from: the peer, unless the peer is a trusted proxy, in which
/// case the `X-Forwarded-For` chain is walked from the right (the hop the proxy itself added)
/// past every trusted proxy to the first address that is not one. An unparseable entry ends
/// the walk: nothing left of it can be believed.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a http::HeaderValue>,
    trusted: &[IpNet],
) -> IpAddr {
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
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
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
}
