//! Kernel tier (root): the masquerade kind. Every guest has the same internal address behind
//! NAT in its own namespace; inbound only through the listed forwards. The LAN stand-in sits
//! behind the sandbox's uplink veth (never the machine's eth0).

use protocol::{AttachRequest, ErrorCode, NetworkRequest};
use std::net::Ipv4Addr;
use std::time::Duration;
use tapmanager_tests::fakevm::FakeVm;
use tapmanager_tests::sandbox::{Netns, Sandbox, UPLINK};

use tapmanager_tests::ids::masquerade::GROUP;
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

fn attach(
    sb: &Sandbox,
    vm: &str,
    net: &str,
) -> Result<(protocol::Attachment, FakeVm), protocol::ClientError> {
    let (a, fds) = sb.client().attach(AttachRequest {
        vm: vm.parse().unwrap(),
        networks: vec![NetworkRequest::new(net.parse().unwrap())],
    })?;
    let mac = a.interfaces[0].mac.0;
    Ok((a, FakeVm::new(fds.into_iter().next().unwrap(), mac)))
}

/// From the LAN: send one UDP datagram to the host's uplink address and wait for an answer.
fn lan_udp(lan: &Netns, port: u16) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lan.name, "python3", "-c"])
        .arg(format!(
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(5)\ns.sendto(b'tm-ping',('192.168.77.1',{port}))\nd,a=s.recvfrom(100)\nprint(d.decode(),a[0])"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// From the LAN: try a TCP connection to the host's uplink address (no answer is needed).
fn lan_tcp(lan: &Netns, port: u16) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lan.name, "python3", "-c"])
        .arg(format!(
            "import socket\ntry: socket.create_connection(('192.168.77.1',{port}),timeout=2)\nexcept OSError: pass"
        ))
        .spawn()
        .unwrap()
}

/// The guest waits for a TCP SYN to `port` at its own address.
fn syn_seen(g: &FakeVm, port: u16) -> bool {
    g.recv_until(Duration::from_secs(3), |f| {
        let tcp = f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[23] == 6;
        (tcp && f[30..34] == GUEST.octets()
            && u16::from_be_bytes([f[36], f[37]]) == port
            && f[47] & 0x02 != 0)
            .then_some(())
    })
    .is_some()
}

#[test]
fn masquerade_guests_share_an_address_reach_the_lan_and_get_only_their_forwards() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.nat]\nkind = \"masquerade\"\nuplink = \"{UPLINK}\"\nports = [\"udp:5353:53\", \"tcp:8080:80\"]\n\
         [networks.plain]\nkind = \"masquerade\"\nuplink = \"{UPLINK}\"\ntransit = \"169.254.64.0/22\"\n"
    );
    let (mut sb, lan) = Sandbox::with_lan("masq", GROUP, &networks);
    let (_a, g) = attach(&sb, "m1", "nat").expect("attach");
    let l = g.dhcp().expect("lease");
    assert_eq!((l.ip, l.prefix_len), (GUEST, 30));
    assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 1)));
    let gw = g.arp(g.mac, l.ip, l.router.unwrap()).expect("gateway ARP");
    // Egress, NATed twice (namespace, then host).
    assert!(g.ping(gw, l.ip, LAN_HOST), "LAN host unreachable");

    // A UDP forward, there and back: the guest answers the datagram it receives.
    let mut client = lan_udp(&lan, 5353);
    let asked = g.recv_until(Duration::from_secs(5), |f| {
        let u = dhcp::frame::parse_ipv4_udp_frame(f)?;
        (u.dst_ip == GUEST && u.dst_port == 53).then(|| (u.src_ip, u.src_port, u.payload.to_vec()))
    });
    let (src_ip, src_port, payload) = asked.expect("forwarded datagram reached the guest");
    assert_eq!(payload, b"tm-ping");
    g.send(&dhcp::frame::build_ipv4_udp_frame(
        g.mac, gw, GUEST, src_ip, 53, src_port, b"tm-pong",
    ));
    let out = client.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "tm-pong 192.168.77.1"
    );
    client = lan_tcp(&lan, 8080);
    assert!(
        syn_seen(&g, 80),
        "TCP forward 8080 -> 80 did not reach the guest"
    );
    client.wait().unwrap();
    // A port nobody forwards reaches nothing.
    let mut other = lan_tcp(&lan, 8081);
    assert!(!syn_seen(&g, 8081) && !syn_seen(&g, 80));
    other.wait().unwrap();

    // The forwards belong to one guest of the network at a time.
    let e = attach(&sb, "m2", "nat").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded));
    // Without forwards, several guests each have the same address in their own namespace.
    let (_p1, g1) = attach(&sb, "p1", "plain").expect("attach p1");
    let (_p2, g2) = attach(&sb, "p2", "plain").expect("attach p2");
    for g in [&g1, &g2] {
        let l = g.dhcp().expect("lease");
        assert_eq!(l.ip, GUEST);
        let gw = g.arp(g.mac, l.ip, l.router.unwrap()).expect("gateway ARP");
        assert!(g.ping(gw, l.ip, LAN_HOST));
    }
    // SIGKILL and restart: adopted with its forwards; the guest still reaches the LAN and is
    // still reached through its forward.
    sb.kill();
    sb.start();
    assert_eq!(sb.client().list().unwrap().len(), 3);
    assert!(g.ping(gw, l.ip, LAN_HOST), "adopted guest lost the LAN");
    let mut again = lan_tcp(&lan, 8080);
    assert!(syn_seen(&g, 80), "forward lost across the restart");
    again.wait().unwrap();

    // Release takes the namespace, the links and the forwards with it.
    sb.client().release(&"m1".parse().unwrap()).unwrap();
    assert!(sb.wait_for(10, || sb.taps().len() == 2
        && sb.journal_entries().len() == 2));
    let (_, nat) = sb
        .ns
        .exec(&["nft", "list", "table", "ip", "tapmanager_nat"]);
    assert!(!nat.contains("8080 :"), "{nat}");
    assert!(
        attach(&sb, "m3", "nat").is_ok(),
        "the forwards are free again"
    );
}
