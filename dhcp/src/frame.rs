//! Ethernet + IPv4 + UDP framing, by hand, for the DHCP server's AF_PACKET socket.
//!
//! The server talks to a guest that has no address yet, so it cannot use a UDP socket: it
//! reads and writes whole Ethernet frames and builds the headers itself. These functions are
//! pure and public because the integration tests' fake guest builds its DISCOVER frames and
//! parses the server's replies with the same code.
//!
//! Parsing treats every byte as hostile (it comes from the guest): lengths are checked against
//! the frame, fragments and IPv4 options beyond the header length are handled, and the IPv4
//! header checksum must verify. The UDP checksum is deliberately not verified: a virtio guest
//! with checksum offload hands the host frames whose UDP checksum is only the pseudo-header
//! part (the TAP's vnet header says "needs checksum"), and a raw socket sees them that way.

use std::net::Ipv4Addr;

/// Length of an Ethernet II header (no VLAN tag).
pub const ETH_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// Largest UDP payload that fits one IPv4 packet.
pub const MAX_UDP_PAYLOAD: usize = 65535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// One Ethernet/IPv4/UDP frame, borrowed from the buffer it was parsed from (or to be built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
    /// IPv4 source address.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination address.
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload (for DHCP: the BOOTP message).
    pub payload: &'a [u8],
}

impl UdpFrame<'_> {
    /// Serializes the frame: Ethernet II, a 20-byte IPv4 header (TTL 64, DF, correct header
    /// checksum) and UDP with its checksum computed.
    ///
    /// # Panics
    /// If the payload is longer than [`MAX_UDP_PAYLOAD`].
    pub fn to_bytes(&self) -> Vec<u8> {
        assert!(
            self.payload.len() <= MAX_UDP_PAYLOAD,
            "UDP payload of {} bytes does not fit an IPv4 packet",
            self.payload.len()
        );
        let udp_len = UDP_HEADER_LEN + self.payload.len();
        let ip_len = IPV4_HEADER_LEN + udp_len;
        let mut f = Vec::with_capacity(ETH_HEADER_LEN + ip_len);

        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

        let ip_start = f.len();
        f.push(0x45); // version 4, header length 5 words
        f.push(0); // DSCP/ECN
        f.extend_from_slice(&(ip_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]); // identification: unused with DF
        f.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
        f.push(64); // TTL
        f.push(IPPROTO_UDP);
        f.extend_from_slice(&[0, 0]); // checksum, filled below
        f.extend_from_slice(&self.src_ip.octets());
        f.extend_from_slice(&self.dst_ip.octets());
        let sum = internet_checksum(&f[ip_start..ip_start + IPV4_HEADER_LEN], 0);
        f[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());

        let udp_start = f.len();
        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]); // checksum, filled below
        f.extend_from_slice(self.payload);
        let mut sum = internet_checksum(
            &f[udp_start..],
            pseudo_header_sum(self.src_ip, self.dst_ip, udp_len as u16),
        );
        if sum == 0 {
            // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
            sum = 0xffff;
        }
        f[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
        f
    }
}

/// Builds an Ethernet/IPv4/UDP frame around `payload`; see [`UdpFrame::to_bytes`].
///
/// # Panics
/// If the payload is longer than [`MAX_UDP_PAYLOAD`].
pub fn build_ipv4_udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    UdpFrame {
        src_mac,
        dst_mac,
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        payload,
    }
    .to_bytes()
}

/// Parses an untagged Ethernet II frame carrying an unfragmented IPv4/UDP packet.
///
/// Returns `None` for anything else or anything inconsistent: short frame, other ethertype,
/// IP version not 4, header length below 20 or past the frame, total length past the frame,
/// bad IPv4 header checksum, a fragment, another protocol, or a UDP length that disagrees
/// with the IP length. Trailing Ethernet padding is ignored.
pub fn parse_ipv4_udp_frame(frame: &[u8]) -> Option<UdpFrame<'_>> {
    let eth = frame.get(..ETH_HEADER_LEN)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let packet = &frame[ETH_HEADER_LEN..];

    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_HEADER_LEN {
        return None;
    }
    let header = packet.get(..ihl)?;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < ihl + UDP_HEADER_LEN || total_len > packet.len() {
        return None;
    }
    if internet_checksum(header, 0) != 0 {
        return None;
    }
    let more_fragments_or_offset = u16::from_be_bytes([header[6], header[7]]) & 0x3fff;
    if more_fragments_or_offset != 0 || header[9] != IPPROTO_UDP {
        return None;
    }

    let udp = &packet[ihl..total_len];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return None;
    }

    Some(UdpFrame {
        dst_mac: eth[0..6].try_into().ok()?,
        src_mac: eth[6..12].try_into().ok()?,
        src_ip: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
        dst_ip: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[UDP_HEADER_LEN..udp_len],
    })
}

