//! Kernel tier (root): hostile guests, beside what the bridge tests already send (spoofed
//! MACs, addresses and ARP). A guest flooding its DHCP server gets a bounded number of
//! answers, costs the daemon bounded CPU, does not flood the log, and is served normally
//! again once it stops. A guest flooding the DNS forwarder holds a bounded number of queries
//! (and sockets) in flight, and another guest's queries are answered meanwhile; so are they
//! while one member's guests hold every TCP connection to the forwarder they can open. The
//! figures are printed (`hostile guest: ...`).

use std::time::{Duration, Instant};
use tapmanager_tests::fakevm::FakeVm;
use tapmanager_tests::l2attack::{self, Effects, UdpSink};
use tapmanager_tests::sandbox::{count_of, Sandbox};

use tapmanager_tests::ids::hostile_guests::GROUP;

/// A bridge network whose DNS forwarder relays to the stand-in LAN's 192.168.77.2.
const DNS_NETWORK: &str = "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\n\
                           gateway = \"10.88.0.1/24\"\nnat = true\ndns_forward = true\n\
                           dns_upstream = [\"192.168.77.2\"]\n";

/// The daemon's CPU time so far (user + system), from /proc/PID/stat.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after_comm
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime), counted from field 3 here.
    let ticks = f[11] + f[12];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A fake guest attached to the sandbox's `default` network.
fn on_default(sb: &Sandbox, vm: &str) -> FakeVm {
    let (a, fds) = sb
        .client()
        .attach(protocol::AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
        })
        .unwrap();
    FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0)
}

#[test]
fn a_dhcp_flood_is_rate_limited_with_bounded_cpu_and_a_quiet_log() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("dhcpflood", GROUP);
    let (a, fds) = sb
        .client()
        .attach(protocol::AttachRequest {
            vm: "flooder".parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
        })
        .unwrap();
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    assert!(vm.dhcp().is_some(), "no lease before the flood");

    const FLOOD: u32 = 5000;
    let cpu_before = cpu(sb.daemon_pid());
    let t = Instant::now();
    for i in 0..FLOOD {
        vm.send(&vm.discover_frame(0x1000 + i));
    }
    let sent_in = t.elapsed();
    // Every answer that comes, until the line is quiet for a second.
    let mut offers = 0;
    while vm
        .recv_until(Duration::from_secs(1), |f| {
            let u = dhcp::frame::parse_ipv4_udp_frame(f)?;
            (u.src_port == 67).then_some(())
        })
        .is_some()
    {
        offers += 1;
    }
    let window = t.elapsed();
    let cpu_used = cpu(sb.daemon_pid()) - cpu_before;
    let log = sb.log();
    let flood_lines = log.lines().filter(|l| l.contains("DHCP flood")).count();
    eprintln!(
        "hostile guest: {FLOOD} DISCOVERs sent in {sent_in:?}; {offers} answered within {window:?}; \
         daemon CPU {cpu_used:?}; {flood_lines} log line(s)"
    );
    // At most the burst (20) and 10 a second over the window, with slack for the send time.
    let allowed = 20 + (window.as_secs_f64() * 10.0).ceil() as u32 + 5;
    assert!(
        offers >= 1 && offers <= allowed,
        "{offers} answers (allowed {allowed})"
    );
    assert!(
        (1..=2).contains(&flood_lines),
        "{flood_lines} flood log lines"
    );
    // Bounded CPU: far below the wall time of the flood.
    assert!(cpu_used < Duration::from_secs(2), "daemon CPU {cpu_used:?}");
    // Once it stops, the guest is served as before.
    std::thread::sleep(Duration::from_secs(2));
    assert!(vm.dhcp().is_some(), "no lease after the flood");
}

/// One guest flooding DHCP as fast as it can write does not keep a neighbour from its lease:
/// the guests of a namespace share one DHCP socket (dhcp/src/server.rs), so the flood's frames
/// queue beside the neighbour's, and are dropped unparsed past the flooder's rate.
#[test]
fn a_dhcp_flood_does_not_keep_a_neighbour_from_its_lease() {
    tapmanager_tests::require_root!();
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let sb = Sandbox::with_defaults("dhcpnbr", GROUP);
    let flooder = on_default(&sb, "flooder");
    let neighbour = on_default(&sb, "neighbour");
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let flood = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                flooder.send(&flooder.discover_frame(0x2000 + i));
                i = i.wrapping_add(1);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (mut tries, mut lease) = (0, None);
    while lease.is_none() && tries < 3 {
        tries += 1;
        lease = neighbour.dhcp();
    }
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "DHCP flood beside a neighbour: the neighbour leased after {tries} tries in {took:?}, \
         while the flooder wrote {sent} DISCOVERs"
    );
    assert!(
        lease.is_some(),
        "the neighbour got no lease in 3 tries while {sent} DISCOVERs were flooded"
    );
}

