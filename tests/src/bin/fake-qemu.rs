//! A stand-in for `qemu-system-x86_64` where no guest can boot (the systemd tier's VM has no
//! KVM, and a nested TCG guest would take minutes): it takes the command line vmwrapper's QEMU
//! adapter builds (`-netdev tap,id=I,fd=N` or `fds=a:b` with `-device
//! virtio-net-pci,netdev=I,mac=M`, or `-nic tap,fd=N,...,mac=M`), ignores every other
//! argument, and on each NIC's TAP fd runs a DHCP DORA as the guest, printing one line each:
//!
//! ```text
//! TM-FAKE-QEMU pid=<pid> nics=<n>
//! TM-LEASE nic=<i> mac=<mac> ip=<a.b.c.d/len> router=<ip|none> dns=<ip,ip|none> server=<ip|none>
//! TM-LEASE-FAIL nic=<i> mac=<mac>
//! TM-PING nic=<i> router=<ip> ok|fail       (with -tm-ping only)
//! ```
//!
//! Then it stays up, as a running guest does, until SIGTERM or the end of stdin. Each stdin
//! line `renew` renews every lease at T1 (unicast REQUEST to its server), printing `TM-RENEW
//! nic=<i> ip=<a.b.c.d/len>` or `TM-RENEW-FAIL nic=<i>`. With `-tm-no-dhcp` (not a QEMU
//! option: for networks that serve no DHCP, such as macvtap) it only reports its NICs. With
//! `-tm-ping` (not a QEMU option either), each NIC that leased then ARPs its router and pings
//! it: the router reached the guest back (ARP reply, echo reply), or not.

use std::io::BufRead;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use tapmanager_tests::fakevm::{FakeVm, Lease};

/// One NIC as the command line gives it.
struct Nic {
    fd: RawFd,
    mac: [u8; 6],
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// `key=value` of a comma-separated QEMU option string.
fn opt<'a>(spec: &'a str, key: &str) -> Option<&'a str> {
    spec.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The NICs of a QEMU command line, in order; the first fd of a multi-queue NIC.
fn nics(args: &[String]) -> Vec<Nic> {
    let mut netdevs: Vec<(String, RawFd)> = Vec::new();
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(v) = it.clone().next() else { break };
        let fd = |v: &str| {
            opt(v, "fd")
                .or_else(|| opt(v, "fds").and_then(|l| l.split(':').next()))
                .and_then(|f| f.parse().ok())
        };
        match a.as_str() {
            "-netdev" if v.starts_with("tap,") => {
                if let (Some(id), Some(fd)) = (opt(v, "id"), fd(v)) {
                    netdevs.push((id.to_owned(), fd));
                }
            }
            "-device" => {
                let found = opt(v, "netdev")
                    .and_then(|id| netdevs.iter().find(|(n, _)| n == id))
                    .map(|(_, fd)| *fd);
                if let (Some(fd), Some(mac)) = (found, opt(v, "mac").and_then(parse_mac)) {
                    out.push(Nic { fd, mac });
                }
            }
            "-nic" if v.starts_with("tap,") => {
                if let (Some(fd), Some(mac)) = (fd(v), opt(v, "mac").and_then(parse_mac)) {
                    out.push(Nic { fd, mac });
                }
            }
            _ => continue,
        }
        it.next();
    }
    out
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn list(ips: &[std::net::Ipv4Addr]) -> String {
    if ips.is_empty() {
        return "none".into();
    }
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn opt_ip(ip: Option<std::net::Ipv4Addr>) -> String {
    ip.map_or("none".into(), |i| i.to_string())
}

/// DORA, three tries (a DISCOVER can race the daemon's DHCP socket coming up).
fn lease(vm: &FakeVm) -> Option<Lease> {
    (0..3).find_map(|_| vm.dhcp())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dhcp = !args.iter().any(|a| a == "-tm-no-dhcp");
    let ping = args.iter().any(|a| a == "-tm-ping");
    let nics = nics(&args);
    println!(
        "TM-FAKE-QEMU pid={} nics={}",
        std::process::id(),
        nics.len()
    );
    let vms: Vec<FakeVm> = nics
        .iter()
        .map(|n| {
            // SAFETY: vmwrapper put this TAP fd at this number for us (it is in our argv,
            // as it is in QEMU's), and nothing else in this process owns it.
            FakeVm::new(unsafe { OwnedFd::from_raw_fd(n.fd) }, n.mac)
        })
        .collect();
    let mut leases: Vec<Option<Lease>> = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        let got = if dhcp { lease(vm) } else { None };
        match &got {
            Some(l) => println!(
                "TM-LEASE nic={i} mac={} ip={}/{} router={} dns={} server={}",
                mac_str(&vm.mac),
                l.ip,
                l.prefix_len,
                opt_ip(l.router),
                list(&l.dns),
                opt_ip(l.server_id)
            ),
            None if dhcp => println!("TM-LEASE-FAIL nic={i} mac={}", mac_str(&vm.mac)),
            None => println!("TM-NIC nic={i} mac={}", mac_str(&vm.mac)),
        }
        if let Some((l, router)) = got.as_ref().zip(got.as_ref().and_then(|l| l.router)) {
            if ping {
                let reached = vm
                    .arp(vm.mac, l.ip, router)
                    .is_some_and(|router_mac| vm.ping(router_mac, l.ip, router));
                let verdict = if reached { "ok" } else { "fail" };
                println!("TM-PING nic={i} router={router} {verdict}");
            }
        }
        leases.push(got);
    }
    // A running guest, until stdin ends (SIGTERM's default action ends it too).
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() != "renew" {
            continue;
        }
        for (i, (vm, l)) in vms.iter().zip(&mut leases).enumerate() {
            // Three tries, as a client retransmits (each waits 5 s for the ACK).
            let renewed = l
                .as_ref()
                .and_then(|old| (0..3).find_map(|_| vm.renew(old)));
            match &renewed {
                Some(n) => println!("TM-RENEW nic={i} ip={}/{}", n.ip, n.prefix_len),
                None => println!("TM-RENEW-FAIL nic={i}"),
            }
            if renewed.is_some() {
                *l = renewed;
            }
        }
    }
}
