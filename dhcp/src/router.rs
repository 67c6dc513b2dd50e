//! The router side of one guest's link over IPv6: router advertisements (RFC 4861, with the
//! RDNSS and DNSSL options of RFC 8106) and the IPv6 half of [`answer`](crate::server::answer).
//!
//! Pure like `reply`: [`advertisement`] builds the frame from the binding, [`answer6`] turns
//! one frame from the guest into a reply or a reason to stay silent. The server sends an
//! advertisement when a guest solicits one and every [`ADVERT_INTERVAL`] unasked.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::binding::{search_names, Binding, Binding6};
use crate::frame6::{
    build_ipv6_frame, link_local, multicast_mac, parse_ipv6_frame, parse_udp6, ALL_NODES,
    IPPROTO_ICMPV6,
};
use crate::reply6;
use crate::server::Outcome;

/// How often an unsolicited advertisement goes out (RFC 4861's MaxRtrAdvInterval default).
pub const ADVERT_INTERVAL: Duration = Duration::from_secs(600);
/// How long the guest keeps the router and its DNS servers without a new advertisement:
/// three intervals (RFC 4861 section 6.2.1, RFC 8106 section 5.1).
const ROUTER_LIFETIME: u16 = 1800;
const ICMPV6_ROUTER_SOLICIT: u8 = 133;
const ICMPV6_ROUTER_ADVERT: u8 = 134;
/// The hop limit the guest is told to use.
const CUR_HOP_LIMIT: u8 = 64;
/// DHCPv6 ports.
pub const DHCP6_SERVER_PORT: u16 = 547;
/// DHCPv6 client port.
pub const DHCP6_CLIENT_PORT: u16 = 546;

/// The router advertisement for the guest of `b`, as a whole frame to all nodes (the socket
/// reaches only this guest). `None` when `b` has no IPv6 side.
pub fn advertisement(b: &Binding) -> Option<Vec<u8>> {
    let v6 = b.v6.as_ref()?;
    let body = advert_body(b, v6);
    Some(build_ipv6_frame(
        (b.server_mac, multicast_mac(ALL_NODES)),
        (v6.router, ALL_NODES),
        IPPROTO_ICMPV6,
        255,
        &body,
    ))
}

/// The ICMPv6 router advertisement: managed (M) when DHCPv6 leases an address, other
/// configuration (O) always (DNS over DHCPv6 for guests without RDNSS), the source link-layer
/// address, the MTU, the prefix (on-link; autonomous as the binding says), RDNSS and DNSSL.
fn advert_body(b: &Binding, v6: &Binding6) -> Vec<u8> {
    let managed = v6.ip.is_some();
    let mut m = vec![ICMPV6_ROUTER_ADVERT, 0, 0, 0, CUR_HOP_LIMIT];
    m.push(if managed { 0x80 } else { 0 } | 0x40);
    m.extend_from_slice(&ROUTER_LIFETIME.to_be_bytes());
    m.extend_from_slice(&[0; 8]); // reachable time, retransmission timer: unspecified

    // Source link-layer address (type 1), so the guest need not resolve the router.
    if v6.router_on_server_mac {
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&b.server_mac);
    }
    if let Some(mtu) = b.mtu.filter(|mtu| *mtu >= 1280) {
        m.extend_from_slice(&[5, 1, 0, 0]);
        m.extend_from_slice(&u32::from(mtu).to_be_bytes());
    }
    // Prefix information (type 3): on-link, autonomous as configured. A /128 (a Calico-style
    // pod address) has no link to be on: none then, the guest reaches all through the router.
    if v6.prefix.prefix_len() < 128 {
        m.extend_from_slice(&[3, 4, v6.prefix.prefix_len()]);
        m.push(0x80 | if v6.autonomous { 0x40 } else { 0 });
        m.extend_from_slice(&b.lease_secs.to_be_bytes()); // valid lifetime
        m.extend_from_slice(&b.lease_secs.to_be_bytes()); // preferred lifetime
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&v6.prefix.network().octets());
    }
    // At most 16 servers: the option's length (in 8-byte units) is then 33, well within a byte.
    let dns: Vec<_> = v6.dns.iter().take(16).collect();
    if !dns.is_empty() {
        m.extend_from_slice(&[25, (1 + 2 * dns.len()) as u8, 0, 0]);
        m.extend_from_slice(&u32::from(ROUTER_LIFETIME).to_be_bytes());
        for a in dns {
            m.extend_from_slice(&a.octets());
        }
    }
    if let Some(names) = dnssl(&b.search) {
        m.extend_from_slice(&[31, (names.len() / 8 + 1) as u8, 0, 0]);
        m.extend_from_slice(&u32::from(ROUTER_LIFETIME).to_be_bytes());
        m.extend_from_slice(&names);
    }
    m
}