#[test]
fn spoofed_and_rogue_frames_are_dropped_and_counted() {
    tapmanager_tests::require_root!();
    use std::net::Ipv4Addr;
    use tapmanager_tests::fakevm;
    let sb = Sandbox::with_defaults("guestcount", GROUP);
    let (a, fds) = sb
        .client()
        .attach(protocol::AttachRequest {
            vm: "rogue".parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
        })
        .unwrap();
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    let lease = vm.dhcp().expect("lease");
    let mut other_mac = vm.mac;
    other_mac[5] ^= 0x5a;
    let other_ip = Ipv4Addr::new(10, 88, 0, 99);
    // An IPv6 router advertisement (ICMPv6 type 134) to all nodes.
    let mut ra = vec![0x33, 0x33, 0, 0, 0, 1];
    ra.extend_from_slice(&vm.mac);
    ra.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, 58, 255]);
    ra.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ra.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ra.extend_from_slice(&[134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "spoofed source MAC",
            "ether saddr != @macs",
            fakevm::marked_udp(other_mac, lease.ip, b"TM-X"),
        ),
        (
            "ARP for another address",
            "arp saddr ip != @ips",
            fakevm::arp_request(vm.mac, other_ip, lease.router.unwrap()),
        ),
        (
            "a DHCP server's answer",
            "udp sport 67",
            dhcp::frame::build_ipv4_udp_frame(
                vm.mac,
                fakevm::BROADCAST,
                lease.ip,
                Ipv4Addr::BROADCAST,
                67,
                68,
                b"TM-ROGUE-OFFER",
            ),
        ),
        (
            "spoofed source address",
            " ip saddr != @ips",
            fakevm::marked_udp(vm.mac, other_ip, b"TM-Y"),
        ),
        ("an IPv6 router advertisement", "ip6", ra),
    ];
    const EACH: u64 = 100;
    let before = sb.guard_counters();
    for (_, _, frame) in &cases {
        for _ in 0..EACH {
            vm.send(frame);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = sb.guard_counters();
    for (what, rule, _) in &cases {
        let dropped = count_of(&after, rule) - count_of(&before, rule);
        eprintln!(
            "hostile guest: {what}: {EACH} sent, {dropped} dropped and counted by `{rule} ...`"
        );
        assert!(dropped >= EACH, "{what}: only {dropped} of {EACH} counted");
    }
}

#[test]
fn a_dns_flood_holds_a_bounded_share_and_other_guests_are_answered() {
    tapmanager_tests::require_root!();
    use tapmanager_tests::fakedns::{query, read_answer, FakeDns};
    let (sb, lan) = Sandbox::with_lan("dnsflood", GROUP, DNS_NETWORK);
    // The upstream answers the honest name; the flood's names it never answers, so each
    // flood query holds its place for the forwarder's whole 2 s wait.
    let upstream = FakeDns::start_with(
        &lan,
        "192.168.77.2".parse().unwrap(),
        "honest.example.test",
        "192.168.78.1".parse().unwrap(),
        true,
    );
    let guest = |vm: &str| {
        let g = on_default(&sb, vm);
        let lease = g.dhcp().expect("lease");
        (g, lease)
    };
    let (flooder, fl) = guest("dnsflooder");
    let (honest, hl) = guest("dnshonest");
    let gw: std::net::Ipv4Addr = "10.88.0.1".parse().unwrap();
    let fds_of = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let pid = sb.daemon_pid();
    let fds_before = fds_of(pid);

    const FLOOD: u16 = 5000;
    let t = Instant::now();
    for i in 0..FLOOD {
        flooder.send(&dhcp::frame::build_ipv4_udp_frame(
            flooder.mac,
            fl.server_mac,
            fl.ip,
            gw,
            20_000 + (i % 1000),
            53,
            &query(i, "flood.example.test"),
        ));
    }
    let sent_in = t.elapsed();
    let fds_during = fds_of(pid);
    let reached = upstream.asked();
    let elapsed = t.elapsed();
    // Meanwhile the other guest asks, and is answered. Like a stub resolver it asks again
    // after a second without answer: a flood can overflow the forwarder socket's receive
    // queue for a moment, and the kernel then drops anyone's query.
    let mut tries = 0;
    let answer = (0..5)
        .find_map(|_| {
            tries += 1;
            honest.udp_exchange(
                hl.server_mac,
                hl.ip,
                gw,
                40_001,
                53,
                &query(7, "honest.example.test"),
                Duration::from_secs(1),
            )
        })
        .expect("the honest guest got no answer in 5 tries during the flood");
    assert_eq!(
        read_answer(&answer),
        Some((7, 0, Some("192.168.78.1".parse().unwrap())))
    );
    let drop_lines = sb
        .log()
        .lines()
        .filter(|l| l.contains("DNS forwarder: too many"))
        .count();
    eprintln!(
        "hostile guest: {FLOOD} DNS queries sent in {sent_in:?}; {reached} reached the upstream \
         within {elapsed:?}; daemon fds {fds_before} -> {fds_during}; the other guest was \
         answered at try {tries}; {drop_lines} log line(s)"
    );
    assert!(
        (1..=2).contains(&drop_lines),
        "{drop_lines} log lines of dropped queries"
    );
    // Each flood query holds its slot until its 2 s wait ends: in any 2 s at most PER_GUEST
    // (32) of one guest go out.
    let windows = 1 + (elapsed.as_secs_f64() / 2.0).floor() as usize;
    assert!(
        reached >= 1 && reached <= 32 * windows,
        "{reached} flood queries reached the upstream in {elapsed:?}"
    );
    assert!(
        fds_during <= fds_before + 32 * windows + 8,
        "daemon fds {fds_before} -> {fds_during}"
    );
    // Once the flood's waits are over, its sockets are gone.
    assert!(
        sb.wait_for(10, || fds_of(pid) <= fds_before + 2),
        "daemon fds stay at {}",
        fds_of(pid)
    );
}

#[test]
fn idle_tcp_connections_of_one_member_leave_the_forwarder_to_the_others() {
    tapmanager_tests::require_root!();
    use std::net::{Ipv4Addr, SocketAddrV4};
    use tapmanager_tests::fakedns::{query, read_answer, FakeDns};
    let (sb, lan) = Sandbox::with_lan("dnstcp", GROUP, DNS_NETWORK);
    let _upstream = FakeDns::start(
        &lan,
        "192.168.77.2".parse().unwrap(),
        "honest.example.test",
        "192.168.78.1".parse().unwrap(),
    );
    let guest = |mut client: protocol::Client, vm: &str| {
        let (a, fds) = client
            .attach(protocol::AttachRequest {
                vm: vm.parse().unwrap(),
                networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
            })
            .unwrap();
        let g = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
        let lease = g.dhcp().expect("lease");
        (g, lease)
    };
    // The audit's attack: eight guests of one member, 32 idle connections each (the old
    // per-guest share of queries, so 256: the whole network's).
    use tapmanager_tests::ids::hostile_guests::MEMBER;
    const GUESTS: usize = 8;
    const EACH: u16 = 32;
    let attackers: Vec<_> = (0..GUESTS)
        .map(|i| guest(sb.client_as(MEMBER), &format!("tcpidle{i}")))
        .collect();
    let (honest, hl) = guest(sb.client(), "tcphonest");
    let gw: Ipv4Addr = "10.88.0.1".parse().unwrap();
    let fds_of = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let pid = sb.daemon_pid();
    let fds_before = fds_of(pid);

    let t = Instant::now();
    let opened: usize = attackers
        .iter()
        .map(|(g, l)| {
            (0..EACH)
                .filter(|i| {
                    let src = SocketAddrV4::new(l.ip, 30_000 + i);
                    g.tcp_open_idle(l.server_mac, src, SocketAddrV4::new(gw, 53))
                })
                .count()
        })
        .sum();
    let opened_in = t.elapsed();
    // The kernel completes the handshakes before the forwarder accepts them: give it the time
    // to take every connection it will (the audit's connections had been open for a while).
    std::thread::sleep(Duration::from_millis(500));
    let fds_during = fds_of(pid);
    // Meanwhile the guest of another uid asks 16 names at once, each from its own port, and
    // collects the answers for 2 s (within the old 10 s idle time of the connections).
    const ASKED: u16 = 16;
    for i in 0..ASKED {
        honest.send(&dhcp::frame::build_ipv4_udp_frame(
            honest.mac,
            hl.server_mac,
            hl.ip,
            gw,
            40_000 + i,
            53,
            &query(100 + i, "honest.example.test"),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut answered = std::collections::BTreeSet::new();
    while let Some(id) =
        honest.recv_until(deadline.saturating_duration_since(Instant::now()), |f| {
            let u = dhcp::frame::parse_ipv4_udp_frame(f)?;
            let (id, rcode, a) = read_answer(u.payload)?;
            (u.src_port == 53 && rcode == 0 && a == Some("192.168.78.1".parse().unwrap()))
                .then_some(id)
        })
    {
        answered.insert(id);
    }
    let refused_lines = sb
        .log()
        .lines()
        .filter(|l| l.contains("DNS forwarder: too many TCP connections"))
        .count();
    eprintln!(
        "hostile guest: {GUESTS} guests of uid {MEMBER} opened {opened} idle TCP connections to \
         the forwarder in {opened_in:?}; daemon fds {fds_before} -> {fds_during}; the guest of \
         another uid got {} of {ASKED} answers; {refused_lines} log line(s) of refusals",
        answered.len()
    );
    assert_eq!(
        answered.len(),
        usize::from(ASKED),
        "the honest guest's answers: {answered:?}"
    );
    // The kernel completes every handshake; the forwarder keeps at most 32 of one uid's
    // connections (8 a guest) and closes the others at once.
    assert_eq!(opened, GUESTS * usize::from(EACH));
    assert!(
        fds_during <= fds_before + tapmanager::dns::TCP_PER_UID + 4,
        "daemon fds {fds_before} -> {fds_during}"
    );
    assert!(
        (1..=2).contains(&refused_lines),
        "{refused_lines} log lines of refused connections"
    );
    // A connection that has not asked anything is closed after 2 s.
    assert!(
        sb.wait_for(4, || fds_of(pid) <= fds_before + 2),
        "daemon fds stay at {}",
        fds_of(pid)
    );
}

// ---- Link-local group MACs and VLAN tags, on every kind (issue 11, finding 1) ----

/// Every namespace a guest's host-side links live in: the daemon's, and each the daemon
/// pinned (isolated and CNI guests', pods').
fn namespaces_of(sb: &Sandbox) -> Vec<String> {
    let mut v = vec![format!("/run/netns/{}", sb.ns.name)];
    if let Ok(rd) = std::fs::read_dir(sb.dir.join("state/netns")) {
        v.extend(rd.flatten().map(|e| e.path().display().to_string()));
    }
    v
}

/// Sends the whole attack ([`l2attack::send_all`]) from `vm`, spoofing `spoof`, at `target`
/// (a host address; `target_mac` the MAC the guest reaches it by), and checks it changed
/// nothing: no IPv6 configuration learned in any of `namespaces`, no spoofed datagram at
/// `sink`, and the guest is still served.
fn attack_changes_nothing(
    kind: &str,
    vm: &FakeVm,
    (spoof, target, target_mac): (std::net::Ipv4Addr, std::net::Ipv4Addr, [u8; 6]),
    sink: &UdpSink,
    namespaces: &[String],
) {
    let sent = l2attack::send_all(vm, spoof, target, target_mac);
    std::thread::sleep(Duration::from_secs(1));
    let learned: Vec<(String, Effects)> = namespaces
        .iter()
        .map(|n| (n.clone(), Effects::of(n)))
        .collect();
    let spoofed = sink
        .received()
        .iter()
        .filter(|(_, p)| p == l2attack::MARKER)
        .count();
    eprintln!(
        "hostile guest ({kind}): {sent} frames to the 16 link-local group MACs and in 802.1Q, \
         802.1ad and double tags; {spoofed} spoofed datagrams reached a host socket; IPv6 \
         learned in {} namespaces: {:?}",
        namespaces.len(),
        learned
            .iter()
            .filter(|(_, e)| !e.0.is_empty())
            .collect::<Vec<_>>()
    );
    assert_eq!(spoofed, 0, "{kind}: spoofed datagrams reached the host");
    for (ns, e) in &learned {
        assert_eq!(
            e,
            &Effects(Vec::new()),
            "{kind}: {ns} learned from the guest"
        );
    }
    assert!(vm.dhcp().is_some(), "{kind}: the guest is no longer served");
}

/// Attaches `vm` on `net`, leases, and finds its gateway's MAC.
fn leased(sb: &Sandbox, vm: &str, net: &str) -> (FakeVm, tapmanager_tests::fakevm::Lease, [u8; 6]) {
    let (a, fds) = sb
        .client()
        .attach(protocol::AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new(net.parse().unwrap())],
        })
        .expect("attach");
    let g = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    let lease = g.dhcp().expect("lease");
    let router = lease.router.expect("a gateway");
    let gw_mac = g
        .arp(g.mac, lease.ip, router)
        .expect("the gateway answers ARP");
    (g, lease, gw_mac)
}

/// Another address of the guest's subnet: what it spoofs.
fn other_address(l: &tapmanager_tests::fakevm::Lease) -> std::net::Ipv4Addr {
    let o = l.ip.octets();
    std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3] ^ 0x40)
}

