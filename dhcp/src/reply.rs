//! The DHCP server's decisions: one request and the binding in, the reply (or silence) out.
//!
//! Pure on purpose (no sockets, no clock, no state) so every rule of RFC 2131 this server
//! follows is a unit test that builds a request and looks at the reply. There is exactly one
//! client and one address per server, so there is no lease table: a request for the bound
//! address is acknowledged, a request for any other address is refused (DHCPNAK), and
//! DHCPRELEASE/DHCPDECLINE change nothing because the daemon owns the binding.
//!
//! Options are emitted in option-code order, not in the order of the client's parameter
//! request list: dhcproto keeps options in a map sorted by code. RFC 2131 does not require the
//! request order, and no client we know of depends on it.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::Encodable;
use ipnet::Ipv4Net;
use tracing::debug;

use crate::binding::{search_names, Binding};

/// Smallest "maximum DHCP message size" a client may announce (RFC 2132 section 9.10), and the
/// size assumed when it announces none. It counts the IPv4 and UDP headers.
const MIN_MAX_MESSAGE_SIZE: u16 = 576;
/// IPv4 header (no options) plus UDP header.
const IP_UDP_HEADERS: usize = 28;

/// Options dropped, in this order, when a reply does not fit the client's maximum message size.
/// Address, mask, router, DNS, lease times, server id and routes are never dropped.
const DROPPABLE: [OptionCode; 5] = [
    OptionCode::DomainSearch,
    OptionCode::DomainName,
    OptionCode::Hostname,
    OptionCode::InterfaceMtu,
    OptionCode::BroadcastAddr,
];

/// The answer to `req` from the server holding binding `b`, or `None` to stay silent.
///
/// Silent for: anything but a BOOTREQUEST, a client hardware address other than `b.mac`, no
/// message type, a DHCPREQUEST that names another server (option 54), DHCPRELEASE, DHCPDECLINE
/// and message types a server never receives.
pub fn reply(req: &Message, b: &Binding) -> Option<Message> {
    if req.opcode() != Opcode::BootRequest {
        return None;
    }
    // Check hlen before chaddr(): dhcproto slices chaddr by hlen and panics above 16.
    if req.htype() != HType::Eth || req.hlen() != 6 || req.chaddr() != b.mac {
        return None;
    }
    match req.opts().msg_type()? {
        MessageType::Discover => Some(lease(req, b, MessageType::Offer)),
        MessageType::Request => request(req, b),
        MessageType::Inform => Some(inform(req, b)),
        kind @ (MessageType::Release | MessageType::Decline) => {
            // The daemon owns the binding; a guest giving its address back changes nothing.
            debug!(
                ?kind,
                xid = req.xid(),
                "client released or declined its address"
            );
            None
        }
        kind => {
            debug!(
                ?kind,
                xid = req.xid(),
                "ignoring message type a server does not answer"
            );
            None
        }
    }
}

/// DHCPREQUEST: SELECTING (option 54 + 50), INIT-REBOOT (50 only) or RENEWING/REBINDING
/// (ciaddr only).
fn request(req: &Message, b: &Binding) -> Option<Message> {
    if let Some(DhcpOption::ServerIdentifier(id)) = req.opts().get(OptionCode::ServerIdentifier) {
        if *id != b.server_id {
            // The client chose another server's offer: that conversation is not ours.
            debug!(xid = req.xid(), server = %id, "request is for another server");
            return None;
        }
    }
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
        _ => req.ciaddr(),
    };
    if requested.is_unspecified() {
        debug!(xid = req.xid(), "request names no address");
        return None;
    }
    if requested == b.ip {
        Some(lease(req, b, MessageType::Ack))
    } else {
        debug!(xid = req.xid(), %requested, "refusing request for another address");
        Some(nak(req, b))
    }
}

