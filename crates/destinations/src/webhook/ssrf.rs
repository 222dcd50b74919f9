//! The SSRF guard: which addresses a destination may not reach unless
//! `allow_private_networks` is set, and a DNS resolver that enforces it after resolution.
//!
//! Checking after resolution is what makes the guard hold against names that point inside
//! (`localhost`, `127.0.0.1.nip.io`) and against DNS rebinding: the connection goes only to
//! the addresses the guard let through. IP-literal URLs never reach a resolver, so the
//! destination checks them itself with [`refused_literal`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A connection refused because every address of the host is private.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "address {addr} of host `{host}` is private ({range}); set allow_private_networks: true to allow"
)]
pub struct SsrfError {
    /// The host as written in the URL.
    pub host: String,
    /// The (first) refused address.
    pub addr: IpAddr,
    /// The kind of range it is in, e.g. `loopback`.
    pub range: &'static str,
}

/// The kind of non-public range `ip` belongs to, or `None` when it is a public address.
#[must_use]
pub fn private_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => private_range_v4(v4),
        IpAddr::V6(v6) => private_range_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn private_range_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, name)| *name)
}

fn private_range_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d) forms reach
    // the embedded IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return private_range_v4(v4);
    }
    if seg[..6] == [0; 6] {
        return private_range_v4(embedded_v4(seg[6], seg[7]));
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) also carry an IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return private_range_v4(embedded_v4(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return private_range_v4(embedded_v4(seg[1], seg[2]));
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => Some("unique-local"),
        s if s & 0xffc0 == 0xfe80 => Some("link-local"),
        s if s & 0xffc0 == 0xfec0 => Some("site-local"),
        s if s & 0xff00 == 0xff00 => Some("multicast"),
        0x2001 if seg[1] == 0x0db8 => Some("documentation"),
        0x0100 if seg[1..4] == [0, 0, 0] => Some("discard-only"),
        _ => None,
    }
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

/// The refusal for a URL host that is an IP literal in a private range.
#[must_use]
pub fn refused_literal(host: &url::Host<&str>) -> Option<SsrfError> {
    let addr = match host {
        url::Host::Ipv4(v4) => IpAddr::V4(*v4),
        url::Host::Ipv6(v6) => IpAddr::V6(*v6),
        url::Host::Domain(_) => return None,
    };
    private_range(addr).map(|range| SsrfError {
        host: host.to_string(),
        addr,
        range,
    })
}

/// Keeps the public addresses; fails with [`SsrfError`] when none is left.
///
/// # Errors
/// Every address is private (the error names the first one).
pub fn keep_public(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, SsrfError> {
    let mut first_refused = None;
    let public: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match private_range(a.ip()) {
            None => true,
            Some(range) => {
                first_refused.get_or_insert((a.ip(), range));
                false
            }
        })
        .collect();
    match (public.is_empty(), first_refused) {
        (true, Some((addr, range))) => Err(SsrfError {
            host: host.to_owned(),
            addr,
            range,
        }),
        _ => Ok(public),
    }
}

/// A resolver that resolves with the system resolver (`tokio::net::lookup_host`) and lets
/// only public addresses through.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public = keep_public(&host, resolved)?;
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn range(s: &str) -> Option<&'static str> {
        private_range(s.parse().unwrap())
    }

    #[test]
    fn refuses_non_public_ipv4() {
        for (ip, expected) in [
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("192.0.2.10", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("250.1.1.1", "reserved"),
        ] {
            assert_eq!(range(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn lets_public_ipv4_through() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "93.184.216.34",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn refuses_non_public_ipv6_and_embedded_ipv4() {
        for (ip, expected) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::192.168.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
        ] {
            assert_eq!(range(ip), Some(expected), "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn checks_literal_hosts_only() {
        let url = url::Url::parse("http://127.0.0.1:8080/x?token=s").unwrap();
        let err = refused_literal(&url.host().unwrap()).unwrap();
        assert_eq!(
            err.to_string(),
            "address 127.0.0.1 of host `127.0.0.1` is private (loopback); set allow_private_networks: true to allow"
        );
        let url = url::Url::parse("http://[::1]/").unwrap();
        assert!(refused_literal(&url.host().unwrap()).is_some());
        // The WHATWG parser normalises other spellings of an IPv4 address.
        let url = url::Url::parse("http://2130706433/").unwrap();
        assert!(refused_literal(&url.host().unwrap()).is_some());
        let url = url::Url::parse("http://example.org/").unwrap();
        assert!(refused_literal(&url.host().unwrap()).is_none());
    }

    #[test]
    fn keeps_public_addresses_and_refuses_when_none_is_left() {
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        assert_eq!(
            keep_public("h", vec![private, public]).unwrap(),
            vec![public]
        );
        let err = keep_public("h", vec![private]).unwrap_err();
        assert_eq!(err.addr, private.ip());
        assert_eq!(keep_public("h", vec![]).unwrap(), Vec::<SocketAddr>::new());
    }

    #[tokio::test]
    async fn resolver_refuses_localhost() {
        let err = PublicOnlyResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        let ssrf = err.downcast_ref::<SsrfError>().unwrap();
        assert_eq!(ssrf.range, "loopback");
    }
}