#[test]
fn a_bridge_guest_gets_nothing_past_its_guards_by_group_macs_or_vlan_tags() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("l2bridge", GROUP);
    let sink = UdpSink::open(&sb.ns);
    let (vm, lease, gw_mac) = leased(&sb, "l2b", "default");
    let gateway: std::net::Ipv4Addr = tapmanager_tests::sandbox::GATEWAY.parse().unwrap();
    // The sink hears the guest when it sends as itself.
    vm.send(&dhcp::frame::build_ipv4_udp_frame(
        vm.mac,
        gw_mac,
        lease.ip,
        gateway,
        4000,
        l2attack::SINK_PORT,
        b"TM-L2-HONEST",
    ));
    assert!(
        sb.wait_for(5, || sink
            .received()
            .iter()
            .any(|(_, p)| p == b"TM-L2-HONEST")),
        "the honest datagram did not arrive"
    );
    attack_changes_nothing(
        "bridge",
        &vm,
        (other_address(&lease), gateway, gw_mac),
        &sink,
        &namespaces_of(&sb),
    );
    // Dropped at the TAP's ingress hook, and counted there.
    let c = sb.guard_counters();
    // On a network without IPv6 the port is not in `v6ports`: all of its IPv6 is dropped.
    assert!(count_of(&c, "iifname != @v6ports") >= 32, "{c:?}");
    assert!(count_of(&c, "ether type != { ip, arp, ip6 }") >= 1, "{c:?}");
    assert!(count_of(&c, "ip saddr != @ips") >= 32, "{c:?}");
}

