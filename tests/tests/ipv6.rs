//! Kernel tier (root): dual stack on a bridge network. A fake guest solicits a router and
//! gets the advertisement (from the bridge's link-local, hop limit 255, managed, the prefix
//! on-link and not autonomous, MTU, RDNSS), leases its address by DHCPv6 (both exchanges),
//! and pings the router's global address; a hostile guest's IPv6 (rogue advertisements,
//! neighbour advertisements for another guest's address, spoofed sources, DHCPv6 server
//! messages, duplicate address detection against another guest) never reaches the bridge
//! and each is counted; malformed router-side frames and a SOLICIT flood are dropped and
//! the server keeps serving. A version 4 client still attaches on a dual-stack network.

use dhcp::frame6::link_local;
use protocol::{AttachRequest, NetworkRequest};
use std::net::Ipv6Addr;
use std::time::Duration;
use tapmanager_tests::fakevm::{Capture, FakeVm};
use tapmanager_tests::fakevm6::{self as v6, solicit};
use tapmanager_tests::ids::ipv6::GROUP;
use tapmanager_tests::sandbox::{count_of, default_networks, lan6, Sandbox, BRIDGE};

const GATEWAY6: &str = "fd88::1";

fn dual_stack() -> String {
    // The default network with IPv6 (its keys go under its own table header).
    default_networks().replace(
        "mtu = 1400",
        "mtu = 1400\ngateway6 = \"fd88::1/64\"\ndns6 = [\"fd88::53\"]",
    )
}

fn guest(sb: &Sandbox, vm: &str) -> (protocol::Interface, FakeVm) {
    attach_on(sb, vm, "default")
}

/// Attaches `vm` with one NIC on `network`: the interface and a fake guest on its fd.
fn attach_on(sb: &Sandbox, vm: &str, network: &str) -> (protocol::Interface, FakeVm) {
    let (a, fds) = sb
        .client()
        .attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![NetworkRequest::new(network.parse().unwrap())],
        })
        .expect("attach");
    let iface = a.interfaces[0].clone();
    let mac = iface.mac.0;
    (iface, FakeVm::new(fds.into_iter().next().unwrap(), mac))
}

fn sysctl(sb: &Sandbox, link: &str, key: &str) -> String {
    let (_, out) = sb
        .ns
        .exec(&["cat", &format!("/proc/sys/net/ipv6/conf/{link}/{key}")]);
    out.trim().to_owned()
}

#[test]
fn a_guest_gets_its_ipv6_by_router_advertisement_and_dhcpv6_and_reaches_the_router() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("v6lease", GROUP, &dual_stack());
    let (iface, vm) = guest(&sb, "vm1");
    let lease = iface
        .ipv6
        .clone()
        .expect("the interface carries its IPv6 lease");
    let want: Ipv6Addr = "fd88::2".parse().unwrap();
    assert_eq!(
        lease.address,
        (want, 64),
        "the IPv4 host part (.2) in the prefix"
    );
    assert_eq!(lease.gateway, GATEWAY6.parse::<Ipv6Addr>().unwrap());
    assert_eq!(lease.dns, ["fd88::53".parse::<Ipv6Addr>().unwrap()]);

    let ra = vm.solicit_router().expect("a router advertisement");
    eprintln!("advertisement: {ra:?}");
    assert_eq!(ra.router, lease.router);
    assert!(
        ra.router.segments()[0] == 0xfe80,
        "from a link-local address"
    );
    assert_eq!(ra.hop_limit, 255);
    assert!(ra.managed, "addresses are managed (DHCPv6)");
    assert!(ra.lifetime > 0, "a default router");
    assert_eq!(
        ra.prefixes,
        [("fd88::".parse().unwrap(), 64, true, false)],
        "on-link, not autonomous: the guest has one address the guards know"
    );
    assert_eq!(ra.mtu, Some(1400));
    assert_eq!(ra.rdnss, lease.dns);

    for rapid in [true, false] {
        let l = vm.dhcpv6(rapid).expect("a DHCPv6 lease");
        assert_eq!((l.address, l.from), (want, lease.router), "rapid {rapid}");
        assert_eq!(l.dns, lease.dns);
        assert!(l.valid >= 60);
    }
    // The router answers neighbour discovery for its address and pings back.
    assert!(
        vm.ping6(want, GATEWAY6.parse().unwrap()),
        "no echo reply from the router"
    );
    // The bridge learns nothing from guests' advertisements; the guest's TAP has no IPv6.
    assert_eq!(sysctl(&sb, BRIDGE, "accept_ra"), "0");
    assert_eq!(sysctl(&sb, BRIDGE, "autoconf"), "0");
    assert_eq!(sysctl(&sb, iface.ifname.as_str(), "disable_ipv6"), "1");
    // `list` shows the IPv6 address too.
    let out = std::process::Command::new(tapmanager_tests::sandbox::bin("tapmanager"))
        .args(["list", "--socket"])
        .arg(&sb.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fd88::2"), "list:\n{text}");
}