/// DHCPOFFER or DHCPACK carrying the address, the lease times and the configuration.
fn lease(req: &Message, b: &Binding, kind: MessageType) -> Message {
    let mut m = base(req, b, kind);
    m.set_yiaddr(b.ip);
    if kind == MessageType::Ack {
        // RFC 2131 table 3: an ACK echoes ciaddr (0 unless renewing/rebinding).
        m.set_ciaddr(req.ciaddr());
    }
    let lease = u64::from(b.lease_secs);
    let opts = m.opts_mut();
    opts.insert(DhcpOption::AddressLeaseTime(b.lease_secs));
    // Both fit in u32: they are at most lease_secs.
    opts.insert(DhcpOption::Renewal((lease / 2) as u32));
    opts.insert(DhcpOption::Rebinding((lease * 7 / 8) as u32));
    configure(&mut m, req, b);
    fit(m, req)
}

/// DHCPACK to DHCPINFORM: configuration only. RFC 2131 section 4.3.5: no yiaddr, no lease
/// time; the client already has its address (ciaddr).
fn inform(req: &Message, b: &Binding) -> Message {
    let mut m = base(req, b, MessageType::Ack);
    m.set_ciaddr(req.ciaddr());
    configure(&mut m, req, b);
    fit(m, req)
}

/// DHCPNAK: RFC 2131 table 3 allows only the message type, server id and a message.
fn nak(req: &Message, b: &Binding) -> Message {
    let mut m = base(req, b, MessageType::Nak);
    m.opts_mut().insert(DhcpOption::Message(
        "requested address is not the one assigned to this interface".into(),
    ));
    m
}

/// The fields every reply shares: BOOTREPLY, the request's xid, flags, giaddr and chaddr,
/// the message type and our server identifier.
fn base(req: &Message, b: &Binding, kind: MessageType) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(
        req.xid(),
        unspecified,
        unspecified,
        unspecified,
        req.giaddr(),
        req.chaddr(),
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(b.server_id));
    m
}

/// Adds the network configuration. Mask, router, DNS, broadcast and routes always go out (a
/// client that cannot use them ignores them); host name, domain name, MTU and search list only
/// when the client asked for them, or sent no parameter request list at all.
fn configure(m: &mut Message, req: &Message, b: &Binding) {
    let asked = requested_options(req);
    let wants = |code: OptionCode| asked.as_ref().is_none_or(|list| list.contains(&code));
    let subnet = b.subnet();
    let opts = m.opts_mut();

    if let Some(net) = subnet {
        opts.insert(DhcpOption::SubnetMask(net.netmask()));
        // /31 and /32 have no broadcast address (RFC 3021).
        if net.prefix_len() <= 30 {
            opts.insert(DhcpOption::BroadcastAddr(net.broadcast()));
        }
    }
    if let Some(gw) = b.gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    if !b.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(b.dns.clone()));
    }
    let routes = classless_routes(b);
    if !routes.is_empty() {
        opts.insert(DhcpOption::ClasslessStaticRoute(routes));
    }
    if let Some(name) = b.hostname.as_ref().filter(|_| wants(OptionCode::Hostname)) {
        opts.insert(DhcpOption::Hostname(name.clone()));
    }
    if let Some(domain) = b.domain.as_ref().filter(|_| wants(OptionCode::DomainName)) {
        opts.insert(DhcpOption::DomainName(domain.clone()));
    }
    if let Some(mtu) = b.mtu.filter(|_| wants(OptionCode::InterfaceMtu)) {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    if !b.search.is_empty() && wants(OptionCode::DomainSearch) {
        // validate() rejected bad names already; if one slipped through, leave the option out
        // rather than send a broken list.
        if let Ok(names) = search_names(&b.search) {
            opts.insert(DhcpOption::DomainSearch(names));
        }
    }
}

