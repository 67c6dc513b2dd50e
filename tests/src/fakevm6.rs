//! The fake guest's IPv6: router solicitation and advertisement, the DHCPv6 exchange (with
//! or without rapid commit), neighbour discovery and ping, and the frames a hostile guest
//! sends (router advertisements, neighbour advertisements claiming others' addresses).
//! Framing is `dhcp::frame6`'s, the same code the server uses, checked against the kernel's
//! own answers (the bridge's neighbour advertisements and echo replies).

use crate::fakevm::FakeVm;
use dhcp::frame6::{
    build_udp6_frame, link_local, multicast_mac, parse_ipv6_frame, parse_udp6, ALL_DHCP_SERVERS,
    ALL_NODES, ALL_ROUTERS, IPPROTO_ICMPV6,
};
/// An ICMPv6 message as a frame, and a neighbour solicitation: the server's own builders.
pub use dhcp::frame6::{icmp6_frame as icmp6, neighbor_solicitation as neighbor_solicit};
use dhcproto::v6::{DhcpOption, DhcpOptions, Message, MessageType, OptionCode, IANA, ORO};
use dhcproto::{Decodable, Decoder, Encodable};
use std::net::Ipv6Addr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(3);

/// What a router advertisement said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub src_mac: [u8; 6],
    pub router: Ipv6Addr,
    pub hop_limit: u8,
    pub managed: bool,
    pub lifetime: u16,
    /// (prefix, length, on-link, autonomous)
    pub prefixes: Vec<(Ipv6Addr, u8, bool, bool)>,
    pub mtu: Option<u32>,
    pub rdnss: Vec<Ipv6Addr>,
    /// The source link-layer address option, if the router named its MAC.
    pub slla: Option<[u8; 6]>,
}

/// What DHCPv6 leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    pub address: Ipv6Addr,
    pub valid: u32,
    pub dns: Vec<Ipv6Addr>,
    pub server_id: Vec<u8>,
    /// The reply's IPv6 source (the router's link-local).
    pub from: Ipv6Addr,
}

/// A router solicitation from `src` (with our MAC as source link-layer address unless `src`
/// is unspecified).
pub fn router_solicit(mac: [u8; 6], src: Ipv6Addr) -> Vec<u8> {
    let mut rest = vec![0; 4];
    if !src.is_unspecified() {
        rest.extend_from_slice(&[1, 1]);
        rest.extend_from_slice(&mac);
    }
    icmp6(
        (mac, multicast_mac(ALL_ROUTERS)),
        (src, ALL_ROUTERS),
        133,
        &rest,
    )
}