#[test]
fn hostile_ipv6_frames_are_dropped_and_counted_and_the_router_keeps_serving() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("v6hostile", GROUP, &dual_stack());
    let (_vi, victim) = guest(&sb, "victim");
    let (ri, rogue) = guest(&sb, "rogue");
    let victim_ip: Ipv6Addr = "fd88::2".parse().unwrap();
    let own = ri.ipv6.as_ref().unwrap().address.0;
    assert_eq!(own, "fd88::3".parse::<Ipv6Addr>().unwrap());
    let ll = link_local(rogue.mac);
    let mac = rogue.mac;
    let cap = sb.ns.run_in(|| Capture::open(BRIDGE));
    let lldp = [0x01, 0x80, 0xc2, 0, 0, 0x0e];
    let mut ra_to_lldp = v6::rogue_advert(mac, "fd99::".parse().unwrap());
    ra_to_lldp[..6].copy_from_slice(&lldp);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "a rogue router advertisement",
            "nd-router-advert",
            v6::rogue_advert(mac, "fd99::".parse().unwrap()),
        ),
        (
            "a rogue router advertisement to the LLDP group MAC",
            "nd-router-advert",
            ra_to_lldp,
        ),
        (
            "a neighbour advertisement for another guest's address",
            "nd-neighbor-advert iifname",
            v6::neighbor_advert(mac, ll, victim_ip),
        ),
        (
            "duplicate address detection against another guest",
            "ip6 saddr ::",
            v6::neighbor_solicit(mac, Ipv6Addr::UNSPECIFIED, victim_ip),
        ),
        (
            "a spoofed source address",
            "ip6 saddr != @ip6s",
            v6::marked_udp6(mac, "fd88::99".parse().unwrap(), (5000, 5000), b"TM6-SPOOF"),
        ),
        (
            "a DHCPv6 server's ADVERTISE",
            "udp sport 547",
            v6::marked_udp6(mac, ll, (547, 546), b"TM6-ADVERTISE"),
        ),
        (
            "a neighbour advertisement of its own address naming another MAC",
            "iifname . @th,208,48 != @lla6",
            v6::neighbor_advert_naming(mac, own, own, victim.mac),
        ),
        (
            "a multicast listener query",
            "mld-listener-query",
            v6::listener_query(mac, ll),
        ),
        (
            "a later fragment to all nodes (its ICMPv6 header elsewhere)",
            "exthdr frag exists ip6 daddr { fe80::/10, ff00::/8 }",
            v6::later_fragment(mac, ll, dhcp::frame6::ALL_NODES, b"TM6-FRAGMENT"),
        ),
        (
            "a later fragment to another guest's address",
            "exthdr frag exists ip6 daddr @peers6",
            v6::later_fragment(mac, own, victim_ip, b"TM6-FRAG-PEER"),
        ),
        (
            "a short TCP segment from ::",
            "ip6 saddr ::",
            v6::raw_ipv6(
                (mac, [0x33, 0x33, 0, 0, 0, 1]),
                (Ipv6Addr::UNSPECIFIED, victim_ip),
                6,
                b"TM6-SHORT-TCP-FROM-ANY",
            ),
        ),
    ];
    const EACH: u64 = 100;
    let before = sb.guard_counters();
    for (_, _, frame) in &cases {
        for _ in 0..EACH {
            rogue.send(frame);
        }
    }
    // What the guest may send passes: its own address, its own neighbour advertisement.
    let honest_na = v6::neighbor_advert(mac, own, own);
    rogue.send(&v6::marked_udp6(mac, own, (5000, 5000), b"TM6-HONEST"));
    rogue.send(&honest_na);
    std::thread::sleep(Duration::from_millis(300));
    let after = sb.guard_counters();
    let frames = cap.frames(Duration::from_millis(500));
    for (what, rule, frame) in &cases {
        let dropped = count_of(&after, rule) - count_of(&before, rule);
        eprintln!(
            "hostile guest: {what}: {EACH} sent, {dropped} dropped and counted by `{rule} ...`"
        );
        assert!(dropped >= EACH, "{what}: only {dropped} of {EACH} counted");
        // The bridge passes a frame on unchanged: this one is the frame itself.
        let leaked = frames.iter().filter(|f| *f == frame).count();
        assert_eq!(leaked, 0, "{what}: {leaked} frame(s) reached the bridge");
    }
    assert_eq!(
        tapmanager_tests::fakevm::count(&frames, b"TM6-HONEST"),
        1,
        "the honest frame must pass"
    );
    assert!(
        frames.contains(&honest_na),
        "its own neighbour advertisement must pass"
    );
    // No advertisement configured anything on the host side.
    let routes = sb.ns.ip(&["-6", "route", "show"]);
    assert!(
        !routes.contains("fd99"),
        "a guest's advertisement configured the host:\n{routes}"
    );
    assert!(
        !routes.contains("default"),
        "a guest became the host's router:\n{routes}"
    );

    // Malformed router-side frames: dropped, and the server answers the next good one.
    let mut bad_rs = v6::router_solicit(mac, ll);
    bad_rs[14 + 7] = 64; // hop limit below 255
    let mut bad_dhcp = v6::dhcp6_frame(mac, &solicit(mac, [9, 9, 9], false));
    let at = bad_dhcp.len() - 6;
    bad_dhcp[at] = 0xff; // an option length running past the message
    let oversized = v6::marked_udp6(mac, ll, (546, 547), &[1; 1400]);
    let unknown = v6::marked_udp6(mac, ll, (546, 547), &[99, 0, 0, 1, 0, 1, 0, 0]);
    // Whatever is queued for the guest (its start-up advertisement) first.
    while rogue.recv(Duration::from_millis(200)).is_some() {}
    for f in [&bad_rs, &bad_dhcp, &oversized, &unknown] {
        rogue.send(f);
    }
    assert!(rogue
        .recv(Duration::from_millis(500))
        .is_none_or(|f| v6::parse_advert(&f).is_none()));
    assert!(
        rogue.dhcpv6(true).is_some(),
        "no lease after malformed frames"
    );

    // A SOLICIT flood gets a bounded number of answers; the victim is served meanwhile.
    const FLOOD: u32 = 2000;
    for i in 0..FLOOD {
        let xid = i.to_be_bytes();
        rogue.send(&v6::dhcp6_frame(
            mac,
            &solicit(mac, [xid[1], xid[2], xid[3]], true),
        ));
    }
    let t = std::time::Instant::now();
    let mut answers = 0;
    while rogue
        .recv_until(Duration::from_secs(1), |f| {
            let p = dhcp::frame6::parse_ipv6_frame(f)?;
            (dhcp::frame6::parse_udp6(&p)?.src_port == 547).then_some(())
        })
        .is_some()
    {
        answers += 1;
    }
    let allowed = 20 + (t.elapsed().as_secs_f64() * 10.0).ceil() as u32 + 5;
    eprintln!("hostile guest: {FLOOD} SOLICITs, {answers} answered (allowed {allowed})");
    assert!(
        answers <= allowed,
        "{answers} answers to a flood of {FLOOD}"
    );
    assert!(
        victim.dhcpv6(true).is_some(),
        "the victim's server stopped serving"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        rogue.dhcpv6(true).is_some(),
        "no lease once the flood stopped"
    );
}

