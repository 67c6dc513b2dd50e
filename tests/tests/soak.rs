//! Kernel tier (root): a soak. 1000 attach/release cycles from 8 concurrent clients across
//! the kinds (all dual stack: bridge, isolated with tc-redirect, masquerade, CNI); afterwards the kernel
//! objects (links, pinned namespaces, the nftables ruleset), the daemon's open fds and its
//! memory are back where they started. Figures printed (`soak: ...`).

use protocol::{AttachRequest, Client, NetworkRequest};
use std::time::Instant;
use tapmanager_tests::cnidir::{dual_stack_list, CniDir};
use tapmanager_tests::sandbox::{default_networks, Sandbox, UPLINK};

use tapmanager_tests::ids::soak::GROUP;
const CLIENTS: usize = 8;
const CYCLES: usize = 1000;
const NETS: [&str; 4] = ["default", "iso", "nat", "pod"];

/// What must come back: the sandbox's links, the pins, the ruleset, the daemon's fds.
fn snapshot(sb: &Sandbox) -> (String, usize, String, usize) {
    let links = sb.ns.ip(&["-o", "link", "show"]);
    let links: String = links
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned() + "\n")
        .collect();
    let pins = std::fs::read_dir(sb.dir.join("state/netns"))
        .map(|r| r.count())
        .unwrap_or(0);
    let (_, rules) = sb.ns.exec(&["nft", "list", "ruleset"]);
    // Counters move with traffic; the rules and set elements must not.
    let rules: String = rules
        .lines()
        .map(|l| match l.find("counter packets") {
            Some(i) => l[..i].to_owned() + "\n",
            None => l.to_owned() + "\n",
        })
        .collect();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", sb.daemon_pid()))
        .unwrap()
        .count();
    (links, pins, rules, fds)
}

fn rss_kib(sb: &Sandbox) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.daemon_pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cycle(c: &mut Client, vm: &str, net: &str) {
    let vm: protocol::VmId = vm.parse().unwrap();
    let (_, fds) = c
        .attach(AttachRequest {
            vm: vm.clone(),
            networks: vec![NetworkRequest::new(net.parse().unwrap())],
        })
        .unwrap_or_else(|e| panic!("attach {vm} on {net}: {e}"));
    c.release(&vm).unwrap();
    drop(fds);
}

#[test]
fn a_thousand_cycles_from_eight_clients_leave_nothing_behind() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("soak");
    d.write(
        "tmsoak",
        dual_stack_list(&d, "tmsoak", "tmcnisoak", "10.70.0.0/16", "fd70::/64"),
    );
    let networks = format!(
        "{}\n[networks.iso]\nkind = \"isolated\"\nbinding = \"tc-redirect\"\nrange = \"10.200.0.0/16\"\nuplink = \"{UPLINK}\"\n\
         range6 = \"fd99::/32\"\n[networks.nat]\nkind = \"masquerade\"\nuplink = \"{UPLINK}\"\ntransit = \"10.201.0.0/16\"\n\
         transit6 = \"fd97::/48\"\n{}",
        default_networks().replace("mtu = 1400", "mtu = 1400\ngateway6 = \"fd88::1/64\""),
        d.network("pod", "tmsoak", "")
    );
    let (sb, _lan) = Sandbox::with_lan("soak", GROUP, &networks);
    // Warm-up: whatever is made once (a bridge, a table, a plugin's bridge) exists before
    // the baseline.
    let mut c = sb.client();
    for net in NETS {
        cycle(&mut c, &format!("warm-{net}"), net);
    }
    assert!(sb.all_gone(20));
    let before = snapshot(&sb);
    let rss_before = rss_kib(&sb);

    let t = Instant::now();
    let socket = sb.socket.clone();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).unwrap();
                for i in 0..CYCLES / CLIENTS {
                    cycle(&mut c, &format!("soak-{k}-{i}"), NETS[(k + i) % NETS.len()]);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("a soak client failed");
    }
    let ran = t.elapsed();
    assert!(
        sb.wait_for(60, || sb.journal_entries().is_empty()),
        "teardowns did not finish"
    );
    assert!(
        sb.wait_for(20, || snapshot(&sb) == before),
        "not back to the baseline"
    );
    let after = snapshot(&sb);
    let rss_after = rss_kib(&sb);
    eprintln!(
        "soak: {CYCLES} cycles from {CLIENTS} clients over {NETS:?} in {ran:?}; daemon fds {} -> {}; \
         RSS {rss_before} -> {rss_after} KiB; links, pins and ruleset as before: {}",
        before.3,
        after.3,
        after == before
    );
    assert!(
        d.allocated("tmsoak").is_empty(),
        "host-local addresses leaked"
    );
    // Memory: the allocator may keep some; a leak per cycle would show as megabytes.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}
