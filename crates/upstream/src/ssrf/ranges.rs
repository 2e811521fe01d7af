//! Address ranges a tenant-supplied URL must not reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

const UNSPECIFIED: &str = "an unspecified address";
const PRIVATE: &str = "a private address";
const LOOPBACK: &str = "a loopback address";
const LINK_LOCAL: &str = "a link-local address";
const SHARED: &str = "a carrier-grade NAT address";
const RESERVED: &str = "a reserved address";
const DOCUMENTATION: &str = "a documentation address";
const BENCHMARKING: &str = "a benchmarking address";
const MULTICAST: &str = "a multicast address";
const BROADCAST: &str = "the broadcast address";

/// Each network with why it is refused.
const V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), UNSPECIFIED),
    (v4(10, 0, 0, 0, 8), PRIVATE),
    (v4(100, 64, 0, 0, 10), SHARED),
    (v4(127, 0, 0, 0, 8), LOOPBACK),
    (v4(169, 254, 0, 0, 16), LINK_LOCAL),
    (v4(172, 16, 0, 0, 12), PRIVATE),
    (v4(192, 0, 0, 0, 24), RESERVED),
    (v4(192, 0, 2, 0, 24), DOCUMENTATION),
    (v4(192, 168, 0, 0, 16), PRIVATE),
    (v4(198, 18, 0, 0, 15), BENCHMARKING),
    (v4(198, 51, 100, 0, 24), DOCUMENTATION),
    (v4(203, 0, 113, 0, 24), DOCUMENTATION),
    (v4(224, 0, 0, 0, 4), MULTICAST),
    (v4(255, 255, 255, 255, 32), BROADCAST),
    // After the broadcast address, which it contains, so that one gets its own name.
    (v4(240, 0, 0, 0, 4), RESERVED),
];

const V6: &[(Ipv6Net, &str)] = &[
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), PRIVATE),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), LINK_LOCAL),
    // Deprecated site-local space; some stacks still route it like private space.
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), PRIVATE),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), MULTICAST),
    (v6(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0, 32), DOCUMENTATION),
];

/// IPv6 prefixes whose last 32 bits are an IPv4 address that the packet effectively reaches:
/// IPv4-mapped, IPv4-compatible, and NAT64.
const V6_EMBEDDING_V4: &[Ipv6Net] = &[
    v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96),
    v6(0, 0, 0, 0, 0, 0, 0, 0, 96),
    v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)] // the eight groups of an IPv6 address, as Ipv6Addr::new
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Whether a tenant-supplied URL must not reach `ip`: private, loopback, link-local,
/// unspecified, shared, reserved, documentation, benchmarking, multicast or broadcast space,
/// including IPv4 addresses wrapped in IPv6.
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_reason(ip).is_some()
}

/// What kind of address `ip` is, as tenant-facing text ("a private address"), when it is
/// forbidden.
pub(crate) fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    V4.iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, why)| *why)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    // Both sit inside the IPv4-compatible ::/96, where they would read as 0.0.0.0 and 0.0.0.1.
    if ip.is_unspecified() {
        return Some(UNSPECIFIED);
    }
    if ip.is_loopback() {
        return Some(LOOPBACK);
    }
    if V6_EMBEDDING_V4.iter().any(|net| net.contains(&ip)) {
        let [.., a, b, c, d] = ip.octets();
        return v4_reason(Ipv4Addr::new(a, b, c, d));
    }
    V6.iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_forbidden_range_is_refused_at_both_ends() {
        let cases = [
            ("0.0.0.0", UNSPECIFIED),
            ("0.255.255.255", UNSPECIFIED),
            ("10.0.0.0", PRIVATE),
            ("10.255.255.255", PRIVATE),
            ("100.64.0.0", SHARED),
            ("100.127.255.255", SHARED),
            ("127.0.0.1", LOOPBACK),
            ("127.255.255.254", LOOPBACK),
            ("169.254.0.0", LINK_LOCAL),
            ("169.254.169.254", LINK_LOCAL),
            ("172.16.0.0", PRIVATE),
            ("172.31.255.255", PRIVATE),
            ("192.0.0.0", RESERVED),
            ("192.0.0.255", RESERVED),
            ("192.0.2.1", DOCUMENTATION),
            ("192.168.0.0", PRIVATE),
            ("192.168.255.255", PRIVATE),
            ("198.18.0.0", BENCHMARKING),
            ("198.19.255.255", BENCHMARKING),
            ("198.51.100.7", DOCUMENTATION),
            ("203.0.113.200", DOCUMENTATION),
            ("224.0.0.1", MULTICAST),
            ("239.255.255.255", MULTICAST),
            ("240.0.0.1", RESERVED),
            ("254.255.255.255", RESERVED),
            ("255.255.255.255", BROADCAST),
            ("::", UNSPECIFIED),
            ("::1", LOOPBACK),
            ("fc00::1", PRIVATE),
            ("fdff:ffff::1", PRIVATE),
            ("fe80::1", LINK_LOCAL),
            ("febf::1", LINK_LOCAL),
            ("fec0::1", PRIVATE),
            ("ff02::1", MULTICAST),
            ("2001:db8::1", DOCUMENTATION),
            ("::ffff:127.0.0.1", LOOPBACK),
            ("::ffff:7f00:1", LOOPBACK),
            ("::ffff:10.1.2.3", PRIVATE),
            ("::ffff:169.254.169.254", LINK_LOCAL),
            ("::127.0.0.1", LOOPBACK),
            ("::192.168.1.1", PRIVATE),
            ("64:ff9b::10.0.0.1", PRIVATE),
            ("64:ff9b::127.0.0.1", LOOPBACK),
        ];
        for (addr, why) in cases {
            assert_eq!(forbidden_reason(ip(addr)), Some(why), "{addr}");
            assert!(is_forbidden(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn public_addresses_and_range_neighbours_are_allowed() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:db9::1",
            "fbff::1",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::1.1.1.1",
        ] {
            assert_eq!(forbidden_reason(ip(addr)), None, "{addr}");
            assert!(!is_forbidden(ip(addr)), "{addr}");
        }
    }
}