#[test]
fn an_ipv4_only_network_still_drops_every_ipv6_frame() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("v6none", GROUP, &default_networks());
    let (iface, vm) = guest(&sb, "v4only");
    assert!(iface.ipv6.is_none());
    let (mac, ll) = (vm.mac, link_local(vm.mac));
    let someone: Ipv6Addr = "fd88::3".parse().unwrap();
    let frames = [
        v6::marked_udp6(mac, ll, (5000, 5000), b"TM6-V4ONLY-UDP"),
        v6::neighbor_solicit(mac, Ipv6Addr::UNSPECIFIED, someone),
        v6::raw_ipv6(
            (mac, [0x33, 0x33, 0, 0, 0, 1]),
            (Ipv6Addr::UNSPECIFIED, someone),
            6,
            b"TM6-V4ONLY-TCP-FROM-ANY",
        ),
        v6::rogue_advert(mac, "fd99::".parse().unwrap()),
    ];
    let cap = sb.ns.run_in(|| Capture::open(BRIDGE));
    let before = count_of(&sb.guard_counters(), "iifname != @v6ports");
    for f in &frames {
        vm.send(f);
    }
    std::thread::sleep(Duration::from_millis(300));
    let dropped = count_of(&sb.guard_counters(), "iifname != @v6ports") - before;
    assert_eq!(
        dropped,
        frames.len() as u64,
        "each dropped by the first IPv6 rule"
    );
    let seen = cap.frames(Duration::from_millis(300));
    assert!(
        !seen.iter().any(|f| frames.contains(f)),
        "an IPv6 frame reached the bridge"
    );
}

/// A desktop-style network: NAT out of the uplink and the DNS forwarder, dual stack.
const NAT_NETWORK: &str = "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\n\
                           gateway = \"10.88.0.1/24\"\ngateway6 = \"fd88::1/64\"\nnat = true\n\
                           dns_forward = true\ndns_upstream = [\"192.168.77.2\"]\n";

