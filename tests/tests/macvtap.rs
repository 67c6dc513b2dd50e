//! Kernel tier (root): the macvtap kind. The "LAN" is a namespace behind the sandbox's uplink
//! veth, which is the macvtap's lower device (never the machine's eth0).

use protocol::{AttachRequest, NetworkRequest};
use std::net::Ipv4Addr;
use std::time::Duration;
use tapmanager_tests::fakevm::{self, Capture, FakeVm};
use tapmanager_tests::sandbox::{Launch, Sandbox, UPLINK};

use tapmanager_tests::ids::macvtap::GROUP;
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The address the guest would have leased from the LAN's DHCP.
const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 50);

#[test]
fn a_macvtap_guest_sits_on_the_lan_with_its_own_mac_only() {
    tapmanager_tests::require_root!();
    let networks = format!("[networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n");
    let (mut sb, lan) = Sandbox::with_lan("mvtap", GROUP, &networks);
    let mut net = NetworkRequest::new("mv".parse().unwrap());
    net.queues = 2;
    let (a, fds) = sb
        .client()
        .attach(AttachRequest {
            vm: "mv1".parse().unwrap(),
            networks: vec![net],
        })
        .expect("attach");
    let iface = &a.interfaces[0];
    assert_eq!(
        iface.address, None,
        "the LAN's DHCP addresses a macvtap guest"
    );
    assert_eq!(fds.len(), 2);
    for fd in &fds {
        let (_, flags) = tapmanager::net::tap::flags(fd).unwrap();
        assert_ne!(flags & libc::IFF_VNET_HDR, 0);
    }
    let show = sb
        .ns
        .ip(&["-d", "link", "show", "dev", iface.ifname.as_str()]);
    assert!(show.contains("macvtap mode bridge"), "{show}");
    assert!(show.contains(&iface.mac.to_string()), "{show}");

    let g = FakeVm::new(fds.into_iter().next().unwrap(), iface.mac.0);
    // On the LAN: the LAN host answers ARP and ping, straight to the guest's MAC.
    let lan_mac = g.arp(g.mac, GUEST, LAN_HOST).expect("LAN host answers ARP");
    assert!(
        g.ping(lan_mac, GUEST, LAN_HOST),
        "LAN host does not answer ping"
    );
    // Its own MAC only: a frame with another source MAC never reaches the LAN.
    let cap = lan.run_in(|| Capture::open("lan0"));
    let mut other = g.mac;
    other[5] ^= 0x33;
    g.send(&fakevm::marked_udp(g.mac, GUEST, b"TM-MV-HONEST"));
    assert!(cap.count_containing(b"TM-MV-HONEST", Duration::from_millis(500)) >= 1);
    g.send(&fakevm::marked_udp(other, GUEST, b"TM-MV-SPOOF"));
    assert_eq!(
        cap.count_containing(b"TM-MV-SPOOF", Duration::from_millis(500)),
        0
    );

    // SIGKILL and restart: adopted with its guard.
    sb.kill();
    sb.start();
    assert_eq!(sb.client().list().unwrap().len(), 1);
    g.send(&fakevm::marked_udp(other, GUEST, b"TM-MV-SPOOF2"));
    assert_eq!(
        cap.count_containing(b"TM-MV-SPOOF2", Duration::from_millis(500)),
        0
    );
    assert!(
        g.ping(lan_mac, GUEST, LAN_HOST),
        "adopted guest lost the LAN"
    );

    // Release removes the macvtap and its guard.
    sb.client().release(&"mv1".parse().unwrap()).unwrap();
    assert!(sb.all_gone(10));
    let (_, rules) = sb.ns.exec(&["nft", "list", "ruleset"]);
    assert!(!rules.contains(iface.ifname.as_str()), "{rules}");
}

#[test]
fn a_macvtap_guest_may_not_take_a_lan_hosts_mac() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n\
         [networks.qemu]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\nallowed_macs = [\"52:54:00\"]\n"
    );
    let (sb, lan) = Sandbox::with_lan("mvmac", GROUP, &networks);
    // The audit's attack: ask for the MAC of a LAN host (its router, say). A router's MAC has
    // its vendor's prefix; the veth's random one would start with fa, fe or f6 one time in
    // twenty, a shape the daemon reserves for its own links and refuses first.
    lan.ip(&["link", "set", "dev", "lan0", "address", "00:11:22:33:44:55"]);
    let shown = lan.ip(&["-o", "link", "show", "dev", "lan0"]);
    let lan_mac: protocol::MacAddr = shown
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let ask = |net: &str, mac: protocol::MacAddr| {
        let mut n = NetworkRequest::new(net.parse().unwrap());
        n.mac = Some(mac);
        sb.client().attach(AttachRequest {
            vm: format!("mac-{net}").parse().unwrap(),
            networks: vec![n],
        })
    };
    for net in ["mv", "qemu"] {
        let e = ask(net, lan_mac).unwrap_err();
        assert_eq!(
            e.code(),
            Some(protocol::ErrorCode::PermissionDenied),
            "{net}: {e}"
        );
        assert!(e.to_string().contains("allowed_macs"), "{e}");
    }
    assert!(sb.taps().is_empty() && sb.journal_entries().is_empty());
    // A prefix the network allows, and the derived MAC (none asked for), are served.
    let (a, _fds) = ask("qemu", "52:54:00:12:34:56".parse().unwrap()).expect("an allowed prefix");
    assert_eq!(a.interfaces[0].mac.to_string(), "52:54:00:12:34:56");
    let (a, _fds2) = sb
        .client()
        .attach(AttachRequest {
            vm: "derived".parse().unwrap(),
            networks: vec![NetworkRequest::new("mv".parse().unwrap())],
        })
        .expect("the derived MAC");
    assert_eq!(
        a.interfaces[0].mac.0[0] & 0x03,
        0x02,
        "locally administered unicast"
    );
}

#[test]
fn a_macvtap_guest_is_served_by_a_daemon_started_with_ip_netns_exec() {
    tapmanager_tests::require_root!();
    let networks = format!("[networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n");
    let (mut sb, _lan) = Sandbox::with_lan("mvipexec", GROUP, &networks);
    // As an operator starts it: its namespace's sysfs is mounted read-write, as on any host.
    sb.kill();
    sb.launch = Launch::IpNetnsExec;
    sb.start();
    let (a, fds) = sb
        .client()
        .attach(AttachRequest {
            vm: "mvexec".parse().unwrap(),
            networks: vec![NetworkRequest::new("mv".parse().unwrap())],
        })
        .expect("attach with the daemon under ip netns exec");
    let g = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    assert!(
        g.arp(g.mac, GUEST, LAN_HOST).is_some(),
        "the LAN host answers ARP"
    );
}