/// RFC 1071 one's-complement checksum of `data`, starting from the partial sum `initial`.
/// Over a header that contains its own correct checksum the result is 0.
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Partial sum of the UDP pseudo-header (source, destination, protocol, UDP length).
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let word = |b: [u8; 4], i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
    let (s, d) = (src.octets(), dst.octets());
    word(s, 0) + word(s, 2) + word(d, 0) + word(d, 2) + u32::from(IPPROTO_UDP) + u32::from(udp_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const BCAST: [u8; 6] = [0xff; 6];

    fn discover_frame() -> Vec<u8> {
        build_ipv4_udp_frame(
            GUEST,
            BCAST,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            b"hello dhcp",
        )
    }

    #[test]
    fn build_then_parse_round_trips() {
        let bytes = discover_frame();
        let f = parse_ipv4_udp_frame(&bytes).unwrap();
        assert_eq!(
            f,
            UdpFrame {
                src_mac: GUEST,
                dst_mac: BCAST,
                src_ip: Ipv4Addr::UNSPECIFIED,
                dst_ip: Ipv4Addr::BROADCAST,
                src_port: 68,
                dst_port: 67,
                payload: b"hello dhcp",
            }
        );
    }

    #[test]
    fn ipv4_header_checksum_matches_known_value() {
        // The classic example header from Wikipedia's "IPv4 header checksum" article:
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&header, 0), 0xb861);
        header[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(internet_checksum(&header, 0), 0);
    }

    #[test]
    fn built_frame_has_valid_ipv4_checksum_and_fields() {
        let bytes = discover_frame();
        let ip = &bytes[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
        assert_eq!(internet_checksum(ip, 0), 0);
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 20 + 8 + 10);
        assert_eq!(ip[8], 64);
        assert_eq!(ip[9], 17);
        assert_eq!(&bytes[12..14], &[0x08, 0x00]);
    }

    #[test]
    fn built_frame_has_valid_udp_checksum() {
        let bytes = discover_frame();
        let udp = &bytes[ETH_HEADER_LEN + IPV4_HEADER_LEN..];
        let pseudo = pseudo_header_sum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 18);
        assert_ne!(&udp[6..8], &[0, 0]);
        assert_eq!(internet_checksum(udp, pseudo), 0);
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut bytes = build_ipv4_udp_frame(
            GUEST,
            BCAST,
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            68,
            67,
            b"x",
        );
        bytes.resize(60, 0);
        assert_eq!(parse_ipv4_udp_frame(&bytes).unwrap().payload, b"x");
    }

    #[test]
    fn ipv4_options_are_skipped() {
        // Re-build the packet with a 24-byte header (one NOP-padded option word).
        let plain = discover_frame();
        let mut f = plain[..ETH_HEADER_LEN].to_vec();
        let mut ip = plain[ETH_HEADER_LEN..ETH_HEADER_LEN + 20].to_vec();
        ip[0] = 0x46;
        let total = u16::from_be_bytes([ip[2], ip[3]]) + 4;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend([1, 1, 1, 0]); // NOP NOP NOP EOL
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&ip, 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend(ip);
        f.extend(&plain[ETH_HEADER_LEN + 20..]);
        assert_eq!(parse_ipv4_udp_frame(&f).unwrap().payload, b"hello dhcp");
    }

    #[test]
    fn empty_and_short_frames_are_rejected() {
        let bytes = discover_frame();
        for len in [0, 13, 14, 20, 33, 41] {
            assert_eq!(parse_ipv4_udp_frame(&bytes[..len]), None, "length {len}");
        }
    }

    #[test]
    fn truncated_payload_is_rejected() {
        let bytes = discover_frame();
        assert_eq!(parse_ipv4_udp_frame(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn bad_ipv4_checksum_is_rejected() {
        let mut bytes = discover_frame();
        bytes[ETH_HEADER_LEN + 10] ^= 0xff;
        assert_eq!(parse_ipv4_udp_frame(&bytes), None);
    }

    fn with_ip_byte(index: usize, value: u8) -> Vec<u8> {
        let mut bytes = discover_frame();
        bytes[ETH_HEADER_LEN + index] = value;
        let ip = ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN;
        bytes[ETH_HEADER_LEN + 10..ETH_HEADER_LEN + 12].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&bytes[ip], 0);
        bytes[ETH_HEADER_LEN + 10..ETH_HEADER_LEN + 12].copy_from_slice(&sum.to_be_bytes());
        bytes
    }

    #[test]
    fn non_udp_is_rejected() {
        assert_eq!(parse_ipv4_udp_frame(&with_ip_byte(9, 6)), None);
    }

    #[test]
    fn ipv6_version_is_rejected() {
        assert_eq!(parse_ipv4_udp_frame(&with_ip_byte(0, 0x65)), None);
    }

    #[test]
    fn header_length_below_20_is_rejected() {
        assert_eq!(parse_ipv4_udp_frame(&with_ip_byte(0, 0x44)), None);
    }

    #[test]
    fn fragment_is_rejected() {
        // More-fragments bit.
        assert_eq!(parse_ipv4_udp_frame(&with_ip_byte(6, 0x20)), None);
    }

    #[test]
    fn total_length_past_frame_is_rejected() {
        assert_eq!(parse_ipv4_udp_frame(&with_ip_byte(2, 0x10)), None);
    }

    #[test]
    fn udp_length_past_ip_length_is_rejected() {
        let mut bytes = discover_frame();
        let udp_len = ETH_HEADER_LEN + IPV4_HEADER_LEN + 4;
        bytes[udp_len..udp_len + 2].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse_ipv4_udp_frame(&bytes), None);
    }

    #[test]
    fn udp_length_below_header_is_rejected() {
        let mut bytes = discover_frame();
        let udp_len = ETH_HEADER_LEN + IPV4_HEADER_LEN + 4;
        bytes[udp_len..udp_len + 2].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(parse_ipv4_udp_frame(&bytes), None);
    }

    #[test]
    fn vlan_tagged_frame_is_rejected() {
        let mut bytes = discover_frame();
        bytes[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_ipv4_udp_frame(&bytes), None);
    }
}
