//! Finding a router the daemon does not own. A guest behind a CNI plugin or in a pod is
//! routed by someone else's router (the plugin's bridge, the cluster's gateway): its router
//! advertisements must name that router's link-local address, the only kind of address a
//! default route learnt from them can go through (RFC 4861 section 4.2). The plugins say the
//! gateway's global address; this asks the link who owns it, the way a host would:
//!
//! 1. a neighbour solicitation for the gateway gives its MAC (and, for a link-local gateway,
//!    the answer);
//! 2. an echo request to all nodes, sent to that MAC alone, is answered from the router's
//!    link-local address (the kernel answers a multicast echo from the address it would use
//!    towards the asker). A second round sends it to the all-nodes group MAC and keeps the
//!    answer from the gateway's MAC, for a router that ignores a group address in a frame to
//!    itself; a router that answers no echo to all nodes at all is asked, last, whether it
//!    holds the EUI-64 link-local of its MAC.
//!
//! It believes the first answer: whoever else is on that link could forge one, as they could
//! send the guest router advertisements themselves.
//!
//! Blocking, with deadlines: call it on a thread inside the link's namespace (the socket is
//! bound there). Needs CAP_NET_RAW.

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::frame6::{
    icmp6_frame, is_link_local, link_local, multicast_mac, neighbor_advertisement,
    neighbor_message, neighbor_solicitation, parse_ipv6_frame, ALL_NODES, IPPROTO_ICMPV6,
};
use crate::packet;

const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
/// The echo's identifier and sequence: "tm" and 6, so the answer is ours.
const ECHO_ID: [u8; 4] = [0x74, 0x6d, 0, 6];

/// How often a solicitation is repeated (the kernel's default retransmission timer).
const RETRANSMIT: Duration = Duration::from_secs(1);
/// How long each of the echo's three rounds waits.
const ECHO_ROUND: Duration = Duration::from_millis(300);

/// The router that owns `gateway` on link `ifindex`: its link-local address and MAC, asked
/// from `mac` (whose EUI-64 link-local is the asking address). The solicitation is repeated
/// every second for up to `wait`: a gateway address just configured answers only once its
/// duplicate address detection is over (up to two seconds with the kernel's defaults).
/// `None` when nobody answered.
pub fn router_of(
    ifindex: u32,
    mac: [u8; 6],
    gateway: Ipv6Addr,
    wait: Duration,
) -> io::Result<Option<(Ipv6Addr, [u8; 6])>> {
    let fd = packet::open()?;
    packet::bind(fd.as_fd(), ifindex)?;
    let _ = packet::ignore_outgoing(fd.as_fd()); // outgoing frames are skipped below anyway
    let me = link_local(mac);
    let deadline = Instant::now() + wait;
    let mut router_mac = None;
    while router_mac.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        packet::send(fd.as_fd(), &neighbor_solicitation(mac, me, gateway))?;
        router_mac = until(
            fd.as_fd(),
            left.min(RETRANSMIT),
            (mac, me),
            |p| match neighbor_message(p) {
                Some((136, target, lla)) if target == gateway => Some(lla.unwrap_or(p.src_mac)),
                _ => None,
            },
        )?;
    }
    let Some(router_mac) = router_mac else {
        return Ok(None);
    };
    if is_link_local(gateway) {
        return Ok(Some((gateway, router_mac)));
    }
    for to in [
        router_mac,
        multicast_mac(ALL_NODES),
        multicast_mac(ALL_NODES),
    ] {
        let echo = icmp6_frame((mac, to), (me, ALL_NODES), ECHO_REQUEST, &ECHO_ID);
        packet::send(fd.as_fd(), &echo)?;
        let found = until(fd.as_fd(), ECHO_ROUND, (mac, me), |p| {
            let answer = p.next_header == IPPROTO_ICMPV6
                && p.payload.first() == Some(&ECHO_REPLY)
                && p.payload.get(4..8) == Some(&ECHO_ID[..])
                && p.src_mac == router_mac
                && is_link_local(p.src_ip);
            answer.then_some(p.src_ip)
        })?;
        if let Some(ll) = found {
            return Ok(Some((ll, router_mac)));
        }
    }
    // A router that answers no echo to all nodes: the link-local its MAC gives (the kernel's
    // default), if it claims it.
    let guess = link_local(router_mac);
    packet::send(fd.as_fd(), &neighbor_solicitation(mac, me, guess))?;
    let claimed = until(
        fd.as_fd(),
        ECHO_ROUND,
        (mac, me),
        |p| match neighbor_message(p) {
            Some((136, target, _)) if target == guess && p.src_mac == router_mac => Some(()),
            _ => None,
        },
    )?;
    Ok(claimed.map(|()| (guess, router_mac)))
}

/// Reads frames until `pick` takes one or `wait` is over. A solicitation for our own
/// address (the router resolving us before it answers) is answered on the way.
fn until<T>(
    fd: BorrowedFd<'_>,
    wait: Duration,
    (mac, me): ([u8; 6], Ipv6Addr),
    mut pick: impl FnMut(&crate::frame6::Ipv6Frame<'_>) -> Option<T>,
) -> io::Result<Option<T>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        loop {
            let got = match packet::recv(fd, &mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            if got.outgoing || got.len > buf.len() {
                continue;
            }
            let Some(p) = parse_ipv6_frame(&buf[..got.len]) else {
                continue;
            };
            if let Some((135, target, Some(asker))) = neighbor_message(&p) {
                if target == me && !p.src_ip.is_unspecified() {
                    packet::send(fd, &neighbor_advertisement((mac, asker), (me, p.src_ip)))?;
                }
                continue;
            }
            if let Some(t) = pick(&p) {
                return Ok(Some(t));
            }
        }
    }
}
