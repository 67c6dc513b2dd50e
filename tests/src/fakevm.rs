//! A fake guest on a TAP fd: reads and writes Ethernet frames the way a virtio NIC does
//! (each prefixed by a 10-byte `virtio_net_hdr`, since the TAP has `IFF_VNET_HDR`), runs a DHCP
//! DORA, ARPs, sends spoofed frames on demand, and opens an idle TCP connection with a bare
//! handshake (no TCP stack: what a guest that connects and then sends nothing puts on the wire).

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

const VNET_HDR: usize = 10;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// What the guest learned from DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub server_id: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub server_mac: [u8; 6],
    /// Option 121: (destination, next hop; 0.0.0.0 for on-link).
    pub routes: Vec<(ipnet::Ipv4Net, Ipv4Addr)>,
}

#[derive(Debug)]
pub struct FakeVm {
    fd: OwnedFd,
    pub mac: [u8; 6],
    /// The leased address, once [`FakeVm::dhcp`] got one: ARP requests for it are answered,
    /// as a real guest's kernel does (a gateway re-checks its neighbours now and then).
    ip: std::cell::Cell<Option<Ipv4Addr>>,
}

impl FakeVm {
    pub fn new(fd: OwnedFd, mac: [u8; 6]) -> FakeVm {
        FakeVm {
            fd,
            mac,
            ip: std::cell::Cell::new(None),
        }
    }

