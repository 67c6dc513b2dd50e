//! What a guest sends its DHCP server: any Ethernet frame off the TAP, through the server's
//! whole per-frame path (frame parser, the request sanitizer, dhcproto's decoder, `reply()`,
//! the reply's encoding). Nothing may panic; a reply is a well-formed IPv4/UDP frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fn binding() -> dhcp::Binding {
    dhcp::Binding {
        mac: [0x02, 0, 0, 0, 0, 1],
        ip: Ipv4Addr::new(10, 88, 0, 2),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
        server_id: Ipv4Addr::new(10, 88, 0, 1),
        server_mac: [0xfe, 0, 0, 0, 0, 1],
        routes: vec![(
            "10.96.0.0/12".parse().unwrap(),
            Ipv4Addr::new(10, 88, 0, 254),
        )],
        dns: vec![Ipv4Addr::new(10, 88, 0, 1)],
        search: vec!["example.test".into()],
        hostname: Some("vm1".into()),
        domain: Some("example.test".into()),
        mtu: Some(1500),
        lease_secs: 3600,
        v6: Some(dhcp::Binding6 {
            ip: Some("fd88::2".parse().unwrap()),
            prefix: "fd88::/64".parse().unwrap(),
            autonomous: false,
            router: "fe80::fc00:ff:fe00:1".parse().unwrap(),
            dns: vec!["fd88::53".parse().unwrap()],
            router_on_server_mac: true,
        }),
    }
}

fn check(frame: &[u8]) {
    if let dhcp::server::Outcome::Reply(r) = dhcp::server::answer(frame, &binding()) {
        if let Some(p) = dhcp::frame6::parse_ipv6_frame(&r) {
            // A router advertisement or a DHCPv6 reply, from the router's link-local.
            assert_eq!(p.src_ip, binding().v6.unwrap().router);
            assert!(dhcp::frame6::checksum_ok(&p), "a reply with a bad checksum");
            return;
        }
        let udp = dhcp::frame::parse_ipv4_udp_frame(&r).expect("a reply parses as IPv4/UDP");
        assert_eq!((udp.src_port, udp.dst_port), (67, 68));
    }
}

fuzz_target!(|data: &[u8]| {
    // As a whole frame off the wire, and as a DHCP payload in a well-formed frame from the
    // guest (most random frames fail the frame checks; this gives the DHCP layers their share).
    check(data);
    check(&dhcp::frame::build_ipv4_udp_frame(
        [0x02, 0, 0, 0, 0, 1],
        [0xff; 6],
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        data,
    ));
    // And as a DHCPv6 message from the guest's link-local address to the servers.
    check(&dhcp::frame6::build_udp6_frame(
        ([0x02, 0, 0, 0, 0, 1], [0x33, 0x33, 0, 1, 0, 2]),
        (
            dhcp::frame6::link_local([0x02, 0, 0, 0, 0, 1]),
            dhcp::frame6::ALL_DHCP_SERVERS,
        ),
        (546, 547),
        data,
    ));
});
