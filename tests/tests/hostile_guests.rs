//! Kernel tier (root): hostile guests, beside what the bridge tests already send (spoofed
//! MACs, addresses and ARP). A guest flooding its DHCP server gets a bounded number of
//! answers, costs the daemon bounded CPU, does not flood the log, and is served normally
//! again once it stops. A guest flooding the DNS forwarder holds a bounded number of queries
//! (and sockets) in flight, and another guest's queries are answered meanwhile; so are they
//! while one member's guests hold every TCP connection to the forwarder they can open. The
//! figures are printed (`hostile guest: ...`).

use std::time::{Duration, Instant};
use tapmanager_tests::fakevm::FakeVm;
use tapmanager_tests::sandbox::{is_root, Sandbox};

const GROUP: u32 = 47_101;

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

#[test]
fn a_dhcp_flood_is_rate_limited_with_bounded_cpu_and_a_quiet_log() {
    if !is_root("a_dhcp_flood_is_rate_limited_with_bounded_cpu_and_a_quiet_log") {
        return;
    }
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

/// The guard chain's drop counters, by the rule they belong to.
fn guard_counters(sb: &Sandbox) -> Vec<(String, u64)> {
    let (_, out) = sb
        .ns
        .exec(&["nft", "list", "chain", "bridge", "tapmanager", "guard"]);
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (rule, rest) = l.split_once("counter packets ")?;
            let n = rest.split_whitespace().next()?.parse().ok()?;
            Some((rule.trim().to_owned(), n))
        })
        .collect()
}

/// The count of the rule whose text (as nft lists it) contains `needle`.
fn count_of(c: &[(String, u64)], needle: &str) -> u64 {
    c.iter()
        .filter(|(r, _)| r.contains(needle))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn spoofed_and_rogue_frames_are_dropped_and_counted() {
    if !is_root("spoofed_and_rogue_frames_are_dropped_and_counted") {
        return;
    }
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
    let before = guard_counters(&sb);
    for (_, _, frame) in &cases {
        for _ in 0..EACH {
            vm.send(frame);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = guard_counters(&sb);
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
    if !is_root("a_dns_flood_holds_a_bounded_share_and_other_guests_are_answered") {
        return;
    }
    use tapmanager_tests::fakedns::{query, read_answer, FakeDns};
    let networks = "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\n\
                    gateway = \"10.88.0.1/24\"\nnat = true\ndns_forward = true\n\
                    dns_upstream = [\"192.168.77.2\"]\n";
    let (sb, lan) = Sandbox::with_lan("dnsflood", GROUP, networks);
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
        let (a, fds) = sb
            .client()
            .attach(protocol::AttachRequest {
                vm: vm.parse().unwrap(),
                networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
            })
            .unwrap();
        let g = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
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
    if !is_root("idle_tcp_connections_of_one_member_leave_the_forwarder_to_the_others") {
        return;
    }
    use std::net::{Ipv4Addr, SocketAddrV4};
    use tapmanager_tests::fakedns::{query, read_answer, FakeDns};
    let networks = "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\n\
                    gateway = \"10.88.0.1/24\"\nnat = true\ndns_forward = true\n\
                    dns_upstream = [\"192.168.77.2\"]\n";
    let (sb, lan) = Sandbox::with_lan("dnstcp", GROUP, networks);
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
    const MEMBER: u32 = 47_102;
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
