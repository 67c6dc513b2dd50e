//! Kernel tier (root): hostile guests, beside what the bridge tests already send (spoofed
//! MACs, addresses and ARP). A guest flooding its DHCP server gets a bounded number of
//! answers, costs the daemon bounded CPU, does not flood the log, and is served normally
//! again once it stops. The figures are printed (`hostile guest: ...`).

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
