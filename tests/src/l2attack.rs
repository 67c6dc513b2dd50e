//! What the outside audit's hostile guest sent (issue 11, finding 1), for every kind's tests:
//! frames addressed to each link-local group MAC `01:80:c2:00:00:0X` (a bridge hands them to
//! the receiving port's own stack, past its `forward` and `input` hooks), and frames in
//! 802.1Q and 802.1ad tags. Each carries an IPv6 router advertisement (which, accepted, gives
//! the host a default route via the guest and a SLAAC address in 2001:db8:99::/64) or IPv4
//! UDP with a spoofed source to a host address. [`Effects`] reads what a namespace shows of
//! them afterwards; [`UdpSink`] is the host socket they must not reach.

use crate::fakevm::FakeVm;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

/// The prefix the advertisements offer; an address in it means SLAAC happened.
pub const RA_PREFIX: &str = "2001:db8:99:";
/// The UDP port the spoofed datagrams go to.
pub const SINK_PORT: u16 = 47_999;
/// What every spoofed datagram carries.
pub const MARKER: &[u8] = b"TM-L2-SPOOF";

/// `01:80:c2:00:00:00` to `01:80:c2:00:00:0f`.
pub fn link_local_groups() -> impl Iterator<Item = [u8; 6]> {
    (0..16u8).map(|x| [0x01, 0x80, 0xc2, 0, 0, x])
}

/// The one's-complement sum of 16-bit words (a checksum's pseudo-header part).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// The guest's link-local address (EUI-64 of its MAC).
fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..11].copy_from_slice(&[mac[0] ^ 2, mac[1], mac[2]]);
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13..16].copy_from_slice(&mac[3..6]);
    a
}

/// A router advertisement from the guest's link-local address to all nodes (ff02::1), sent
/// to `dst_mac`: router lifetime 1800 s, and a prefix (2001:db8:99::/64) to autoconfigure.
pub fn router_advertisement(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let src = link_local(src_mac);
    let dst: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut icmp = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    // Source link-layer address option.
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    // Prefix information: /64, on-link and autonomous, valid and preferred for an hour.
    icmp.extend_from_slice(&[3, 4, 64, 0xc0]);
    icmp.extend_from_slice(&3600u32.to_be_bytes());
    icmp.extend_from_slice(&3600u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let len = icmp.len() as u16;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = dhcp::frame::internet_checksum(&icmp, sum16(&pseudo));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&icmp);
    f
}

/// IPv4 UDP from `src_ip` (not the guest's) to `dst_ip`:[`SINK_PORT`], sent to `dst_mac`.
pub fn spoofed_udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
) -> Vec<u8> {
    dhcp::frame::build_ipv4_udp_frame(src_mac, dst_mac, src_ip, dst_ip, 4000, SINK_PORT, MARKER)
}

/// `frame` with a VLAN tag (`tpid` 0x8100 for 802.1Q, 0x88a8 for 802.1ad) after its MACs.
pub fn tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// Sends the whole attack from `vm`: for each link-local group MAC an advertisement and a
/// spoofed datagram to `target`; then both again in an 802.1Q, an 802.1ad and a double
/// (802.1ad outside 802.1Q) tag, to the all-nodes MAC, broadcast, each group MAC and
/// `target_mac`. Returns how many frames were sent.
pub fn send_all(vm: &FakeVm, spoof: Ipv4Addr, target: Ipv4Addr, target_mac: [u8; 6]) -> usize {
    let mut frames = Vec::new();
    for g in link_local_groups() {
        frames.push(router_advertisement(vm.mac, g));
        frames.push(spoofed_udp(vm.mac, g, spoof, target));
    }
    let all_nodes = [0x33, 0x33, 0, 0, 0, 1];
    let mut dsts = vec![all_nodes, [0xff; 6], target_mac];
    dsts.extend(link_local_groups());
    for dst in dsts {
        for inner in [
            router_advertisement(vm.mac, dst),
            spoofed_udp(vm.mac, dst, spoof, target),
        ] {
            frames.push(tagged(&inner, 0x8100, 5));
            frames.push(tagged(&inner, 0x88a8, 5));
            frames.push(tagged(&tagged(&inner, 0x8100, 6), 0x88a8, 5));
        }
    }
    // Twice, a few milliseconds apart: a first advertisement may meet an interface still
    // doing duplicate address detection.
    for _ in 0..2 {
        for f in &frames {
            vm.send(f);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    frames.len() * 2
}

/// What a namespace shows of an accepted advertisement: routes learned from one (`proto
/// ra`), default IPv6 routes, and addresses in [`RA_PREFIX`]. Empty when nothing was taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Effects(pub Vec<String>);

impl Effects {
    /// Reads them with `ip` run in the namespace of `nsfile` (a path `nsenter --net` takes).
    pub fn of(nsfile: &str) -> Effects {
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={nsfile}"))
                .arg("ip")
                .args(args)
                .output()
                .expect("nsenter ip");
            assert!(out.status.success(), "ip {args:?} in {nsfile}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let routes = ip(&["-6", "route", "show", "table", "all"]);
        let addrs = ip(&["-6", "-o", "addr", "show"]);
        Effects(
            routes
                .lines()
                .chain(addrs.lines())
                .filter(|l| {
                    l.contains("proto ra") || l.starts_with("default") || l.contains(RA_PREFIX)
                })
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// A UDP socket on 0.0.0.0:[`SINK_PORT`] in a namespace: the host socket spoofed datagrams
/// must not reach.
#[derive(Debug)]
pub struct UdpSink(UdpSocket);

impl UdpSink {
    /// Binds it on a thread in `ns` (the socket keeps that namespace).
    pub fn open(ns: &crate::sandbox::Netns) -> UdpSink {
        UdpSink(ns.run_in(|| {
            let s = UdpSocket::bind(("0.0.0.0", SINK_PORT)).expect("bind the sink");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        }))
    }

    /// Everything that arrived so far, with its source address.
    pub fn received(&self) -> Vec<(std::net::SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.0.recv_from(&mut buf) {
            got.push((from, buf[..n].to_vec()));
        }
        got
    }
}