    /// Answers an ARP request for our address; true if `f` was one.
    fn answer_arp(&self, f: &[u8]) -> bool {
        let Some(ip) = self.ip.get() else {
            return false;
        };
        let request = f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1];
        if !request || f[38..42] != ip.octets() {
            return false;
        }
        let mut r = Vec::with_capacity(42);
        r.extend_from_slice(&f[22..28]);
        r.extend_from_slice(&self.mac);
        r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        r.extend_from_slice(&self.mac);
        r.extend_from_slice(&ip.octets());
        r.extend_from_slice(&f[22..32]);
        self.send(&r);
        true
    }

    /// Sends one Ethernet frame into the TAP (as the guest).
    pub fn send(&self, frame: &[u8]) {
        let mut buf = vec![0u8; VNET_HDR];
        buf.extend_from_slice(frame);
        nix::unistd::write(&self.fd, &buf).expect("write to TAP");
    }

    /// The next frame for the guest, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [nix::poll::PollFd::new(
                self.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let n =
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap()).ok()?;
            if n == 0 {
                return None;
            }
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(n) if n > VNET_HDR && self.answer_arp(&buf[VNET_HDR..n]) => continue,
                Ok(n) if n > VNET_HDR => return Some(buf[VNET_HDR..n].to_vec()),
                Ok(_) => continue,
                Err(nix::errno::Errno::EAGAIN) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for a frame `pick` accepts, discarding others.
    pub fn recv_until<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&[u8]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while let Some(f) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            if let Some(t) = pick(&f) {
                return Some(t);
            }
        }
        None
    }

    fn dhcp_frame(&self, msg: &Message) -> Vec<u8> {
        let mut payload = Vec::new();
        msg.encode(&mut Encoder::new(&mut payload)).unwrap();
        dhcp::frame::build_ipv4_udp_frame(
            self.mac,
            BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            &payload,
        )
    }

    fn dhcp_reply(&self, xid: u32, want: MessageType) -> Option<(Message, [u8; 6])> {
        self.recv_until(Duration::from_secs(5), |f| {
            let u = dhcp::frame::parse_ipv4_udp_frame(f)?;
            if u.dst_port != 68 {
                return None;
            }
            let m = Message::decode(&mut Decoder::new(u.payload)).ok()?;
            (m.xid() == xid && m.opts().msg_type() == Some(want)).then_some((m, u.src_mac))
        })
    }

    fn request(&self, xid: u32, kind: MessageType) -> Message {
        let mut m = Message::default();
        m.set_xid(xid)
            .set_flags(dhcproto::v4::Flags::default().set_broadcast())
            .set_chaddr(&self.mac);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::InterfaceMtu,
            OptionCode::DomainSearch,
        ]));
        m
    }

    /// One DHCPDISCOVER frame from this guest (for floods).
    pub fn discover_frame(&self, xid: u32) -> Vec<u8> {
        self.dhcp_frame(&self.request(xid, MessageType::Discover))
    }

    /// DISCOVER, OFFER, REQUEST, ACK.
    pub fn dhcp(&self) -> Option<Lease> {
        let xid = u32::from_be_bytes([self.mac[2], self.mac[3], self.mac[4], self.mac[5]]);
        self.send(&self.dhcp_frame(&self.request(xid, MessageType::Discover)));
        let (offer, _) = self.dhcp_reply(xid, MessageType::Offer)?;
        let mut req = self.request(xid, MessageType::Request);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        if let Some(DhcpOption::ServerIdentifier(s)) =
            offer.opts().get(OptionCode::ServerIdentifier)
        {
            req.opts_mut().insert(DhcpOption::ServerIdentifier(*s));
        }
        self.send(&self.dhcp_frame(&req));
        let (ack, server_mac) = self.dhcp_reply(xid, MessageType::Ack)?;
        Some(self.took(&ack, server_mac))
    }

    /// A renewal at T1 (RFC 2131 4.3.2, RENEWING): REQUEST with `ciaddr` = the leased
    /// address, unicast from it to the server that granted it; its ACK is the renewed lease.
    pub fn renew(&self, lease: &Lease) -> Option<Lease> {
        let xid = u32::from_be_bytes([self.mac[5], self.mac[4], self.mac[3], 0x52]);
        let server = lease.server_id?;
        let mut req = self.request(xid, MessageType::Request);
        req.set_flags(dhcproto::v4::Flags::default())
            .set_ciaddr(lease.ip);
        let mut payload = Vec::new();
        req.encode(&mut Encoder::new(&mut payload)).unwrap();
        self.send(&dhcp::frame::build_ipv4_udp_frame(
            self.mac,
            lease.server_mac,
            lease.ip,
            server,
            68,
            67,
            &payload,
        ));
        let (ack, server_mac) = self.dhcp_reply(xid, MessageType::Ack)?;
        Some(self.took(&ack, server_mac))
    }

    /// The lease an ACK grants; from now on ARP requests for its address are answered.
    fn took(&self, ack: &Message, server_mac: [u8; 6]) -> Lease {
        self.ip.set(Some(ack.yiaddr()));
        let o = ack.opts();
        let prefix_len = match o.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(m)) => u32::from(*m).count_ones() as u8,
            _ => 32,
        };
        Lease {
            ip: ack.yiaddr(),
            prefix_len,
            router: match o.get(OptionCode::Router) {
                Some(DhcpOption::Router(r)) => r.first().copied(),
                _ => None,
            },
            dns: match o.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(d)) => d.clone(),
                _ => Vec::new(),
            },
            mtu: match o.get(OptionCode::InterfaceMtu) {
                Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
                _ => None,
            },
            server_id: match o.get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
                _ => None,
            },
            lease_secs: match o.get(OptionCode::AddressLeaseTime) {
                Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
                _ => None,
            },
            server_mac,
            routes: match o.get(OptionCode::ClasslessStaticRoute) {
                Some(DhcpOption::ClasslessStaticRoute(r)) => r.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// Sends a UDP datagram from `src`:`sport` to `dst`:`dport` through the next hop at
    /// `gw_mac`, and returns the payload of the first datagram back from `dst`:`dport` to
    /// `sport`, waiting up to `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_exchange(
        &self,
        gw_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
        timeout: Duration,
    ) -> Option<Vec<u8>> {
        self.send(&dhcp::frame::build_ipv4_udp_frame(
            self.mac, gw_mac, src, dst, sport, dport, payload,
        ));
        self.recv_until(timeout, |f| {
            let u = dhcp::frame::parse_ipv4_udp_frame(f)?;
            (u.src_ip == dst && u.src_port == dport && u.dst_port == sport)
                .then(|| u.payload.to_vec())
        })
    }

    /// Sends an ARP request for `target` from (`src_mac`, `src_ip`) and returns the MAC that
    /// answers, if any.
    pub fn arp(&self, src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Option<[u8; 6]> {
        self.send(&arp_request(src_mac, src_ip, target));
        self.recv_until(Duration::from_secs(2), |f| {
            let is_reply = f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2];
            (is_reply && f[28..32] == target.octets()).then(|| f[22..28].try_into().unwrap())
        })
    }
}

/// An ARP request frame.
pub fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A broadcast UDP frame carrying `marker`, from (`src_mac`, `src_ip`).
pub fn marked_udp(src_mac: [u8; 6], src_ip: Ipv4Addr, marker: &[u8]) -> Vec<u8> {
    dhcp::frame::build_ipv4_udp_frame(
        src_mac,
        BROADCAST,
        src_ip,
        Ipv4Addr::BROADCAST,
        4000,
        4000,
        marker,
    )
}

/// A raw AF_PACKET capture on one interface of the calling thread's namespace.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Opens a capture on `ifname`; call from a thread inside the right namespace.
    pub fn open(ifname: &str) -> Capture {
        let index = nix::net::if_::if_nametoindex(ifname).expect("ifindex");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(proto),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        Capture { fd }
    }

    /// Every frame received within `window` that contains `needle`.
    pub fn count_containing(&self, needle: &[u8], window: Duration) -> usize {
        count(&self.frames(window), needle)
    }

    /// Every frame received within `window`.
    pub fn frames(&self, window: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(len) => out.push(buf[..len].to_vec()),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        out
    }
}