#[test]
fn nat66_reaches_the_lan_and_the_dns_forwarder_answers_on_the_ipv6_gateway() {
    tapmanager_tests::require_root!();
    use tapmanager_tests::fakedns::{query, read_answer, FakeDns};
    let (sb, lan) = Sandbox::with_lan("v6nat", GROUP, NAT_NETWORK);
    // The stand-in LAN speaks IPv6 too; it has no route to the guests' prefix, so only a
    // masqueraded packet is answered.
    lan6(&sb, &lan);
    let upstream = FakeDns::start(
        &lan,
        "192.168.77.2".parse().unwrap(),
        "honest.example.test",
        "192.168.78.1".parse().unwrap(),
    );
    let (iface, vm) = guest(&sb, "natguest");
    let lease = iface.ipv6.clone().unwrap();
    assert_eq!(
        lease.dns,
        [GATEWAY6.parse::<Ipv6Addr>().unwrap()],
        "the forwarder's address"
    );
    let me = vm.dhcpv6(true).expect("a DHCPv6 lease").address;
    assert_eq!(
        sysctl(&sb, "all", "forwarding"),
        "1",
        "IPv6 forwarding for NAT66"
    );
    let gw6: Ipv6Addr = GATEWAY6.parse().unwrap();
    assert!(
        vm.ping6_via(me, gw6, "fd77:77::2".parse().unwrap()),
        "no echo reply from the LAN through NAT66"
    );
    let answer = vm
        .udp6_exchange(
            (me, gw6, gw6),
            (40000, 53),
            &query(0x66, "honest.example.test"),
        )
        .expect("no DNS answer on the IPv6 gateway");
    let (id, rcode, addr) = read_answer(&answer).expect("a DNS answer");
    assert_eq!((id, rcode), (0x66, 0));
    assert_eq!(addr, Some("192.168.78.1".parse().unwrap()));
    assert!(upstream.asked() >= 1);
    let (_, nat) = sb
        .ns
        .exec(&["nft", "list", "table", "ip6", "tapmanager_bridge_nat6"]);
    assert!(nat.contains("masquerade"), "{nat}");

    // Addresses of its own network that nobody holds, asked of its router (both families):
    // dropped before the host routes them back onto the bridge, so they cost the host's
    // neighbour tables nothing. 200 and 50 stay far below those tables' limits; before the
    // fix each one was an entry.
    let bridge_mac = vm.resolve6(me, gw6).expect("the router resolves");
    let me4 = iface.address.unwrap().0;
    // Its TAP's host side (a port's own MAC, which the bridge takes as its own) is no way
    // around it.
    let mut tap_mac = vm.mac;
    tap_mac[0] = 0xfe;
    to_unused(
        &vm,
        tap_mac,
        me,
        "fd88::7d:0".parse().unwrap(),
        b"TM-HAIRPIN",
    );
    to_unused(
        &vm,
        bridge_mac,
        me,
        "fd88::7e:0".parse().unwrap(),
        b"TM-HAIRPIN",
    );
    for i in 200..250u8 {
        let dst = std::net::Ipv4Addr::new(10, 88, 0, i);
        // Protocol 253 (experiments, RFC 3692): routed as any other.
        vm.send(&tapmanager_tests::fakevm::ipv4_frame(
            vm.mac,
            bridge_mac,
            (me4, dst),
            253,
            b"TM-HAIRPIN",
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let neigh = sb.ns.ip(&["neigh", "show"]);
    let asked = neigh
        .lines()
        .filter(|l| {
            l.starts_with("fd88::7e:") || l.starts_with("fd88::7d:") || l.starts_with("10.88.0.2")
        })
        .count();
    assert_eq!(asked, 0, "the host asked for unused addresses:\n{neigh}");
    let (_, hairpin) = sb
        .ns
        .exec(&["nft", "list", "table", "inet", "tapmanager_hairpin"]);
    let dropped: u64 = hairpin
        .lines()
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        dropped >= 250,
        "not counted by the hairpin rules:\n{hairpin}"
    );
}

#[test]
fn an_isolated_guest_routes_its_own_64_and_nothing_else_out_through_nat66() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let net = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\n\
         range6 = \"fd99::/48\"\ndns6 = [\"fd77:77::53\"]\n"
    );
    let (sb, lan) = Sandbox::with_lan("v6iso", GROUP, &net);
    lan6(&sb, &lan);
    let (iface, vm) = attach_on(&sb, "iso1", "iso");
    let lease = iface.ipv6.clone().expect("an IPv6 lease");
    let me: Ipv6Addr = "fd99::2".parse().unwrap();
    let gw: Ipv6Addr = "fd99::1".parse().unwrap();
    assert_eq!((lease.address, lease.gateway), ((me, 64), gw));
    let ra = vm.solicit_router().expect("a router advertisement");
    assert_eq!(ra.router, lease.router);
    assert_eq!(
        ra.prefixes,
        [("fd99::".parse().unwrap(), 64, true, true)],
        "its own /64, autonomous: SLAAC in it is the guest's business"
    );
    assert_eq!(ra.rdnss, ["fd77:77::53".parse::<Ipv6Addr>().unwrap()]);
    assert_eq!(vm.dhcpv6(true).expect("a DHCPv6 lease").address, me);
    assert!(vm.ping6(me, gw), "the gateway on its TAP does not answer");
    let lan_host: Ipv6Addr = "fd77:77::2".parse().unwrap();
    assert!(
        vm.ping6_via(me, gw, lan_host),
        "no echo from the LAN through NAT66"
    );
    // Any address of its own /64 goes out; one of another guest's /64 does not.
    let slaac: Ipv6Addr = "fd99::5054:ff:fe00:1".parse().unwrap();
    assert!(
        vm.ping6_via(slaac, gw, lan_host),
        "its own /64's other address was stopped"
    );
    let before = count_of(&routed_counters(&sb), "ip6 saddr != @iso_src6");
    let foreign: Ipv6Addr = "fd99:0:0:1::2".parse().unwrap();
    assert!(
        !vm.ping6_via(foreign, gw, lan_host),
        "a source outside its /64 got through"
    );
    let dropped = count_of(&routed_counters(&sb), "ip6 saddr != @iso_src6") - before;
    assert!(dropped >= 1, "the foreign source was not counted");
    // Addresses of its own /64 that nobody holds, through the router: the namespace routes
    // the /64 to the guest's MAC and asks no neighbour for them (the kernel's neighbour table
    // is the whole host's). 200 stays far below its limits; before the fix each one of them
    // was an entry.
    let gw_mac = vm.resolve6(me, gw).expect("the gateway resolves");
    to_unused(&vm, gw_mac, me, "fd99::7e:0".parse().unwrap(), b"TM-NEIGH");
    let pin = sb.dir.join("state/netns").join(iface.ifname.as_str());
    let (asked, neigh) = learned(&sb, Some(&pin), "fd99::7e:");
    assert_eq!(
        asked, 0,
        "the namespace asked for its guest's unused addresses:\n{neigh}"
    );
    // A second guest gets the next /64, and the two cannot reach each other.
    let (other, vm2) = attach_on(&sb, "iso2", "iso");
    let other_ip = other.ipv6.unwrap().address.0;
    assert_eq!(other_ip, "fd99:0:0:1::2".parse::<Ipv6Addr>().unwrap());
    assert!(vm2.ping6_via(other_ip, "fd99:0:0:1::1".parse().unwrap(), lan_host));
    assert!(
        !vm.ping6_via(me, gw, other_ip),
        "one isolated guest reached another"
    );
    // The host side of the veth learns nothing from it.
    assert_eq!(sysctl(&sb, iface.ifname.as_str(), "accept_ra"), "0");
    assert_eq!(sysctl(&sb, iface.ifname.as_str(), "addr_gen_mode"), "1");
}