/// A router advertisement for `prefix`/64 with a default-router lifetime: what a rogue
/// guest sends to all nodes.
pub fn rogue_advert(mac: [u8; 6], prefix: Ipv6Addr) -> Vec<u8> {
    let mut rest = vec![64, 0x00, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    rest.extend_from_slice(&[3, 4, 64, 0xc0]);
    rest.extend_from_slice(&3600u32.to_be_bytes());
    rest.extend_from_slice(&3600u32.to_be_bytes());
    rest.extend_from_slice(&[0; 4]);
    rest.extend_from_slice(&prefix.octets());
    icmp6(
        (mac, multicast_mac(ALL_NODES)),
        (link_local(mac), ALL_NODES),
        134,
        &rest,
    )
}

/// An unsolicited neighbour advertisement (override) claiming `target` for `mac`, to all
/// nodes: what poisons caches when `target` is someone else's.
pub fn neighbor_advert(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    neighbor_advert_naming(mac, src, target, mac)
}

/// A neighbour advertisement for `target` whose target link-layer address option names
/// `lla` rather than the sender's MAC: what points an address at someone else's MAC.
pub fn neighbor_advert_naming(
    mac: [u8; 6],
    src: Ipv6Addr,
    target: Ipv6Addr,
    lla: [u8; 6],
) -> Vec<u8> {
    let mut rest = vec![0x20, 0, 0, 0];
    rest.extend_from_slice(&target.octets());
    rest.extend_from_slice(&[2, 1]);
    rest.extend_from_slice(&lla);
    icmp6(
        (mac, multicast_mac(ALL_NODES)),
        (src, ALL_NODES),
        136,
        &rest,
    )
}

/// A multicast listener query (general) to all nodes, as a multicast router sends.
pub fn listener_query(mac: [u8; 6], src: Ipv6Addr) -> Vec<u8> {
    let mut rest = vec![0x03, 0xe8, 0, 0];
    rest.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    icmp6(
        (mac, multicast_mac(ALL_NODES)),
        (src, ALL_NODES),
        130,
        &rest,
    )
}

/// A UDP datagram with `marker` as payload, to all nodes.
pub fn marked_udp6(mac: [u8; 6], src: Ipv6Addr, ports: (u16, u16), marker: &[u8]) -> Vec<u8> {
    build_udp6_frame(
        (mac, multicast_mac(ALL_NODES)),
        (src, ALL_NODES),
        ports,
        marker,
    )
}

/// An IPv6 packet as bytes, headers as given and no checksum filled in: for frames the guards
/// must drop whatever their upper layer says.
pub fn raw_ipv6(
    (mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    next_header: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next_header, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// A non-first IPv6 fragment (offset 8, more fragments) to `dst`, carrying `marker`: what
/// hides an ICMPv6 or UDP header from rules that look for one.
pub fn later_fragment(mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, marker: &[u8]) -> Vec<u8> {
    // Next header ICMPv6, offset 1 (8 bytes), M set, identification 0x7461706d.
    let mut p = vec![IPPROTO_ICMPV6, 0, 0, 0x09, 0x74, 0x61, 0x70, 0x6d];
    p.extend_from_slice(marker);
    raw_ipv6((mac, multicast_mac(ALL_NODES)), (src, dst), 44, &p)
}

/// The DUID our fake guest uses: DUID-LL of its MAC.
pub fn duid(mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac);
    d
}

/// A DHCPv6 client message as a frame from the guest's link-local address to the servers.
pub fn dhcp6_frame(mac: [u8; 6], msg: &Message) -> Vec<u8> {
    build_udp6_frame(
        (mac, multicast_mac(ALL_DHCP_SERVERS)),
        (link_local(mac), ALL_DHCP_SERVERS),
        (546, 547),
        &msg.to_vec().unwrap(),
    )
}

/// A SOLICIT for one IA_NA (id 1), asking for DNS servers.
pub fn solicit(mac: [u8; 6], xid: [u8; 3], rapid: bool) -> Message {
    let mut m = Message::new_with_id(MessageType::Solicit, xid);
    let o = m.opts_mut();
    o.insert(DhcpOption::ClientId(duid(mac)));
    o.insert(DhcpOption::IANA(IANA {
        id: 1,
        t1: 0,
        t2: 0,
        opts: DhcpOptions::new(),
    }));
    o.insert(DhcpOption::ORO(ORO {
        opts: vec![OptionCode::DomainNameServers],
    }));
    o.insert(DhcpOption::ElapsedTime(0));
    if rapid {
        o.insert(DhcpOption::RapidCommit);
    }
    m
}

/// Parses a router advertisement frame.
pub fn parse_advert(f: &[u8]) -> Option<Advert> {
    let p = parse_ipv6_frame(f)?;
    let icmp = p.payload;
    if p.next_header != IPPROTO_ICMPV6 || icmp.len() < 16 || icmp[0] != 134 {
        return None;
    }
    let mut a = Advert {
        src_mac: p.src_mac,
        router: p.src_ip,
        hop_limit: p.hop_limit,
        managed: icmp[5] & 0x80 != 0,
        lifetime: u16::from_be_bytes([icmp[6], icmp[7]]),
        prefixes: Vec::new(),
        mtu: None,
        rdnss: Vec::new(),
        slla: None,
    };
    let mut rest = &icmp[16..];
    while rest.len() >= 8 {
        let len = usize::from(rest[1]) * 8;
        let opt = rest.get(..len.max(8))?;
        match opt[0] {
            1 => a.slla = opt.get(2..8)?.try_into().ok(),
            3 => {
                let prefix: [u8; 16] = opt.get(16..32)?.try_into().ok()?;
                a.prefixes.push((
                    prefix.into(),
                    opt[2],
                    opt[3] & 0x80 != 0,
                    opt[3] & 0x40 != 0,
                ))
            }
            5 => a.mtu = Some(u32::from_be_bytes(opt[4..8].try_into().ok()?)),
            25 => {
                for c in opt[8..].chunks_exact(16) {
                    a.rdnss.push(<[u8; 16]>::try_from(c).ok()?.into());
                }
            }
            _ => {}
        }
        rest = &rest[len.max(8)..];
    }
    Some(a)
}

impl FakeVm {
    /// Solicits a router from our link-local address and returns its advertisement.
    pub fn solicit_router(&self) -> Option<Advert> {
        self.send(&router_solicit(self.mac, link_local(self.mac)));
        self.recv_until(WAIT, parse_advert)
    }

    /// The DHCPv6 exchange: SOLICIT with rapid commit and REPLY, or SOLICIT, ADVERTISE,
    /// REQUEST (to the advertising server), REPLY.
    pub fn dhcpv6(&self, rapid: bool) -> Option<Lease6> {
        let xid = [0x6a, 0x6b, if rapid { 1 } else { 2 }];
        self.send(&dhcp6_frame(self.mac, &solicit(self.mac, xid, rapid)));
        let (first, from) = self.recv_until(WAIT, |f| reply_of(f, xid))?;
        let (reply, from) = if rapid {
            (first, from)
        } else {
            if first.msg_type() != MessageType::Advertise {
                return None;
            }
            let mut req = solicit(self.mac, [0x6a, 0x6c, 3], false);
            req.set_msg_type(MessageType::Request);
            let server = match first.opts().get(OptionCode::ServerId)? {
                DhcpOption::ServerId(id) => id.clone(),
                _ => return None,
            };
            req.opts_mut().insert(DhcpOption::ServerId(server));
            self.send(&dhcp6_frame(self.mac, &req));
            self.recv_until(WAIT, |f| reply_of(f, [0x6a, 0x6c, 3]))?
        };
        if reply.msg_type() != MessageType::Reply {
            return None;
        }
        lease_of(&reply, from)
    }

    /// The MAC that answers a neighbour solicitation for `target` from `src` (which also
    /// tells the answerer our MAC).
    pub fn resolve6(&self, src: Ipv6Addr, target: Ipv6Addr) -> Option<[u8; 6]> {
        self.send(&neighbor_solicit(self.mac, src, target));
        self.recv_until(WAIT, |f| {
            let p = parse_ipv6_frame(f)?;
            let icmp = p.payload;
            let na = p.next_header == IPPROTO_ICMPV6 && icmp.len() >= 24 && icmp[0] == 136;
            (na && icmp[8..24] == target.octets()).then_some(p.src_mac)
        })
    }

    /// Pings `dst` (on-link) from `src`; true if the echo reply came back.
    pub fn ping6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.ping6_via(src, dst, dst)
    }

    /// Pings `dst` from `src` through the neighbour `next_hop` (the router, for an address
    /// off the link); true if the echo reply came back from `dst`.
    pub fn ping6_via(&self, src: Ipv6Addr, next_hop: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let Some(mac) = self.resolve6(src, next_hop) else {
            return false;
        };
        let body = [0x12, 0x34, 0, 1, b'T', b'M', b'6'];
        self.send(&icmp6((self.mac, mac), (src, dst), 128, &body));
        self.recv_until(WAIT, |f| {
            let p = parse_ipv6_frame(f)?;
            (p.next_header == IPPROTO_ICMPV6 && p.payload.first() == Some(&129) && p.src_ip == dst)
                .then_some(())
        })
        .is_some()
    }

    /// Sends `payload` by UDP from `src` to `dst` (on-link, or through the router `next_hop`)
    /// and returns the answer's payload.
    pub fn udp6_exchange(
        &self,
        (src, next_hop, dst): (Ipv6Addr, Ipv6Addr, Ipv6Addr),
        (sport, dport): (u16, u16),
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let mac = self.resolve6(src, next_hop)?;
        self.send(&build_udp6_frame(
            (self.mac, mac),
            (src, dst),
            (sport, dport),
            payload,
        ));
        self.recv_until(WAIT, |f| {
            let p = parse_ipv6_frame(f)?;
            let u = parse_udp6(&p)?;
            (p.src_ip == dst && u.src_port == dport && u.dst_port == sport)
                .then(|| u.payload.to_vec())
        })
    }
}

/// A DHCPv6 server message to us with transaction `xid`, and where it came from.
fn reply_of(f: &[u8], xid: [u8; 3]) -> Option<(Message, Ipv6Addr)> {
    let p = parse_ipv6_frame(f)?;
    let u = parse_udp6(&p)?;
    if u.src_port != 547 || u.dst_port != 546 {
        return None;
    }
    let m = Message::decode(&mut Decoder::new(u.payload)).ok()?;
    (m.xid() == xid).then_some((m, p.src_ip))
}

fn lease_of(m: &Message, from: Ipv6Addr) -> Option<Lease6> {
    let ia = match m.opts().get(OptionCode::IANA)? {
        DhcpOption::IANA(ia) => ia,
        _ => return None,
    };
    let (address, valid) = ia.opts.iter().find_map(|o| match o {
        DhcpOption::IAAddr(a) if a.valid_life > 0 => Some((a.addr, a.valid_life)),
        _ => None,
    })?;
    let dns = match m.opts().get(OptionCode::DomainNameServers) {
        Some(DhcpOption::DomainNameServers(d)) => d.clone(),
        _ => Vec::new(),
    };
    let server_id = match m.opts().get(OptionCode::ServerId)? {
        DhcpOption::ServerId(id) => id.clone(),
        _ => return None,
    };
    Some(Lease6 {
        address,
        valid,
        dns,
        server_id,
        from,
    })
}

/// Frames on a capture that are ICMPv6 of type `kind` from `mac`.
pub fn icmp6_from(frames: &[Vec<u8>], mac: [u8; 6], kind: u8) -> usize {
    frames
        .iter()
        .filter_map(|f| parse_ipv6_frame(f))
        .filter(|p| p.src_mac == mac && p.next_header == 58 && p.payload.first() == Some(&kind))
        .count()
}

/// The MAC of a TAP's host side for a guest's `mac` (the daemon's: first byte 0xfe).
pub fn host_side(mac: [u8; 6]) -> [u8; 6] {
    let mut m = mac;
    m[0] = 0xfe;
    m
}