/// The option 121 list, or empty when option 3 alone says everything.
///
/// RFC 3442: a client that accepts option 121 ignores option 3, so whenever 121 is sent and a
/// gateway is set, the default route goes into 121 too. A next hop outside the guest's subnet
/// (a CNI /32 address with a 169.254.1.1 gateway, say) is unreachable until the client has a
/// route to it, so an on-link host route (`hop/32` via `0.0.0.0`) for it comes first.
pub(crate) fn classless_routes(b: &Binding) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let on_link = |ip: Ipv4Addr| b.subnet().is_some_and(|net| net.contains(&ip));
    let gateway_off_link = b.gateway.is_some_and(|gw| !on_link(gw));
    if b.routes.is_empty() && !gateway_off_link {
        return Vec::new();
    }

    let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = b
        .routes
        .iter()
        .map(|(dst, via)| (dst.trunc(), *via))
        .collect();
    if let Some(gw) = b.gateway {
        if !routes.iter().any(|(dst, _)| dst.prefix_len() == 0) {
            routes.push((Ipv4Net::default(), gw));
        }
    }

    let mut out: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
    for (_, via) in &routes {
        let host = host_route(*via);
        let present = out.iter().chain(&routes).any(|(dst, _)| *dst == host);
        if !via.is_unspecified() && !on_link(*via) && !present {
            out.push((host, Ipv4Addr::UNSPECIFIED));
        }
    }
    out.extend(routes);
    out
}

fn host_route(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(ip)
}

/// The client's parameter request list (option 55), if it sent one.
fn requested_options(req: &Message) -> Option<Vec<OptionCode>> {
    match req.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(list)) => Some(list.clone()),
        _ => None,
    }
}

/// Drops optional options until the encoded reply fits the client's maximum message size
/// (option 57, at least 576). Still too big means it goes out anyway: the essentials are
/// never dropped, and a client that truncates them would not work with a smaller reply either.
fn fit(mut m: Message, req: &Message) -> Message {
    let max = match req.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => (*n).max(MIN_MAX_MESSAGE_SIZE),
        _ => MIN_MAX_MESSAGE_SIZE,
    };
    let limit = usize::from(max) - IP_UDP_HEADERS;
    for code in DROPPABLE {
        if encoded_len(&m) <= limit {
            break;
        }
        if m.opts_mut().remove(code).is_some() {
            debug!(
                xid = req.xid(),
                ?code,
                "option dropped to fit the client's message size"
            );
        }
    }
    m
}