/// The IPv6 neighbour entries (their count, and all of them) whose address starts with
/// `start`: in the guest's namespace (`pin`) or the daemon's.
fn learned(sb: &Sandbox, pin: Option<&std::path::Path>, start: &str) -> (usize, String) {
    let neigh = match pin {
        Some(pin) => {
            let net = format!("--net={}", pin.display());
            sb.ns
                .exec(&["nsenter", &net, "ip", "-6", "neigh", "show"])
                .1
        }
        None => sb.ns.ip(&["-6", "neigh", "show"]),
    };
    (
        neigh.lines().filter(|l| l.starts_with(start)).count(),
        neigh,
    )
}

/// 200 datagrams from `me` to `base + i` (addresses nobody holds), sent to `to` (the MAC of a
/// router, or of something the bridge routes as its own), then half a second for whatever
/// neighbour discovery they start.
fn to_unused(vm: &FakeVm, to: [u8; 6], me: Ipv6Addr, base: Ipv6Addr, marker: &[u8]) {
    for i in 0..200u16 {
        let dst = Ipv6Addr::from(u128::from(base) | u128::from(i));
        vm.send(&dhcp::frame6::build_udp6_frame(
            (vm.mac, to),
            (me, dst),
            (4000, 9),
            marker,
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn solicitations_from_many_addresses_of_a_guests_64_teach_its_router_nothing() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    // The kernel's neighbour table is the whole host's: a guest that makes its router learn
    // an entry per source address fills it for everyone (an outside review filled it, 1010
    // entries from 3000 solicitations). 200 stays far below its limit.
    for (binding, kind) in [
        ("routed", "isolated"),
        ("bridge", "isolated"),
        ("tc-redirect", "isolated"),
        ("routed", "masquerade"),
    ] {
        let net = if kind == "isolated" {
            format!(
                "[networks.g]\nkind = \"isolated\"\nbinding = \"{binding}\"\n\
                 range = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\nrange6 = \"fd99::/48\"\n"
            )
        } else {
            format!("[networks.g]\nkind = \"masquerade\"\nuplink = \"{uplink}\"\ntransit6 = \"fd98::/48\"\n")
        };
        let (sb, _lan) = Sandbox::with_lan("v6ndsrc", GROUP, &net);
        let (iface, vm) = attach_on(&sb, "nd1", "g");
        let lease = iface.ipv6.clone().expect("an IPv6 lease");
        let me = lease.address.0;
        // Its own addresses still resolve the gateway.
        vm.dhcpv6(true).expect("a DHCPv6 lease");
        assert!(
            vm.ping6_via(me, lease.router, lease.gateway),
            "{binding} {kind}: the gateway"
        );
        let prefix = if kind == "isolated" {
            "fd99::"
        } else {
            "fd10:0:2::"
        };
        for n in 0..200u16 {
            let src = Ipv6Addr::from(u128::from(me) & !0xffff_ffff | 0x7f_0000 | u128::from(n));
            vm.send(&v6::neighbor_solicit(vm.mac, src, lease.gateway));
        }
        std::thread::sleep(Duration::from_millis(500));
        let pin = sb.dir.join("state/netns").join(iface.ifname.as_str());
        // The router: the guest's namespace (routed) or the host side of its veth (joined).
        let at = (binding == "routed").then_some(pin.as_path());
        // At most 16 addresses besides its own (privacy addresses have their budget).
        let (n, neigh) = learned(&sb, at, &format!("{prefix}7f:"));
        assert!(
            n <= 16,
            "{binding} {kind}: the router learned {n} sources:\n{neigh}"
        );
    }
}

#[test]
fn an_isolated_guest_with_a_slash127_has_its_address_and_the_gateway_and_nothing_else() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let net = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\n\
         range6 = \"fd99::/119\"\nguest_prefix6 = 127\n"
    );
    let (sb, lan) = Sandbox::with_lan("v6p2p", GROUP, &net);
    lan6(&sb, &lan);
    let (iface, vm) = attach_on(&sb, "p2p1", "iso");
    let lease = iface.ipv6.clone().expect("an IPv6 lease");
    let (me, gw): (Ipv6Addr, Ipv6Addr) = ("fd99::1".parse().unwrap(), "fd99::".parse().unwrap());
    assert_eq!((lease.address, lease.gateway), ((me, 127), gw));
    let ra = vm.solicit_router().expect("a router advertisement");
    assert_eq!(
        ra.prefixes,
        [(gw, 127, true, false)],
        "on-link, and no room for SLAAC"
    );
    assert_eq!(vm.dhcpv6(false).expect("a DHCPv6 lease").address, me);
    assert!(vm.ping6(me, gw), "the gateway on its TAP does not answer");
    let lan_host: Ipv6Addr = "fd77:77::2".parse().unwrap();
    assert!(
        vm.ping6_via(me, gw, lan_host),
        "no echo from the LAN through NAT66"
    );
    // Only its own address goes out: the next /127 is another guest's.
    let other: Ipv6Addr = "fd99::3".parse().unwrap();
    assert!(
        !vm.ping6_via(other, gw, lan_host),
        "another /127's source got out"
    );
    // The second guest has the next /127.
    let (second, _vm2) = attach_on(&sb, "p2p2", "iso");
    assert_eq!(
        second.ipv6.unwrap().address,
        ("fd99::3".parse().unwrap(), 127)
    );
}

#[test]
fn isolated_guests_joined_by_bridge_or_tc_redirect_get_ipv6_from_the_host_side() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    for binding in ["bridge", "tc-redirect"] {
        let net = format!(
            "[networks.iso]\nkind = \"isolated\"\nbinding = \"{binding}\"\n\
             range = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\nrange6 = \"fd99::/48\"\n"
        );
        let (sb, lan) = Sandbox::with_lan("v6join", GROUP, &net);
        lan6(&sb, &lan);
        let (iface, vm) = attach_on(&sb, "join1", "iso");
        let lease = iface.ipv6.clone().expect("an IPv6 lease");
        let me: Ipv6Addr = "fd99::2".parse().unwrap();
        let gw: Ipv6Addr = "fd99::1".parse().unwrap();
        assert_eq!((lease.address, lease.gateway), ((me, 64), gw), "{binding}");
        let ra = vm.solicit_router().expect("a router advertisement");
        assert_eq!(ra.router, lease.router, "{binding}");
        // The router is the host side of the veth: the guest resolves its MAC.
        assert_eq!(ra.slla, None, "{binding}");
        // Autonomous where the host lets the whole /64 out; tc-redirect's filters pass the
        // leased address only, so SLAAC is not offered there.
        assert_eq!(
            ra.prefixes,
            [("fd99::".parse().unwrap(), 64, true, binding == "bridge")],
            "{binding}"
        );
        assert_eq!(
            vm.dhcpv6(true).expect("a DHCPv6 lease").address,
            me,
            "{binding}"
        );
        assert!(vm.ping6_via(me, lease.router, gw), "{binding}: the gateway");
        let lan_host: Ipv6Addr = "fd77:77::2".parse().unwrap();
        assert!(
            vm.ping6_via(me, lease.router, lan_host),
            "{binding}: the LAN through NAT66"
        );
        // Another /64's source does not get out; nor is the host asked for its unused addresses.
        let foreign: Ipv6Addr = "fd99:0:0:1::2".parse().unwrap();
        assert!(
            !vm.ping6_via(foreign, lease.router, lan_host),
            "{binding}: a foreign source got out"
        );
        let router_mac = vm.resolve6(me, lease.router).expect("the router resolves");
        to_unused(
            &vm,
            router_mac,
            me,
            "fd99::7e:0".parse().unwrap(),
            b"TM-NEIGH",
        );
        let (asked, neigh) = learned(&sb, None, "fd99::7e:");
        assert_eq!(
            asked, 0,
            "{binding}: the host asked for unused addresses:\n{neigh}"
        );
        // Nothing on the namespace's side takes part in IPv6.
        let pin = sb.dir.join("state/netns").join(iface.ifname.as_str());
        let (_, conf) = sb.ns.exec(&[
            "nsenter",
            &format!("--net={}", pin.display()),
            "cat",
            "/proc/sys/net/ipv6/conf/all/disable_ipv6",
        ]);
        assert_eq!(conf.trim(), "1", "{binding}");
    }
}