#[test]
fn isolated_and_masquerade_guests_get_nothing_past_their_guards_by_group_macs_or_vlan_tags() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let host_uplink: std::net::Ipv4Addr = "192.168.77.1".parse().unwrap();
    for (kind, networks) in [
        ("isolated, routed", format!("[networks.n]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\n")),
        ("isolated, bridge binding", format!("[networks.n]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\nbinding = \"bridge\"\n")),
        ("isolated, tc-redirect binding", format!("[networks.n]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{uplink}\"\nbinding = \"tc-redirect\"\n")),
        ("masquerade", format!("[networks.n]\nkind = \"masquerade\"\nuplink = \"{uplink}\"\n")),
    ] {
        let (sb, _lan) = Sandbox::with_lan("l2iso", GROUP, &networks);
        let sink = UdpSink::open(&sb.ns);
        let (vm, lease, gw_mac) = leased(&sb, "l2i", "n");
        attack_changes_nothing(
            kind,
            &vm,
            (other_address(&lease), host_uplink, gw_mac),
            &sink,
            &namespaces_of(&sb),
        );
    }
}

#[test]
fn a_macvtap_guest_configures_nothing_on_the_host_by_group_macs_or_vlan_tags() {
    tapmanager_tests::require_root!();
    let uplink = tapmanager_tests::sandbox::UPLINK;
    let networks = format!("[networks.mv]\nkind = \"macvtap\"\nlower = \"{uplink}\"\n");
    let (sb, _lan) = Sandbox::with_lan("l2mv", GROUP, &networks);
    let sink = UdpSink::open(&sb.ns);
    let (a, fds) = sb
        .client()
        .attach(protocol::AttachRequest {
            vm: "l2m".parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new("mv".parse().unwrap())],
        })
        .expect("attach");
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    let sent = l2attack::send_all(
        &vm,
        "192.168.77.99".parse().unwrap(),
        "192.168.77.1".parse().unwrap(),
        [0xff; 6],
    );
    std::thread::sleep(Duration::from_secs(1));
    let learned = Effects::of(&format!("/run/netns/{}", sb.ns.name));
    let spoofed = sink.received().len();
    eprintln!("hostile guest (macvtap): {sent} frames; {spoofed} reached a host socket; IPv6 learned: {learned:?}");
    assert_eq!(learned, Effects(Vec::new()));
    assert_eq!(spoofed, 0);
    // The macvtap itself takes no part in the host's IPv6.
    let (_, v6) = sb.ns.exec(&[
        "cat",
        &format!(
            "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
            a.interfaces[0].ifname
        ),
    ]);
    assert_eq!(v6.trim(), "1");
}