fn encoded_len(m: &Message) -> usize {
    // Encoding into a Vec only fails on values that cannot be represented, which a validated
    // binding does not produce; count such a reply as too big so optional options go first.
    m.to_vec().map_or(usize::MAX, |bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::tests::full;
    use dhcproto::v4::Flags;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn request_msg(kind: MessageType) -> Message {
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(0xdead_beef, u, u, u, u, &MAC);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    fn with_prl(mut m: Message, codes: &[u8]) -> Message {
        let list = codes.iter().map(|c| OptionCode::from(*c)).collect();
        m.opts_mut().insert(DhcpOption::ParameterRequestList(list));
        m
    }

    /// A DISCOVER asking for every option this server knows.
    fn discover() -> Message {
        with_prl(
            request_msg(MessageType::Discover),
            &[1, 3, 6, 12, 15, 26, 28, 42, 119, 121],
        )
    }

    /// The raw value bytes of option `code` in the encoded reply, found by walking the wire
    /// format by hand so the tests do not trust dhcproto's decoder.
    fn raw_option(m: &Message, code: u8) -> Option<Vec<u8>> {
        let bytes = m.to_vec().unwrap();
        assert_eq!(&bytes[236..240], &[99, 130, 83, 99], "magic cookie");
        let mut i = 240;
        let mut value: Option<Vec<u8>> = None;
        while i < bytes.len() {
            match bytes[i] {
                0 => i += 1,
                255 => break,
                c => {
                    let len = usize::from(bytes[i + 1]);
                    if c == code {
                        // RFC 3396: a split option is the concatenation of its parts.
                        value
                            .get_or_insert_with(Vec::new)
                            .extend(&bytes[i + 2..i + 2 + len]);
                    }
                    i += 2 + len;
                }
            }
        }
        value
    }

    fn offer(b: &Binding) -> Message {
        reply(&discover(), b).unwrap()
    }

    #[test]
    fn discover_gets_offer_with_address_and_copied_fields() {
        let mut req = discover();
        req.set_flags(Flags::default().set_broadcast())
            .set_giaddr(Ipv4Addr::new(192, 0, 2, 9));
        let m = reply(&req, &full()).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.xid(), 0xdead_beef);
        assert!(m.flags().broadcast());
        assert_eq!(m.giaddr(), Ipv4Addr::new(192, 0, 2, 9));
        assert_eq!(m.chaddr(), &MAC);
        assert_eq!(m.htype(), HType::Eth);
    }

    #[test]
    fn option_1_subnet_mask() {
        assert_eq!(raw_option(&offer(&full()), 1), Some(vec![255, 255, 255, 0]));
    }

    #[test]
    fn option_3_router() {
        assert_eq!(raw_option(&offer(&full()), 3), Some(vec![10, 0, 0, 1]));
    }

    #[test]
    fn option_3_absent_without_gateway() {
        let b = Binding {
            gateway: None,
            ..full()
        };
        assert_eq!(raw_option(&offer(&b), 3), None);
    }

    #[test]
    fn option_6_dns_in_order() {
        assert_eq!(
            raw_option(&offer(&full()), 6),
            Some(vec![10, 0, 0, 1, 9, 9, 9, 9])
        );
    }

    #[test]
    fn option_12_hostname() {
        assert_eq!(raw_option(&offer(&full()), 12), Some(b"vm1".to_vec()));
    }

    #[test]
    fn option_15_domain_name() {
        assert_eq!(
            raw_option(&offer(&full()), 15),
            Some(b"example.com".to_vec())
        );
    }

    #[test]
    fn option_26_mtu() {
        assert_eq!(raw_option(&offer(&full()), 26), Some(vec![0x05, 0x78]));
    }

    #[test]
    fn option_26_only_when_asked() {
        let req = with_prl(request_msg(MessageType::Discover), &[1, 3, 6]);
        assert_eq!(raw_option(&reply(&req, &full()).unwrap(), 26), None);
    }

    #[test]
    fn option_28_broadcast() {
        assert_eq!(raw_option(&offer(&full()), 28), Some(vec![10, 0, 0, 255]));
    }

    #[test]
    fn option_28_absent_on_slash_32() {
        let b = Binding {
            prefix_len: 32,
            ..full()
        };
        assert_eq!(raw_option(&offer(&b), 28), None);
    }

    #[test]
    fn option_51_lease_time() {
        // 3600 = 0x0e10
        assert_eq!(
            raw_option(&offer(&full()), 51),
            Some(vec![0, 0, 0x0e, 0x10])
        );
    }

    #[test]
    fn option_58_renewal_is_half_the_lease() {
        // 1800 = 0x0708
        assert_eq!(
            raw_option(&offer(&full()), 58),
            Some(vec![0, 0, 0x07, 0x08])
        );
    }

    #[test]
    fn option_59_rebinding_is_seven_eighths() {
        // 3150 = 0x0c4e
        assert_eq!(
            raw_option(&offer(&full()), 59),
            Some(vec![0, 0, 0x0c, 0x4e])
        );
    }

    #[test]
    fn option_59_does_not_overflow_on_huge_lease() {
        let b = Binding {
            lease_secs: u32::MAX,
            ..full()
        };
        // 4294967295 * 7 / 8 = 3758096383 = 0xdfffffff
        assert_eq!(
            raw_option(&offer(&b), 59),
            Some(vec![0xdf, 0xff, 0xff, 0xff])
        );
    }

    #[test]
    fn option_54_server_identifier() {
        let b = Binding {
            server_id: Ipv4Addr::new(10, 0, 0, 254),
            ..full()
        };
        assert_eq!(raw_option(&offer(&b), 54), Some(vec![10, 0, 0, 254]));
    }

    #[test]
    fn option_119_search_list_rfc1035_compressed() {
        // "example.com" at offset 0: 7 "example" 3 "com" 0 (13 bytes);
        // "lab.example.com": 3 "lab", then a pointer to offset 0 (0xc0 0x00).
        let mut want = vec![7];
        want.extend(b"example");
        want.push(3);
        want.extend(b"com");
        want.push(0);
        want.push(3);
        want.extend(b"lab");
        want.extend([0xc0, 0x00]);
        assert_eq!(raw_option(&offer(&full()), 119), Some(want));
    }

    #[test]
    fn option_119_single_name() {
        let b = Binding {
            search: vec!["corp".into()],
            ..full()
        };
        assert_eq!(raw_option(&offer(&b), 119), Some(b"\x04corp\x00".to_vec()));
    }

    #[test]
    fn option_121_absent_with_on_link_gateway_and_no_routes() {
        assert_eq!(raw_option(&offer(&full()), 121), None);
    }

    #[test]
    fn option_121_routes_then_default_with_on_link_gateway() {
        let b = Binding {
            routes: vec![(
                "192.168.0.0/16".parse().unwrap(),
                Ipv4Addr::new(10, 0, 0, 2),
            )],
            ..full()
        };
        assert_eq!(
            raw_option(&offer(&b), 121),
            Some(vec![
                16, 192, 168, 10, 0, 0, 2, // 192.168.0.0/16 via 10.0.0.2
                0, 10, 0, 0, 1, // 0.0.0.0/0 via 10.0.0.1
            ])
        );
    }

    #[test]
    fn option_121_on_link_route_first_for_gateway_outside_slash_32() {
        let b = Binding {
            ip: Ipv4Addr::new(10, 244, 1, 7),
            prefix_len: 32,
            gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
            server_id: Ipv4Addr::new(169, 254, 1, 1),
            ..full()
        };
        assert_eq!(
            raw_option(&offer(&b), 121),
            Some(vec![
                32, 169, 254, 1, 1, 0, 0, 0, 0, // 169.254.1.1/32 on-link
                0, 169, 254, 1, 1, // 0.0.0.0/0 via 169.254.1.1
            ])
        );
        // Option 3 still goes out for clients without 121 support.
        assert_eq!(raw_option(&offer(&b), 3), Some(vec![169, 254, 1, 1]));
    }

    #[test]
    fn option_121_truncates_host_bits_of_destinations() {
        let b = Binding {
            routes: vec![("172.16.5.9/12".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 3))],
            gateway: None,
            ..full()
        };
        assert_eq!(
            raw_option(&offer(&b), 121),
            Some(vec![12, 172, 16, 10, 0, 0, 3])
        );
    }

    #[test]
    fn offer_always_carries_core_options_even_if_not_asked() {
        let req = with_prl(request_msg(MessageType::Discover), &[12]);
        let m = reply(&req, &full()).unwrap();
        for code in [1u8, 3, 6, 51, 54, 58, 59] {
            assert!(raw_option(&m, code).is_some(), "option {code} missing");
        }
    }

    #[test]
    fn no_parameter_list_gets_everything_configured() {
        let m = reply(&request_msg(MessageType::Discover), &full()).unwrap();
        for code in [12u8, 15, 26, 119] {
            assert!(raw_option(&m, code).is_some(), "option {code} missing");
        }
    }

    #[test]
    fn optional_options_dropped_to_fit_576() {
        let b = Binding {
            // Distinct names share no suffix, so compression cannot save them: ~600 bytes.
            search: (0..12)
                .map(|i| format!("{}{i}.org{i}", "x".repeat(45)))
                .collect(),
            ..full()
        };
        let m = offer(&b);
        assert_eq!(raw_option(&m, 119), None);
        assert!(m.to_vec().unwrap().len() <= 576 - 28);
        assert_eq!(raw_option(&m, 1), Some(vec![255, 255, 255, 0]));
    }

    fn selecting_request(requested: Ipv4Addr, server: Ipv4Addr) -> Message {
        let mut m = request_msg(MessageType::Request);
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(requested));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m
    }

    #[test]
    fn request_for_our_address_gets_ack() {
        let req = selecting_request(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 1));
        let m = reply(&req, &full()).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(raw_option(&m, 51), Some(vec![0, 0, 0x0e, 0x10]));
    }

    #[test]
    fn renewal_by_ciaddr_gets_ack_echoing_ciaddr() {
        let mut req = request_msg(MessageType::Request);
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 5));
        let m = reply(&req, &full()).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
    }

    #[test]
    fn request_for_other_address_gets_nak() {
        let req = selecting_request(Ipv4Addr::new(10, 0, 0, 77), Ipv4Addr::new(10, 0, 0, 1));
        let m = reply(&req, &full()).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(raw_option(&m, 54), Some(vec![10, 0, 0, 1]));
        assert_eq!(raw_option(&m, 51), None);
        assert_eq!(raw_option(&m, 1), None);
    }

    #[test]
    fn init_reboot_with_stale_address_gets_nak() {
        let mut req = request_msg(MessageType::Request);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                192, 168, 1, 50,
            )));
        let m = reply(&req, &full()).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    }

    #[test]
    fn request_for_other_server_is_ignored() {
        let req = selecting_request(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 99));
        assert_eq!(reply(&req, &full()), None);
    }

    #[test]
    fn request_without_any_address_is_ignored() {
        assert_eq!(reply(&request_msg(MessageType::Request), &full()), None);
    }

    #[test]
    fn inform_gets_ack_without_address_or_lease() {
        let mut req = with_prl(request_msg(MessageType::Inform), &[1, 3, 6, 15]);
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 5));
        let m = reply(&req, &full()).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(raw_option(&m, 51), None);
        assert_eq!(raw_option(&m, 58), None);
        assert_eq!(raw_option(&m, 59), None);
        assert_eq!(raw_option(&m, 6), Some(vec![10, 0, 0, 1, 9, 9, 9, 9]));
        assert_eq!(raw_option(&m, 15), Some(b"example.com".to_vec()));
    }

    #[test]
    fn release_is_silent() {
        let mut req = request_msg(MessageType::Release);
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(reply(&req, &full()), None);
    }

    #[test]
    fn decline_is_silent() {
        assert_eq!(reply(&request_msg(MessageType::Decline), &full()), None);
    }

    #[test]
    fn other_chaddr_is_ignored() {
        let mut req = discover();
        req.set_chaddr(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
        assert_eq!(reply(&req, &full()), None);
    }

    #[test]
    fn chaddr_longer_than_a_mac_is_ignored() {
        let mut req = discover();
        req.set_chaddr(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0]);
        assert_eq!(reply(&req, &full()), None);
    }

    #[test]
    fn bootreply_is_ignored() {
        let mut req = discover();
        req.set_opcode(Opcode::BootReply);
        assert_eq!(reply(&req, &full()), None);
    }

    #[test]
    fn missing_message_type_is_ignored() {
        let u = Ipv4Addr::UNSPECIFIED;
        let req = Message::new_with_id(1, u, u, u, u, &MAC);
        assert_eq!(reply(&req, &full()), None);
    }

    #[test]
    fn offer_survives_a_dhcproto_round_trip() {
        use dhcproto::{Decodable, Decoder};
        let bytes = offer(&full()).to_vec().unwrap();
        let back = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(back.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(back.opts().msg_type(), Some(MessageType::Offer));
    }
}