#[test]
fn a_masquerade_guest_has_the_fixed_address_behind_nat66_and_gets_its_forward_over_ipv6() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let net = format!(
        "[networks.nat]\nkind = \"masquerade\"\nuplink = \"{uplink}\"\nports = [\"udp:8053:53\"]\n\
         transit6 = \"fd98::/48\"\n"
    );
    let (sb, lan) = Sandbox::with_lan("v6masq", GROUP, &net);
    lan6(&sb, &lan);
    let (iface, vm) = attach_on(&sb, "masq6", "nat");
    let lease = iface.ipv6.clone().expect("an IPv6 lease");
    let me: Ipv6Addr = "fd10:0:2::2".parse().unwrap();
    let gw: Ipv6Addr = "fd10:0:2::1".parse().unwrap();
    assert_eq!(
        (lease.address, lease.gateway),
        ((me, 64), gw),
        "KubeVirt's fixed address"
    );
    assert_eq!(vm.dhcpv6(false).expect("a DHCPv6 lease").address, me);
    let lan_host: Ipv6Addr = "fd77:77::2".parse().unwrap();
    assert!(
        vm.ping6_via(me, gw, lan_host),
        "no echo from the LAN through the two NAT66s"
    );
    // The forward: the LAN sends to the host's uplink port 8053, the guest gets it on 53.
    assert!(
        vm.resolve6(me, gw).is_some(),
        "the gateway does not answer ND"
    );
    lan.run_in(|| {
        let s = std::net::UdpSocket::bind("[fd77:77::2]:0").unwrap();
        s.send_to(b"TM6-FORWARDED", "[fd77:77::1]:8053").unwrap();
    });
    let got = vm.recv_until(Duration::from_secs(3), |f| {
        let p = dhcp::frame6::parse_ipv6_frame(f)?;
        let u = dhcp::frame6::parse_udp6(&p)?;
        (u.payload == b"TM6-FORWARDED").then_some((p.dst_ip, u.dst_port))
    });
    assert_eq!(
        got,
        Some((me, 53)),
        "the IPv6 forward did not reach the guest"
    );
}

