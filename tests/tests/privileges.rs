//! Kernel tier (root): what the daemon keeps of root's power. Every thread's effective,
//! permitted and bounding capability sets, read from `/proc`, must hold exactly what the
//! configured kinds use, and nothing else.

use tapmanager_tests::sandbox::{Sandbox, UPLINK};

use tapmanager_tests::ids::privileges::GROUP;
const NET_BIND_SERVICE: u64 = 1 << 10;
const NET_ADMIN: u64 = 1 << 12;
const NET_RAW: u64 = 1 << 13;
const SYS_ADMIN: u64 = 1 << 21;
const MKNOD: u64 = 1 << 27;

/// Each thread's (CapEff, CapPrm, CapBnd, CapInh) of the daemon.
fn thread_caps(sb: &Sandbox) -> Vec<(String, [u64; 4])> {
    let tasks = format!("/proc/{}/task", sb.daemon_pid());
    let mut out = Vec::new();
    for t in std::fs::read_dir(tasks).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        let get = |set: &str| {
            let line = status.lines().find(|l| l.starts_with(set)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let name = status.lines().next().unwrap_or("").to_owned();
        out.push((
            name,
            [get("CapEff"), get("CapPrm"), get("CapBnd"), get("CapInh")],
        ));
    }
    assert!(!out.is_empty());
    out
}

fn assert_exactly(sb: &Sandbox, what: &str, want: u64) {
    for (thread, sets) in thread_caps(sb) {
        for (set, got) in ["effective", "permitted", "bounding", "inheritable"]
            .iter()
            .zip(sets)
        {
            assert_eq!(
                got, want,
                "{what}: thread {thread}: {set} set {got:#x}, expected {want:#x}"
            );
        }
    }
}

#[test]
fn every_thread_keeps_exactly_what_the_configured_kinds_use() {
    tapmanager_tests::require_root!();
    // Bridges: links, nftables, packet sockets.
    let sb = Sandbox::with_defaults("capsbr", GROUP);
    assert_exactly(&sb, "bridge", NET_ADMIN | NET_RAW);
    drop(sb);
    // A bridge that forwards DNS: also port 53 on its gateway.
    let dns = "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\n\
               gateway = \"10.88.0.1/24\"\nnat = true\ndns_forward = true\n";
    let sb = Sandbox::new("capsdns", GROUP, dns);
    assert_exactly(
        &sb,
        "bridge with DNS",
        NET_ADMIN | NET_RAW | NET_BIND_SERVICE,
    );
    drop(sb);
    // Namespaces (isolated, masquerade, CNI, pod): also mount and setns.
    let pods = "[networks.pods]\nkind = \"pod\"\n";
    let sb = Sandbox::new("capspod", GROUP, pods);
    assert_exactly(&sb, "pod", NET_ADMIN | NET_RAW | SYS_ADMIN);
    drop(sb);
    // macvtap: its sysfs in a private mount namespace, and device nodes of its own.
    let mv = format!("[networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n");
    let (sb, _lan) = Sandbox::with_lan("capsmv", GROUP, &mv);
    assert_exactly(&sb, "macvtap", NET_ADMIN | NET_RAW | SYS_ADMIN | MKNOD);
}

/// The daemon's `nft -i` child: its pid, found by its parent and name.
fn nft_child(sb: &Sandbox) -> u32 {
    let daemon = sb.daemon_pid();
    let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
        let ppid: u32 = stat[stat.rfind(')')? + 2..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == daemon && comm == "nft").then_some(pid)
    });
    found.expect("the daemon runs nft -i")
}

#[test]
fn nft_runs_by_absolute_path_with_an_empty_environment_and_only_net_admin() {
    tapmanager_tests::require_root!();
    // A daemon that keeps CAP_SYS_ADMIN too (pod networks), started with an environment.
    let sb = Sandbox::new("capsnft", GROUP, "[networks.pods]\nkind = \"pod\"\n");
    let pid = nft_child(&sb);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |set: &str| {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(get(set), NET_ADMIN, "nft's {set}: {:#x}", get(set));
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ.is_empty(),
        "nft inherited {:?}",
        String::from_utf8_lossy(&environ)
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.is_absolute() && exe.ends_with("nft"),
        "{}",
        exe.display()
    );
}
