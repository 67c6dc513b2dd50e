//! Ethernet + IPv6 framing, by hand, for the router side (router advertisements, DHCPv6) on
//! the same AF_PACKET socket as DHCPv4: the guest talks from its link-local address (or from
//! `::`) before it has any other, so the server reads and writes whole frames, as for IPv4.
//!
//! Parsing treats every byte as hostile: lengths are checked against the frame, and a packet
//! with extension headers is refused (router solicitations and DHCPv6 carry none; a guest that
//! adds them gets no answer). Checksums are not verified on input, for the reason
//! `frame.rs` gives for UDP: a virtio guest's offloaded checksum is only partial on the TAP.

use std::net::Ipv6Addr;

use crate::frame::{internet_checksum, ETH_HEADER_LEN};

/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Next-header number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// Next-header number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// All-nodes multicast, where unsolicited router advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers multicast, where router solicitations go.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// All DHCP relay agents and servers, where DHCPv6 clients send.
pub const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// One Ethernet/IPv6 packet, borrowed from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Frame<'a> {
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
    /// IPv6 source address.
    pub src_ip: Ipv6Addr,
    /// IPv6 destination address.
    pub dst_ip: Ipv6Addr,
    /// The upper-layer protocol (no extension headers are accepted).
    pub next_header: u8,
    /// The hop limit; router discovery messages must arrive with 255 (RFC 4861 section 6.1).
    pub hop_limit: u8,
    /// The upper-layer packet (ICMPv6 or UDP, with its header).
    pub payload: &'a [u8],
}

/// Parses an untagged Ethernet II frame carrying an IPv6 packet without extension headers.
/// Trailing Ethernet padding is ignored; a payload length past the frame is refused.
pub fn parse_ipv6_frame(frame: &[u8]) -> Option<Ipv6Frame<'_>> {
    let eth = frame.get(..ETH_HEADER_LEN)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV6 {
        return None;
    }
    let packet = &frame[ETH_HEADER_LEN..];
    let header = packet.get(..IPV6_HEADER_LEN)?;
    if header[0] >> 4 != 6 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let payload = packet.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + len)?;
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = header.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    Some(Ipv6Frame {
        dst_mac: eth[0..6].try_into().ok()?,
        src_mac: eth[6..12].try_into().ok()?,
        src_ip: addr(8)?,
        dst_ip: addr(24)?,
        next_header: header[6],
        hop_limit: header[7],
        payload,
    })
}

/// A UDP datagram inside an IPv6 packet: ports and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp6<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The datagram's payload.
    pub payload: &'a [u8],
}

/// The UDP datagram of `p`, if it is one and its length is consistent.
pub fn parse_udp6<'a>(p: &Ipv6Frame<'a>) -> Option<Udp6<'a>> {
    if p.next_header != IPPROTO_UDP {
        return None;
    }
    let h = p.payload.get(..8)?;
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    Some(Udp6 {
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        payload: p.payload.get(8..len)?,
    })
}