#[test]
fn a_restart_keeps_dual_stack_guests_served_guarded_and_routed() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let nets = format!(
        "{NAT_NETWORK}[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\n\
         uplink = \"{uplink}\"\nrange6 = \"fd99::/48\"\n"
    );
    let (mut sb, lan) = Sandbox::with_lan("v6restart", GROUP, &nets);
    lan6(&sb, &lan);
    let (bi, bridged) = attach_on(&sb, "keepb", "default");
    let (ii, isolated) = attach_on(&sb, "keepi", "iso");
    let lan_host: Ipv6Addr = "fd77:77::2".parse().unwrap();
    let (b6, i6) = (bi.ipv6.unwrap(), ii.ipv6.unwrap());
    assert_eq!(bridged.dhcpv6(true).map(|l| l.address), Some(b6.address.0));
    assert_eq!(isolated.dhcpv6(true).map(|l| l.address), Some(i6.address.0));
    assert!(isolated.ping6_via(i6.address.0, i6.gateway, lan_host));

    // SIGKILL, and meanwhile the isolated guest's IPv6 route goes by hand.
    sb.kill();
    sb.ns.ip(&["-6", "route", "del", "fd99::/64"]);
    sb.start();
    assert_eq!(sb.client().list().unwrap().len(), 2, "not both adopted");
    assert_eq!(bridged.dhcpv6(true).map(|l| l.address), Some(b6.address.0));
    assert!(
        bridged.ping6_via(b6.address.0, b6.gateway, lan_host),
        "bridge guest after restart"
    );
    assert_eq!(isolated.dhcpv6(true).map(|l| l.address), Some(i6.address.0));
    assert!(
        isolated.ping6_via(i6.address.0, i6.gateway, lan_host),
        "the isolated guest's route was not put back"
    );
    // The guards came back with the IPv6 sets: a neighbour advertisement for another address
    // is still dropped and counted.
    let before = count_of(&sb.guard_counters(), "nd-neighbor-advert iifname");
    let ll = link_local(bridged.mac);
    bridged.send(&v6::neighbor_advert(
        bridged.mac,
        ll,
        "fd88::99".parse().unwrap(),
    ));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        count_of(&sb.guard_counters(), "nd-neighbor-advert iifname") - before,
        1
    );
}

