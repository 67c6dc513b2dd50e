//! Kernel tier (root): what the daemon keeps of root's power. Every thread's effective,
//! permitted and bounding capability sets, read from `/proc`, must hold exactly what the
//! configured kinds use, and nothing else.

use tapmanager_tests::sandbox::{is_root, Sandbox, UPLINK};

const GROUP: u32 = 47_071;
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
    if !is_root("every_thread_keeps_exactly_what_the_configured_kinds_use") {
        return;
    }
    // Bridges: links, nftables, packet sockets.
    let sb = Sandbox::with_defaults("capsbr", GROUP);
    assert_exactly(&sb, "bridge", NET_ADMIN | NET_RAW);
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