/// How many of `frames` contain `needle`.
pub fn count(frames: &[Vec<u8>], needle: &[u8]) -> usize {
    frames
        .iter()
        .filter(|f| f.windows(needle.len()).any(|w| w == needle))
        .count()
}

/// An ICMP echo request from (`src_mac`, `src_ip`) to `dst_ip`, sent to `next_hop_mac`.
pub fn icmp_echo(
    src_mac: [u8; 6],
    next_hop_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    seq: u16,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x7a, 0x6d, (seq >> 8) as u8, seq as u8];
    icmp.extend_from_slice(b"tapmanager-echo");
    let c = dhcp::frame::internet_checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, next_hop_mac, (src_ip, dst_ip), 1, &icmp)
}

/// An Ethernet frame carrying one IPv4 packet (no options, don't fragment, TTL 64) of
/// protocol `proto` from `ips.0` to `ips.1`.
pub fn ipv4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ips: (Ipv4Addr, Ipv4Addr),
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&ips.0.octets());
    ip.extend_from_slice(&ips.1.octets());
    let c = dhcp::frame::internet_checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + ip.len() + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

impl FakeVm {
    /// Pings `dst` through the gateway at `gw_mac`; true when the echo reply comes back from `dst`.
    pub fn ping(&self, gw_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.ping_from(self.mac, gw_mac, src, dst)
    }

    /// [`FakeVm::ping`] with the echo requests sent from `src_mac` (a spoofed one, say); the
    /// reply is looked for on this guest's TAP all the same.
    pub fn ping_from(
        &self,
        src_mac: [u8; 6],
        gw_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> bool {
        for seq in 1..=3u16 {
            self.send(&icmp_echo(src_mac, gw_mac, src, dst, seq));
            let got = self.recv_until(Duration::from_millis(700), |f| {
                let is_reply = f.len() >= 42
                    && f[12..14] == [0x08, 0x00]
                    && f[23] == 1
                    && f[26..30] == dst.octets()
                    && f[34] == 0;
                is_reply.then_some(())
            });
            if got.is_some() {
                return true;
            }
        }
        false
    }
}

/// TCP flags of the handshake.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// An Ethernet/IPv4/TCP segment without payload or options, as one frame.
pub fn tcp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]); // window 65535
                                                                     // The pseudo-header: source, destination, protocol 6, TCP length.
    let word = |b: [u8; 4], i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
    let (s, d) = (src.ip().octets(), dst.ip().octets());
    let pseudo = word(s, 0) + word(s, 2) + word(d, 0) + word(d, 2) + 6 + tcp.len() as u32;
    let c = dhcp::frame::internet_checksum(&tcp, pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, dst_mac, (*src.ip(), *dst.ip()), 6, &tcp)
}

/// A TCP segment's (source, destination, seq, ack, flags), if `f` carries one.
pub fn parse_tcp(f: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, u32, u32, u8)> {
    if f.get(12..14)? != [0x08, 0x00] || *f.get(23)? != 6 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let t = f.get(14 + ihl..14 + ihl + 20)?;
    let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
    let be32 = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    Some((
        SocketAddrV4::new(ip(26), u16::from_be_bytes([t[0], t[1]])),
        SocketAddrV4::new(ip(30), u16::from_be_bytes([t[2], t[3]])),
        be32(4),
        be32(8),
        t[13],
    ))
}

impl FakeVm {
    /// Opens a TCP connection from `src` to `dst` through the next hop at `gw_mac` with the
    /// three frames of a handshake (SYN, the peer's SYN-ACK, ACK) and sends nothing more: to
    /// the peer it is an open connection that stays idle. Like a TCP stack, it sends the SYN
    /// again after a second without answer (a listener whose accept queue is full drops SYNs);
    /// false when none came after three.
    pub fn tcp_open_idle(&self, gw_mac: [u8; 6], src: SocketAddrV4, dst: SocketAddrV4) -> bool {
        let isn = 0x1000_0000 ^ u32::from(src.port());
        let syn = tcp_frame(self.mac, gw_mac, src, dst, isn, 0, TCP_SYN);
        let peer_isn = (0..3).find_map(|_| {
            self.send(&syn);
            self.recv_until(Duration::from_secs(1), |f| {
                let (from, to, seq, ack, flags) = parse_tcp(f)?;
                let syn_ack = flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
                (from == dst && to == src && syn_ack && ack == isn.wrapping_add(1)).then_some(seq)
            })
        });
        let Some(peer_isn) = peer_isn else {
            return false;
        };
        let (seq, ack) = (isn.wrapping_add(1), peer_isn.wrapping_add(1));
        self.send(&tcp_frame(self.mac, gw_mac, src, dst, seq, ack, TCP_ACK));
        true
    }
}
