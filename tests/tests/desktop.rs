//! Kernel tier (root): the desktop `default` network, libvirt's in tapmanager: a bridge whose
//! guests are masqueraded out of the host, and a DNS forwarder on the gateway that follows the
//! host's resolv.conf, systemd-resolved's stub at 127.0.0.53 included. The "host" is the
//! sandbox's namespace, its default route leads into the test LAN, and stand-in DNS servers
//! play resolved's stub (in the sandbox) and the upstream (in the LAN).

use protocol::{AttachRequest, NetworkRequest};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::Duration;
use tapmanager_tests::fakedns::{query, read_answer, FakeDns};
use tapmanager_tests::fakevm::FakeVm;
use tapmanager_tests::sandbox::{Netns, Sandbox, TestDir, BRIDGE};

use tapmanager_tests::ids::desktop::GROUP;
const NAME: &str = "www.example.test";
/// What resolved's stub answers for [`NAME`], and what the LAN's server answers.
const FROM_STUB: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 1);
const FROM_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 99);
const GW: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);

/// Asks the forwarder from the guest; the answer's RCODE and address.
fn ask(vm: &FakeVm, gw_mac: [u8; 6], ip: Ipv4Addr, id: u16, name: &str) -> (u8, Option<Ipv4Addr>) {
    let answer = vm
        .udp_exchange(
            gw_mac,
            ip,
            GW,
            40_000 + id,
            53,
            &query(id, name),
            Duration::from_secs(6),
        )
        .unwrap_or_else(|| panic!("no DNS answer for {name}"));
    let (got_id, rcode, a) = read_answer(&answer).expect("a DNS answer");
    assert_eq!(got_id, id);
    (rcode, a)
}

#[test]
fn default_network_nats_guests_out_and_forwards_dns_through_the_hosts_resolver() {
    tapmanager_tests::require_root!();
    let dir = TestDir::new("desktop");
    let resolv = dir.join("resolv.conf");
    // As on a desktop with systemd-resolved: only the stub.
    std::fs::write(
        &resolv,
        "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\n",
    )
    .unwrap();
    let networks = format!(
        "[networks.default]\nkind = \"bridge\"\nbridge = \"{BRIDGE}\"\ngateway = \"{GW}/24\"\n\
         nat = true\ndns_forward = true\nresolv_conf = \"{}\"\n",
        resolv.display()
    );
    let (sb, lan) = Sandbox::with_lan("desktop", GROUP, &networks);
    // The host's default route leads into the LAN ("the internet"); 192.168.78.0/24 is
    // reached through it. The LAN has no route back to the guests: only NAT answers.
    sb.ns
        .ip(&["route", "add", "default", "via", "192.168.77.2"]);
    let stub = FakeDns::start(&sb.ns, Ipv4Addr::new(127, 0, 0, 53), NAME, FROM_STUB);
    let upstream = FakeDns::start(&lan, Ipv4Addr::new(192, 168, 77, 2), NAME, FROM_LAN);

    let (a, mut fds) = sb
        .client()
        .attach(AttachRequest {
            vm: "desk".parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        })
        .expect("attach");
    let vm = FakeVm::new(fds.remove(0), a.interfaces[0].mac.0);
    let lease = vm.dhcp().expect("lease");
    assert_eq!(lease.router, Some(GW));
    assert_eq!(lease.dns, vec![GW], "the gateway is the guest's DNS server");
    let (gw_mac, ip) = (lease.server_mac, lease.ip);

    // DNS through resolved's stub, which only the host can reach.
    assert_eq!(ask(&vm, gw_mac, ip, 1, NAME), (0, Some(FROM_STUB)));
    assert_eq!(
        ask(&vm, gw_mac, ip, 2, "nothing.example.test"),
        (3, None),
        "NXDOMAIN passes"
    );
    assert_eq!((stub.asked(), upstream.asked()), (2, 0));

    // Out through NAT to a host past the default route.
    assert!(
        vm.ping(gw_mac, ip, Ipv4Addr::new(192, 168, 78, 1)),
        "no NAT out"
    );

    // A second guest with a kernel stack, which answers pings: a veth into the bridge (not a
    // TAP of ours, so no guards), its default route via the gateway.
    let guest2 = Netns::new("dguest");
    sb.ns.ip(&[
        "link",
        "add",
        "tmdg0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &guest2.name,
    ]);
    sb.ns.ip(&["link", "set", "tmdg0", "master", BRIDGE, "up"]);
    guest2.ip(&["addr", "add", "10.88.0.200/24", "dev", "eth0"]);
    guest2.ip(&["link", "set", "eth0", "up"]);
    guest2.ip(&["route", "add", "default", "via", &GW.to_string()]);
    let (out_ok, out) = guest2.exec(&["busybox", "ping", "-c", "1", "-W", "2", "192.168.78.1"]);
    assert!(out_ok, "the kernel-stack guest did not get out:\n{out}");

    // Nothing from outside opens a connection to a guest, even with a route to it (the
    // guest would answer: it just did, from the inside).
    lan.ip(&["route", "add", "10.88.0.0/24", "via", "192.168.77.1"]);
    let (reached, out) = lan.exec(&["busybox", "ping", "-c", "2", "-W", "1", "10.88.0.200"]);
    assert!(!reached, "the LAN reached a guest:\n{out}");
    // Nor does the forwarder answer anyone but the guests' subnet.
    let answered = lan.run_in(|| {
        let s = UdpSocket::bind("192.168.77.2:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(&query(9, NAME), (GW, 53)).unwrap();
        s.recv(&mut [0u8; 512]).is_ok()
    });
    assert!(!answered, "the forwarder answered the LAN");

    // The host moves to another network: resolv.conf changes, the next query follows it.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&resolv, "nameserver 192.168.77.2\n").unwrap();
    assert_eq!(ask(&vm, gw_mac, ip, 3, NAME), (0, Some(FROM_LAN)));
    assert_eq!((stub.asked(), upstream.asked()), (2, 1));

    // TCP, from the kernel-stack guest.
    let over_tcp = guest2.run_in(|| {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect_timeout(&(GW, 53).into(), Duration::from_secs(5))
            .expect("connect to the forwarder over TCP");
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let q = query(4, NAME);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut answer).unwrap();
        read_answer(&answer)
    });
    assert_eq!(over_tcp, Some((4, 0, Some(FROM_LAN))));
    assert_eq!(upstream.asked(), 2);

    // No upstream answers: SERVFAIL, not silence.
    std::fs::write(&resolv, "nameserver 192.168.77.9\n").unwrap();
    assert_eq!(ask(&vm, gw_mac, ip, 5, NAME), (2, None));

    sb.client()
        .release(&"desk".parse().unwrap())
        .expect("release");
    drop(vm);
    assert!(
        sb.all_gone(10),
        "left behind: {:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
}
