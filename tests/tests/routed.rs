//! Kernel tier (root): the routed kind. Each guest's TAP is a point-to-point link, the guest a
//! /32 of the network's subnet with its gateway on-link (DHCP option 121), the host routing
//! each /32 to its TAP; guests reach each other through the host's forwarding, where the
//! network's lists apply, and never at L2.

use protocol::{AttachRequest, NetworkRequest};
use std::net::Ipv4Addr;
use std::time::Duration;
use tapmanager_tests::fakevm::{self, FakeVm, Lease};
use tapmanager_tests::sandbox::{count_of, Sandbox, UPLINK};

use tapmanager_tests::ids::routed::GROUP;

const DEVICE: &str = "tmrt0";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);

/// A routed /16 without NAT, whose guests may not reach `10.90.0.4` (the third guest).
fn networks(extra: &str) -> String {
    format!(
        r#"
[networks.fleet]
kind = "routed"
device = "{DEVICE}"
gateway = "{GATEWAY}/16"
dns = ["{GATEWAY}"]
mtu = 1400
drop = ["10.90.0.4/32"]
{extra}
"#
    )
}

/// A guest on `fleet`, leased: its fake VM, its lease, and its TAP's name.
fn guest(sb: &Sandbox, vm: &str) -> (FakeVm, Lease, String) {
    let (a, mut fds) = sb
        .client()
        .attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![NetworkRequest::new("fleet".parse().unwrap())],
        })
        .expect("attach");
    let iface = &a.interfaces[0];
    let vm = FakeVm::new(fds.remove(0), iface.mac.0);
    let lease = vm.dhcp().expect("a lease");
    (vm, lease, iface.ifname.to_string())
}

/// Whether `to` sees an echo request from `from_ip`, sent by `from` through its gateway.
fn reaches(
    from: &FakeVm,
    from_ip: Ipv4Addr,
    gw_mac: [u8; 6],
    to: &FakeVm,
    to_ip: Ipv4Addr,
) -> bool {
    from.send(&fakevm::icmp_echo(from.mac, gw_mac, from_ip, to_ip, 1));
    to.recv_until(Duration::from_secs(1), |f| {
        (f.len() >= 42
            && f[12..14] == [0x08, 0x00]
            && f[23] == 1
            && f[26..30] == from_ip.octets()
            && f[30..34] == to_ip.octets())
        .then_some(())
    })
    .is_some()
}

#[test]
fn routed_guests_get_a_slash_32_reach_the_gateway_and_each_other_as_the_lists_allow() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("routed", GROUP, &networks(""));
    let (a, la, tap_a) = guest(&sb, "ra");
    let (b, lb, _) = guest(&sb, "rb");
    let (c, lc, _) = guest(&sb, "rc");

    // A /32 with the gateway, and option 121: the gateway on-link, then the default route.
    assert_eq!((la.ip, la.prefix_len), (Ipv4Addr::new(10, 90, 0, 2), 32));
    assert_eq!(la.router, Some(GATEWAY));
    assert_eq!(la.server_id, Some(GATEWAY));
    let on_link: ipnet::Ipv4Net = "10.90.0.1/32".parse().unwrap();
    assert_eq!(
        la.routes.first(),
        Some(&(on_link, Ipv4Addr::UNSPECIFIED)),
        "{:?}",
        la.routes
    );
    assert!(
        la.routes.contains(&("0.0.0.0/0".parse().unwrap(), GATEWAY)),
        "{:?}",
        la.routes
    );
    assert_eq!(
        (lb.ip, lc.ip),
        (Ipv4Addr::new(10, 90, 0, 3), Ipv4Addr::new(10, 90, 0, 4))
    );

    // The gateway answers ARP on the TAP with the TAP's own MAC, and answers a ping.
    let gw_mac = a
        .arp(a.mac, la.ip, GATEWAY)
        .expect("the gateway answers ARP");
    assert_eq!(gw_mac, la.server_mac);
    assert!(
        a.ping(gw_mac, la.ip, GATEWAY),
        "no echo reply from the gateway"
    );
    // The host routes the guest's /32 to its TAP, with its MAC as a permanent neighbour.
    let route = sb.ns.ip(&["route", "show", "10.90.0.2/32"]);
    assert!(route.contains(&format!("dev {tap_a}")), "{route}");
    let neigh = sb.ns.ip(&["neigh", "show", "10.90.0.2"]);
    assert!(neigh.contains("PERMANENT"), "{neigh}");

    // Guest to guest crosses the host: B gets A's ping; C (on the drop list) does not.
    assert!(reaches(&a, la.ip, gw_mac, &b, lb.ip), "A cannot reach B");
    let b_gw = b.arp(b.mac, lb.ip, GATEWAY).expect("B's gateway");
    assert!(reaches(&b, lb.ip, b_gw, &a, la.ip), "B cannot reach A");
    assert!(
        !reaches(&a, la.ip, gw_mac, &c, lc.ip),
        "A reached C, which the drop list forbids"
    );

    // No L2 between guests: nothing answers A's ARP request for B's address (no proxy ARP,
    // and B is not on A's link).
    assert_eq!(
        a.arp(a.mac, la.ip, lb.ip),
        None,
        "something answered ARP for B"
    );

    // A spoofed source (B's address, an unused one) is dropped by A's TAP's guards (counted
    // there, before the host's rp_filter could), and B never sees it.
    let spoofs = || count_of(&sb.guard_counters(), "ip saddr != @ips");
    let before = spoofs();
    a.send(&fakevm::icmp_echo(a.mac, gw_mac, lb.ip, lb.ip, 9));
    a.send(&fakevm::icmp_echo(
        a.mac,
        gw_mac,
        Ipv4Addr::new(10, 90, 0, 9),
        lb.ip,
        9,
    ));
    let spoofed = b.recv_until(Duration::from_millis(500), |f| {
        (f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 1).then_some(())
    });
    assert!(spoofed.is_none(), "a spoofed packet reached B");
    assert_eq!(spoofs() - before, 2, "{:?}", sb.guard_counters());

    // The host's own addresses other than the gateway are not the guests' to reach (here one
    // on its loopback, as a host's LAN address would be).
    sb.ns.ip(&["addr", "add", "192.0.2.1/32", "dev", "lo"]);
    assert!(
        !a.ping(gw_mac, la.ip, Ipv4Addr::new(192, 0, 2, 1)),
        "a guest reached a host address past its gateway"
    );

    // The subnet's addresses no guest holds are a blackhole: nothing routed there, no
    // neighbour entry.
    let blackholes = sb.ns.ip(&["route", "show", "type", "blackhole"]);
    assert!(blackholes.contains("10.90.0.0/16"), "{blackholes}");
    let unused = Ipv4Addr::new(10, 90, 200, 7);
    for seq in 0..5 {
        a.send(&fakevm::icmp_echo(a.mac, gw_mac, la.ip, unused, seq));
    }
    std::thread::sleep(Duration::from_millis(300));
    let neigh = sb.ns.ip(&["neigh", "show", &unused.to_string()]);
    assert!(neigh.trim().is_empty(), "{neigh}");

    // Release: the TAP, its route and its place in the rules go.
    sb.client()
        .release(&"ra".parse().unwrap())
        .expect("release");
    assert!(
        sb.wait_for(10, || !sb.ns.link_exists(&tap_a)),
        "TAP {tap_a} left"
    );
    let route = sb.ns.ip(&["route", "show", "10.90.0.2/32"]);
    assert!(route.trim().is_empty(), "{route}");
    let rules = || {
        sb.ns
            .exec(&["nft", "list", "table", "inet", "tapmanager_l3"])
            .1
    };
    assert!(sb.wait_for(10, || !rules().contains(&tap_a)), "{}", rules());
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 2));

    // `tapmanager down` (the daemon stopped, the guests cut off): the device, the blackhole
    // route and both tables go.
    drop((a, b, c));
    let mut sb = sb;
    sb.kill();
    let (ok, out) = sb.down(&["--force"]);
    assert!(ok, "{out}");
    assert!(!sb.ns.link_exists(DEVICE), "{DEVICE} left");
    let blackholes = sb.ns.ip(&["route", "show", "type", "blackhole"]);
    assert!(blackholes.trim().is_empty(), "{blackholes}");
    let (_, tables) = sb.ns.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("tapmanager_l3"), "{tables}");
}