/// The DNSSL option's names in DNS wire format, padded with zeros to a multiple of 8 bytes;
/// `None` when there are none or they would not fit one option (255 units of 8 bytes).
fn dnssl(search: &[String]) -> Option<Vec<u8>> {
    let names = search_names(search).ok()?;
    let mut out = Vec::new();
    for name in names {
        for label in name.iter() {
            out.push(u8::try_from(label.len()).ok()?);
            out.extend_from_slice(label);
        }
        out.push(0);
    }
    if out.is_empty() {
        return None;
    }
    out.resize(out.len().div_ceil(8) * 8, 0);
    (out.len() / 8 < 255).then_some(out)
}

/// Checks a router solicitation as RFC 4861 section 6.1.1 asks: hop limit 255, code 0, at
/// least 8 bytes, every option with a non-zero length inside the message, no source
/// link-layer address option when the source is unspecified.
pub fn check_solicitation(src: Ipv6Addr, hop_limit: u8, icmp: &[u8]) -> Result<(), &'static str> {
    if hop_limit != 255 {
        return Err("router solicitation with a hop limit below 255");
    }
    let header = icmp
        .get(..8)
        .ok_or("router solicitation shorter than 8 bytes")?;
    if header[0] != ICMPV6_ROUTER_SOLICIT || header[1] != 0 {
        return Err("not a router solicitation");
    }
    let mut rest = &icmp[8..];
    while let [kind, len, ..] = *rest {
        let len = usize::from(len) * 8;
        if len == 0 {
            return Err("router solicitation option of length 0");
        }
        if kind == 1 && src.is_unspecified() {
            return Err("source link-layer address from the unspecified address");
        }
        rest = rest
            .get(len..)
            .ok_or("router solicitation option past the message")?;
    }
    if !rest.is_empty() {
        return Err("router solicitation with a trailing byte");
    }
    Ok(())
}

/// The IPv6 half of the per-frame path: a router solicitation gets the advertisement, a
/// DHCPv6 message to port 547 goes to [`reply6::answer`]. Frames from any MAC but the
/// guest's are ignored: the server's socket sees them before the port's guards do.
pub fn answer6(frame: &[u8], b: &Binding) -> Outcome {
    let Some(v6) = &b.v6 else {
        return Outcome::Malformed("IPv6 frame on a link without IPv6");
    };
    let Some(p) = parse_ipv6_frame(frame) else {
        return Outcome::Malformed("not an IPv6 packet without extension headers");
    };
    if p.src_mac != b.mac {
        return Outcome::Ignored;
    }
    match p.next_header {
        IPPROTO_ICMPV6 => match check_solicitation(p.src_ip, p.hop_limit, p.payload) {
            Ok(()) => advertisement(b).map_or(Outcome::Ignored, Outcome::Reply),
            Err(why) => Outcome::Malformed(why),
        },
        _ => {
            let Some(udp) = parse_udp6(&p) else {
                return Outcome::Malformed("not an ICMPv6 or UDP packet");
            };
            if udp.dst_port != DHCP6_SERVER_PORT {
                return Outcome::Malformed("not for the DHCPv6 server port");
            }
            // Replies go back to where the client sent from, which is link-local (RFC 8415
            // section 13.1); a client on another source gets none.
            if !crate::frame6::is_link_local(p.src_ip) {
                return Outcome::Malformed("DHCPv6 message not from a link-local address");
            }
            reply6::answer(udp.payload, b, v6, (p.src_ip, udp.src_port))
        }
    }
}