/// Builds an Ethernet/IPv6 frame around an upper-layer packet `upper` (its header included)
/// and fills in that packet's checksum (at offset 2 for ICMPv6, 6 for UDP) over the IPv6
/// pseudo-header (RFC 8200 section 8.1).
///
/// # Panics
/// If `upper` is longer than 65535 bytes or `next_header` is neither ICMPv6 nor UDP.
pub fn build_ipv6_frame(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src_ip, dst_ip): (Ipv6Addr, Ipv6Addr),
    next_header: u8,
    hop_limit: u8,
    upper: &[u8],
) -> Vec<u8> {
    let len = u16::try_from(upper.len()).expect("an IPv6 payload fits 65535 bytes");
    let at = match next_header {
        IPPROTO_ICMPV6 => 2,
        IPPROTO_UDP => 6,
        other => panic!("no checksum offset known for next header {other}"),
    };
    let mut f = Vec::with_capacity(ETH_HEADER_LEN + IPV6_HEADER_LEN + upper.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    f.extend_from_slice(&len.to_be_bytes());
    f.push(next_header);
    f.push(hop_limit);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_ip.octets());
    let start = f.len();
    f.extend_from_slice(upper);
    f[start + at..start + at + 2].copy_from_slice(&[0, 0]);
    let mut sum = internet_checksum(
        &f[start..],
        pseudo_header_sum(src_ip, dst_ip, u32::from(len), next_header),
    );
    if sum == 0 && next_header == IPPROTO_UDP {
        sum = 0xffff;
    }
    f[start + at..start + at + 2].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Builds an Ethernet/IPv6/UDP frame (hop limit 255, checksum filled in).
pub fn build_udp6_frame(
    macs: ([u8; 6], [u8; 6]),
    ips: (Ipv6Addr, Ipv6Addr),
    (src_port, dst_port): (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("a UDP datagram fits 65535 bytes");
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    build_ipv6_frame(macs, ips, IPPROTO_UDP, 255, &udp)
}

/// Whether the checksum of the upper-layer packet of `p` verifies (for tests and the fake
/// guest; the server does not check, see the module docs).
pub fn checksum_ok(p: &Ipv6Frame<'_>) -> bool {
    let Ok(len) = u32::try_from(p.payload.len()) else {
        return false;
    };
    internet_checksum(
        p.payload,
        pseudo_header_sum(p.src_ip, p.dst_ip, len, p.next_header),
    ) == 0
}

/// The Ethernet multicast address of an IPv6 multicast address (RFC 2464 section 7).
pub fn multicast_mac(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The modified EUI-64 link-local address of a MAC (RFC 4291 appendix A): what a guest with
/// the kernel's default address generation takes, and what the host's links take.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// Whether `ip` is link-local unicast (fe80::/10).
pub fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The solicited-node multicast address of `ip` (RFC 4291 section 2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, len: u32, next_header: u8) -> u32 {
    let words = |ip: Ipv6Addr| ip.segments().iter().map(|w| u32::from(*w)).sum::<u32>();
    words(src) + words(dst) + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// An ICMPv6 message (type, code 0, then `rest` after the checksum) as a frame, hop limit 255
/// (what neighbour discovery requires).
pub fn icmp6_frame(
    macs: ([u8; 6], [u8; 6]),
    ips: (Ipv6Addr, Ipv6Addr),
    kind: u8,
    rest: &[u8],
) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(rest);
    build_ipv6_frame(macs, ips, IPPROTO_ICMPV6, 255, &m)
}

/// A neighbour solicitation for `target` from `src` to its solicited-node group, with `mac`
/// as source link-layer address (none from the unspecified address: duplicate address
/// detection).
pub fn neighbor_solicitation(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut rest = vec![0; 4];
    rest.extend_from_slice(&target.octets());
    if !src.is_unspecified() {
        rest.extend_from_slice(&[1, 1]);
        rest.extend_from_slice(&mac);
    }
    let dst = solicited_node(target);
    icmp6_frame((mac, multicast_mac(dst)), (src, dst), 135, &rest)
}

/// A solicited neighbour advertisement (S and O set) of `target` at `mac`, to `dst` at
/// `dst_mac`.
pub fn neighbor_advertisement(
    (mac, dst_mac): ([u8; 6], [u8; 6]),
    (target, dst): (Ipv6Addr, Ipv6Addr),
) -> Vec<u8> {
    let mut rest = vec![0x60, 0, 0, 0];
    rest.extend_from_slice(&target.octets());
    rest.extend_from_slice(&[2, 1]);
    rest.extend_from_slice(&mac);
    icmp6_frame((mac, dst_mac), (target, dst), 136, &rest)
}

/// The neighbour discovery message of a frame: its type, the target address (NS, NA) and
/// the first source or target link-layer address option. `None` for anything else.
pub fn neighbor_message(p: &Ipv6Frame<'_>) -> Option<(u8, Ipv6Addr, Option<[u8; 6]>)> {
    let icmp = p.payload;
    if p.next_header != IPPROTO_ICMPV6 || icmp.len() < 24 || !matches!(icmp[0], 135 | 136) {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    let mut lla = None;
    let mut rest = &icmp[24..];
    while rest.len() >= 8 && rest[1] != 0 {
        let len = usize::from(rest[1]) * 8;
        if len > rest.len() {
            break;
        }
        if matches!(rest[0], 1 | 2) && lla.is_none() {
            lla = <[u8; 6]>::try_from(&rest[2..8]).ok();
        }
        rest = &rest[len..];
    }
    Some((icmp[0], target, lla))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn a_built_udp_frame_parses_back_with_a_valid_checksum() {
        let src = link_local(GUEST);
        let f = build_udp6_frame(
            (GUEST, multicast_mac(ALL_DHCP_SERVERS)),
            (src, ALL_DHCP_SERVERS),
            (546, 547),
            b"hello",
        );
        let p = parse_ipv6_frame(&f).unwrap();
        assert_eq!(
            (p.src_ip, p.dst_ip, p.hop_limit),
            (src, ALL_DHCP_SERVERS, 255)
        );
        assert_eq!(p.dst_mac, [0x33, 0x33, 0, 1, 0, 2]);
        assert!(checksum_ok(&p));
        let u = parse_udp6(&p).unwrap();
        assert_eq!(
            (u.src_port, u.dst_port, u.payload),
            (546, 547, &b"hello"[..])
        );
    }

    #[test]
    fn the_eui64_link_local_flips_the_universal_bit() {
        assert_eq!(
            link_local(GUEST),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            solicited_node("fd77::12:3456".parse().unwrap()),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn lengths_past_the_frame_and_other_versions_are_refused() {
        let f = build_udp6_frame(
            (GUEST, [0x33; 6]),
            (Ipv6Addr::UNSPECIFIED, ALL_DHCP_SERVERS),
            (546, 547),
            b"x",
        );
        assert!(parse_ipv6_frame(&f[..f.len() - 1]).is_none());
        let mut v4 = f.clone();
        v4[14] = 0x45;
        assert!(parse_ipv6_frame(&v4).is_none());
        let mut udp_long = f.clone();
        udp_long[14 + 40 + 5] = 200; // UDP length past the packet
        assert!(parse_udp6(&parse_ipv6_frame(&udp_long).unwrap()).is_none());
        let mut padded = f;
        padded.extend([0; 20]);
        assert_eq!(parse_ipv6_frame(&padded).unwrap().payload.len(), 9);
    }
}