/// A guest survives a daemon crash: killed and started again, the daemon adopts it, its route,
/// neighbour, guards and rules are there, and it still reaches its peer.
#[test]
fn a_routed_guest_is_adopted_after_a_crash() {
    tapmanager_tests::require_root!();
    let mut sb = Sandbox::new("routedcrash", GROUP, &networks(""));
    let (a, la, tap_a) = guest(&sb, "ca");
    let (b, lb, _) = guest(&sb, "cb");
    sb.kill();
    // What was removed by hand while it was down comes back.
    sb.ns.ip(&["route", "del", "10.90.0.2/32"]);
    sb.start();
    assert!(
        sb.wait_for(10, || sb
            .ns
            .ip(&["route", "show", "10.90.0.2/32"])
            .contains(&tap_a)),
        "the route was not put back"
    );
    let gw_mac = a
        .arp(a.mac, la.ip, GATEWAY)
        .expect("the gateway answers ARP");
    assert!(
        reaches(&a, la.ip, gw_mac, &b, lb.ip),
        "A cannot reach B after the restart"
    );
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "inet", "tapmanager_l3"]);
    assert!(rules.contains(&tap_a), "{rules}");
    let renewed = a.renew(&la).expect("DHCP answers again");
    assert_eq!(renewed.ip, la.ip);
}

/// With `nat = true` by an uplink, a guest reaches the LAN (masqueraded); without NAT, nothing
/// leaves the network.
#[test]
fn routed_nat_reaches_the_lan_only_with_nat() {
    tapmanager_tests::require_root!();
    let lan_host = Ipv4Addr::new(192, 168, 77, 2);
    let (sb, _lan) = Sandbox::with_lan(
        "routednat",
        GROUP,
        &networks(&format!("nat = true\nuplink = \"{UPLINK}\"")),
    );
    let (a, la, _) = guest(&sb, "na");
    let gw_mac = a.arp(a.mac, la.ip, GATEWAY).expect("gateway");
    assert!(
        a.ping(gw_mac, la.ip, lan_host),
        "no reply from the LAN through NAT"
    );

    let (sb2, _lan2) = Sandbox::with_lan("routednonat", GROUP, &networks(""));
    let (b, lb, _) = guest(&sb2, "nb");
    let gw_mac = b.arp(b.mac, lb.ip, GATEWAY).expect("gateway");
    // The LAN has no route back, so a failed ping alone proves little: the network's rule
    // counts the three echoes it dropped on their way out.
    let forward = || sb2.nft_counters("inet", "tapmanager_l3", "forward");
    let out = || -> u64 {
        forward()
            .iter()
            .filter(|(rule, _)| rule == "iifname @ports_0")
            .map(|(_, n)| n)
            .sum()
    };
    let before = out();
    assert!(
        !b.ping(gw_mac, lb.ip, lan_host),
        "a guest without NAT reached the LAN"
    );
    assert_eq!(out() - before, 3, "{:?}", forward());
    drop(sb2);
    drop(sb);
}