#[test]
fn cni_and_pod_guests_get_nothing_past_their_guards_by_group_macs_or_vlan_tags() {
    tapmanager_tests::require_root!();
    use tapmanager_tests::cnidir::{bridge_list, pod_cni, CniDir};
    for binding in ["tc-redirect", "bridge"] {
        // CNI: Debian's bridge plugin makes tmcni0 (10.99.0.1) in the daemon's namespace.
        let d = CniDir::new(&format!("l2cni-{binding}"));
        d.write(
            "tmpods",
            bridge_list(&d, "tmpods", "1.0.0", "tmcni0", "10.99.0.0/24", &[]),
        );
        let sb = Sandbox::new(
            "l2cni",
            GROUP,
            &d.network("pod", "tmpods", &format!("binding = \"{binding}\"")),
        );
        let sink = UdpSink::open(&sb.ns);
        let (vm, lease, gw_mac) = leased(&sb, "l2c", "pod");
        attack_changes_nothing(
            &format!("cni, {binding} binding"),
            &vm,
            (other_address(&lease), "10.99.0.1".parse().unwrap(), gw_mac),
            &sink,
            &namespaces_of(&sb),
        );
        drop(sb);

        // Pod: a namespace made by "the runtime", its eth0 set up by the same plugin.
        let d = CniDir::new(&format!("l2pod-{binding}"));
        let sb = Sandbox::new(
            "l2pod",
            GROUP,
            &format!("[networks.pods]\nkind = \"pod\"\nbinding = \"{binding}\"\n"),
        );
        let pod = tapmanager_tests::sandbox::Netns::new("l2pod");
        let result: serde_json::Value =
            serde_json::from_str(&pod_cni(&sb, &d, &pod, "ADD")).unwrap();
        let gw: std::net::Ipv4Addr = result["ips"][0]["gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let sink = UdpSink::open(&sb.ns);
        let pod_sink = UdpSink::open(&pod);
        let mut n = protocol::NetworkRequest::new("pods".parse().unwrap());
        n.take_over = Some("eth0".parse().unwrap());
        let nsfile = std::fs::File::open(format!("/run/netns/{}", pod.name)).unwrap();
        let (a, fds) = sb
            .client()
            .attach_pod(
                protocol::AttachRequest {
                    vm: "l2p".parse().unwrap(),
                    networks: vec![n],
                },
                std::os::fd::AsFd::as_fd(&nsfile),
            )
            .expect("attach_pod");
        let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
        let lease = vm.dhcp().expect("lease");
        let gw_mac = vm
            .arp(vm.mac, lease.ip, gw)
            .expect("the gateway answers ARP");
        let mut namespaces = namespaces_of(&sb);
        namespaces.push(format!("/run/netns/{}", pod.name));
        attack_changes_nothing(
            &format!("pod, {binding} binding"),
            &vm,
            (other_address(&lease), gw, gw_mac),
            &sink,
            &namespaces,
        );
        assert!(
            pod_sink.received().is_empty(),
            "pod {binding}: reached the pod's socket"
        );
        drop(vm);
        sb.client().release(&"l2p".parse().unwrap()).unwrap();
        assert!(sb.wait_for(10, || sb.journal_entries().is_empty()));
        pod_cni(&sb, &d, &pod, "DEL");
    }
}