#[test]
fn a_macvtap_guest_sends_its_own_ipv6_and_nothing_spoofed_or_rogue_onto_the_lan() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let nets = format!(
        "[networks.mv]\nkind = \"macvtap\"\nlower = \"{uplink}\"\n\
         [networks.mvany]\nkind = \"macvtap\"\nlower = \"{uplink}\"\nipv6_sources = \"any\"\n"
    );
    let (sb, lan) = Sandbox::with_lan("v6mv", GROUP, &nets);
    let (iface, g) = attach_on(&sb, "mv6", "mv");
    assert!(
        iface.ipv6.is_none(),
        "the LAN's router serves a macvtap guest"
    );
    let mac = g.mac;
    let ll = link_local(mac);
    // Its SLAAC address on the LAN's prefix: the prefix and its MAC's identifier.
    let own =
        Ipv6Addr::from((0xfd77_0077_0000_0000u128 << 64) | (u128::from(ll) & u128::from(u64::MAX)));
    let privacy: Ipv6Addr = "fd77:77::1234:5678:9abc:def0".parse().unwrap();
    let cap = lan.run_in(|| Capture::open("lan0"));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "its link-local",
            v6::marked_udp6(mac, ll, (5000, 5000), b"TM6-MV-LL"),
            true,
        ),
        (
            "its SLAAC address",
            v6::marked_udp6(mac, own, (5000, 5000), b"TM6-MV-OWN"),
            true,
        ),
        (
            "its own neighbour advertisement",
            v6::neighbor_advert(mac, own, own),
            true,
        ),
        (
            "another identifier",
            v6::marked_udp6(mac, privacy, (5000, 5000), b"TM6-MV-OTHER"),
            false,
        ),
        (
            "a router advertisement",
            v6::rogue_advert(mac, "fd77:77::".parse().unwrap()),
            false,
        ),
        (
            "a DHCPv6 ADVERTISE",
            v6::marked_udp6(mac, ll, (547, 546), b"TM6-MV-ADV"),
            false,
        ),
        (
            "a neighbour advertisement for the LAN host",
            v6::neighbor_advert(mac, ll, "fd77:77::2".parse().unwrap()),
            false,
        ),
    ];
    for (_, frame, _) in &cases {
        g.send(frame);
    }
    let frames = cap.frames(Duration::from_millis(500));
    for (what, frame, passes) in &cases {
        let seen = frames.iter().filter(|f| f == &frame).count();
        eprintln!("macvtap guest: {what}: {seen} on the LAN");
        assert_eq!(seen > 0, *passes, "{what}");
    }
    let counters = sb.nft_counters(
        "netdev",
        "tapmanager_macvtap",
        &format!("out_{}", iface.ifname),
    );
    assert!(count_of(&counters, "nd-router-advert") >= 1, "{counters:?}");
    assert!(
        count_of(&counters, "ip6 saddr & ::ffff:ffff:ffff:ffff") >= 1,
        "{counters:?}"
    );
    // With ipv6_sources = "any": a privacy address goes out; a rogue advertisement still not.
    let (_, g2) = attach_on(&sb, "mv6any", "mvany");
    let privacy_frame = v6::marked_udp6(g2.mac, privacy, (5000, 5000), b"TM6-MV-ANY");
    let rogue = v6::rogue_advert(g2.mac, "fd77:77::".parse().unwrap());
    let cap = lan.run_in(|| Capture::open("lan0"));
    g2.send(&privacy_frame);
    g2.send(&rogue);
    let frames = cap.frames(Duration::from_millis(500));
    assert!(
        frames.contains(&privacy_frame),
        "the privacy address was stopped"
    );
    assert!(
        !frames.contains(&rogue),
        "a rogue advertisement reached the LAN"
    );
}

/// The routed table's forward counters, by rule text.
fn routed_counters(sb: &Sandbox) -> Vec<(String, u64)> {
    sb.nft_counters("inet", "tapmanager_routed", "forward")
}

#[test]
fn a_version_4_client_attaches_on_a_dual_stack_network() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("v6compat", GROUP, &dual_stack());
    let sock = std::os::unix::net::UnixStream::connect(&sb.socket).unwrap();
    protocol::fdpass::write_frame(&sock, &protocol::Hello { version: 4 }, &[]).unwrap();
    let (reply, _): (protocol::HelloReply, _) = protocol::fdpass::read_frame(&sock).unwrap();
    assert!(matches!(
        reply,
        protocol::HelloReply::Accepted(protocol::Hello { version: 4 })
    ));
    let req = protocol::Request {
        id: 1,
        body: protocol::RequestBody::Attach(AttachRequest {
            vm: "old".parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        }),
    };
    protocol::fdpass::write_frame(&sock, &req, &[]).unwrap();
    let (resp, fds): (protocol::legacy::Response, _) = protocol::fdpass::read_frame(&sock).unwrap();
    let Ok(protocol::legacy::ResponseBody::Attached(a)) = resp.body else {
        panic!("{resp:?}")
    };
    assert_eq!(fds.len(), 1);
    assert_eq!(
        a.interfaces[0].address,
        Some(("10.88.0.2".parse().unwrap(), 24))
    );
    // The guest still gets IPv6 from the network; only the old client does not see it.
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    assert!(vm.dhcpv6(true).is_some());
}