/// The router's link-local address on a link whose host side has `mac`: what the daemon
/// puts on the link and into [`Binding6::router`].
pub fn router_address(mac: [u8; 6]) -> Ipv6Addr {
    link_local(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::tests::dual;
    use crate::frame6::{checksum_ok, ALL_ROUTERS};

    const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn solicitation(src: Ipv6Addr, hop: u8, options: &[u8]) -> Vec<u8> {
        let mut rs = vec![ICMPV6_ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        rs.extend_from_slice(options);
        build_ipv6_frame(
            (GUEST, multicast_mac(ALL_ROUTERS)),
            (src, ALL_ROUTERS),
            IPPROTO_ICMPV6,
            hop,
            &rs,
        )
    }

    fn reply_of(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Reply(f) => f,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// The options of an advertisement frame, as (type, body).
    fn options(frame: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let p = parse_ipv6_frame(frame).unwrap();
        let mut rest = &p.payload[16..];
        let mut out = Vec::new();
        while let [kind, len, ..] = *rest {
            let len = usize::from(len) * 8;
            out.push((kind, rest[2..len].to_vec()));
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn a_solicitation_gets_an_advertisement_with_everything() {
        let ra = reply_of(answer6(
            &solicitation(
                link_local(GUEST),
                255,
                &[1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56],
            ),
            &dual(),
        ));
        let p = parse_ipv6_frame(&ra).unwrap();
        assert_eq!(
            (p.src_ip, p.dst_ip, p.hop_limit),
            ("fe80::1".parse().unwrap(), ALL_NODES, 255)
        );
        assert_eq!(p.src_mac, dual().server_mac);
        assert!(checksum_ok(&p));
        let icmp = p.payload;
        assert_eq!((icmp[0], icmp[1], icmp[4]), (134, 0, 64));
        assert_eq!(icmp[5], 0xc0, "managed and other configuration");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1800);
        let opts = options(&ra);
        let kinds: Vec<u8> = opts.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [1, 5, 3, 25, 31]);
        assert_eq!(opts[0].1, dual().server_mac);
        assert_eq!(
            u32::from_be_bytes(opts[1].1[2..6].try_into().unwrap()),
            1400
        );
        let prefix = &opts[2].1;
        assert_eq!(
            (prefix[0], prefix[1]),
            (64, 0x80),
            "/64, on-link, not autonomous"
        );
        assert_eq!(
            &prefix[14..30],
            &"fd77::".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            &opts[3].1[6..22],
            &"fd77::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&opts[4].1[6..19], b"\x07example\x03com\x00");
        // 130 servers: 16 announced, with a length that says so.
        let mut many = dual();
        many.v6.as_mut().unwrap().dns = (0..130u16)
            .map(|n| Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n))
            .collect();
        let rdnss = options(&advertisement(&many).unwrap())
            .into_iter()
            .find(|(k, _)| *k == 25)
            .unwrap();
        assert_eq!(rdnss.1.len(), 6 + 16 * 16);
        // A router that is not ours (a CNI plugin's bridge): its MAC is not ours to announce.
        let mut theirs = dual();
        theirs.v6.as_mut().unwrap().router_on_server_mac = false;
        let kinds: Vec<u8> = options(&advertisement(&theirs).unwrap())
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(kinds, [5, 3, 25, 31]);
        // A /128 address: no prefix to be on-link, the router is the way to everything.
        let mut host = dual();
        let v6 = host.v6.as_mut().unwrap();
        v6.prefix = "fd77::5/128".parse().unwrap();
        assert!(v6.validate().is_ok(), "a /128 address is its own prefix");
        let kinds: Vec<u8> = options(&advertisement(&host).unwrap())
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(kinds, [1, 5, 25, 31]);
    }

    #[test]
    fn malformed_solicitations_get_nothing() {
        let b = dual();
        let ll = link_local(GUEST);
        for (frame, why) in [
            (solicitation(ll, 64, &[]), "hop limit"),
            (solicitation(ll, 255, &[1, 0, 0, 0, 0, 0, 0, 0]), "length 0"),
            (
                solicitation(ll, 255, &[1, 2, 0, 0, 0, 0, 0, 0]),
                "past the message",
            ),
            (
                solicitation(Ipv6Addr::UNSPECIFIED, 255, &[1, 1, 0, 0, 0, 0, 0, 0]),
                "unspecified",
            ),
        ] {
            match answer6(&frame, &b) {
                Outcome::Malformed(m) => assert!(m.contains(why), "{m} / {why}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn another_mac_and_a_link_without_ipv6_get_nothing() {
        let mut frame = solicitation(link_local(GUEST), 255, &[]);
        assert!(matches!(
            answer6(&frame, &crate::binding::tests::full()),
            Outcome::Malformed(_)
        ));
        frame[11] ^= 1;
        assert_eq!(answer6(&frame, &dual()), Outcome::Ignored);
    }

    #[test]
    fn slaac_only_advertises_an_autonomous_prefix_without_managed() {
        let mut b = dual();
        let v6 = b.v6.as_mut().unwrap();
        v6.ip = None;
        v6.autonomous = true;
        let ra = advertisement(&b).unwrap();
        assert_eq!(parse_ipv6_frame(&ra).unwrap().payload[5], 0x40);
        assert_eq!(options(&ra)[2].1[1], 0xc0);
    }
}
