//! Kernel tier (root): a crash at every step. For each kind (bridge, also with a TAP by name
//! as Firecracker gets it, routed, isolated, masquerade, CNI, macvtap) and each crash point of attach
//! and teardown on its path (tapmanager's `failpoint::POINTS`, armed through
//! `TAPMANAGER_CRASH_AT` in a build with the `failpoints` feature), the daemon kills
//! itself there; restarted, it must leave exactly what was there before: no link, namespace,
//! nft element, journal entry, CNI cache entry or host-local allocation of the crashed guest,
//! while a live guest of the same kind keeps its network and renews its lease. The bridge
//! and isolated networks are dual stack (issue 14): their live guests renew both leases; the
//! masquerade one stays IPv4-only, so both paths crash.
//! The matrix's size and outcome are printed (`crash matrix: ...`).

use protocol::{AttachRequest, NetworkRequest};
use std::process::{Child, Command, Stdio};
use tapmanager_tests::cnidir::{dual_stack_list, CniDir};
use tapmanager_tests::fakevm::FakeVm;
use tapmanager_tests::sandbox::{bin, default_networks, Sandbox, UPLINK};

use tapmanager_tests::ids::crash::GROUP;
/// The test LAN's host, and the address a macvtap guest uses on it.
const LAN_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 77, 2);
const MV_GUEST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 77, 50);

/// Everything a guest can leave behind, as seen from outside the daemon.
fn snapshot(sb: &Sandbox, d: &CniDir) -> String {
    let listing = |p: std::path::PathBuf| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.join(",")
    };
    let (_, rules) = sb.ns.exec(&["nft", "list", "ruleset"]);
    let rules: String = rules
        .lines()
        .map(|l| l.split("counter packets").next().unwrap_or("").to_owned() + "\n")
        .collect();
    let links: String = sb
        .ns
        .ip(&["-o", "link", "show"])
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned() + "\n")
        .collect();
    // Routes and permanent neighbours: a routed guest's /32 and its MAC (learned entries come
    // and go by themselves, and are left out).
    // (`linkdown` says whether a bridge has a port up at the moment: not the guest's.)
    let routes = sb
        .ns
        .ip(&["-4", "route", "show", "table", "all"])
        .replace(" linkdown", "");
    let neighbours = sb.ns.ip(&["neigh", "show", "nud", "permanent"]);
    format!(
        "state dir: {}\njournal: {:?}\nnetns: {}\ncni cache: {}\nhost-local: {:?}\nlinks:\n{links}\
         routes:\n{routes}neighbours:\n{neighbours}rules:\n{rules}",
        listing(sb.dir.join("state")),
        sb.journal_entries(),
        listing(sb.dir.join("state/netns")),
        listing(sb.dir.join("state/cni")),
        d.allocated("tmcrash"),
    )
}

/// A vmwrapper (root) holding one NIC on `net` until its stdin closes. `by_name`: as for
/// Firecracker (a persistent TAP, no fd; vmwrapper runs in the daemon's namespace, where it
/// must see the TAP, and the stand-in gets a config file).
fn caller(sb: &Sandbox, vm: &str, net: &str, by_name: bool) -> Child {
    let mut c = if by_name {
        let config = sb.dir.join("firecracker.json");
        std::fs::write(&config, "{}").unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &sb.ns.name]).arg(bin("vmwrapper"));
        c.arg("--socket")
            .arg(&sb.socket)
            .args([
                "--id",
                vm,
                "--net",
                net,
                "--hypervisor",
                "firecracker",
                "--",
            ])
            .args(["sh", "-c", "read x || true", "sh", "--config-file"])
            .arg(config);
        c
    } else {
        let mut c = Command::new(bin("vmwrapper"));
        c.arg("--socket")
            .arg(&sb.socket)
            .args(["--id", vm, "--net", net, "--hypervisor", "qemu", "--"])
            .args(["sh", "-c", "read x || true"]);
        c
    };
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The points on `kind`'s path: the common ones and its own.
fn points_of(kind: &str) -> Vec<&'static str> {
    tapmanager::failpoint::POINTS
        .iter()
        .copied()
        .filter(|p| {
            let parts: Vec<&str> = p.split(':').collect();
            parts.len() == 2 || parts[1] == kind
        })
        .collect()
}

#[test]
fn a_crash_at_every_step_leaves_nothing_and_live_guests_keep_their_lease() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("crash");
    d.write(
        "tmcrash",
        dual_stack_list(&d, "tmcrash", "tmcnicrash", "10.60.0.0/16", "fd60::/64"),
    );
    let networks = format!(
        "{}\n[networks.iso]\nkind = \"isolated\"\nrange = \"10.200.0.0/16\"\nuplink = \"{UPLINK}\"\n\
         range6 = \"fd99::/32\"\n\
         [networks.nat]\nkind = \"masquerade\"\nuplink = \"{UPLINK}\"\ntransit = \"10.201.0.0/16\"\n\
         [networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n\
         [networks.fleet]\nkind = \"routed\"\ndevice = \"tmrt0\"\ngateway = \"10.90.0.1/16\"\n{}",
        default_networks().replace("mtu = 1400", "mtu = 1400\ngateway6 = \"fd88::1/64\""),
        d.network("pod", "tmcrash", "")
    );
    let (mut sb, _lan) = Sandbox::with_lan("crash", GROUP, &networks);
    let mut cases = 0;
    let mut per_kind = Vec::new();
    for (kind, net, by_name) in [
        ("bridge", "default", false),
        ("bridge", "default", true),
        ("routed", "fleet", false),
        ("isolated", "iso", false),
        ("isolated", "nat", false),
        ("cni", "pod", false),
        ("macvtap", "mv", false),
    ] {
        // A live guest of this kind, there before and after every crash.
        let (a, fds) = sb
            .client()
            .attach(AttachRequest {
                vm: format!("live-{kind}").parse().unwrap(),
                networks: vec![NetworkRequest::new(net.parse().unwrap())],
            })
            .unwrap();
        let live = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
        // A macvtap guest's lease is the LAN's business: it must still reach the LAN instead.
        let dual = net == "default" || net == "iso" || net == "pod";
        let alive = |live: &FakeVm| match kind {
            "macvtap" => live.arp(live.mac, MV_GUEST, LAN_HOST).map(|_| MV_GUEST),
            // A dual-stack guest must renew both.
            _ if dual && live.dhcpv6(true).is_none() => None,
            // A routed guest's lease comes through a packet socket: it must also still get
            // through its TAP's stack and rules to its gateway.
            "routed" => live
                .dhcp()
                .filter(|l| {
                    let gw = l.router.expect("a routed lease names its gateway");
                    live.arp(live.mac, l.ip, gw)
                        .is_some_and(|mac| live.ping(mac, l.ip, gw))
                })
                .map(|l| l.ip),
            _ => live.dhcp().map(|l| l.ip),
        };
        let lease = alive(&live).expect("the live guest's network");
        let before = snapshot(&sb, &d);
        for (i, point) in points_of(kind).into_iter().enumerate() {
            sb.kill();
            sb.crash_at = Some(point.to_owned());
            sb.start();
            let vm = format!("crash-{kind}-{i}");
            let mut c = caller(&sb, &vm, net, by_name);
            if point.starts_with("teardown:") {
                assert!(
                    sb.wait_for(10, || sb.journal_entries().len() == 2),
                    "{kind} {point}: the guest never attached"
                );
                drop(c.stdin.take()); // the guest exits: teardown begins, and dies at the point
            }
            assert!(
                sb.died_within(10),
                "{kind} {point}: the daemon did not die there"
            );
            drop(c.stdin.take());
            let _ = c.wait();
            sb.crash_at = None;
            sb.start();
            let left = sb.wait_for(20, || snapshot(&sb, &d) == before);
            assert!(
                left,
                "{kind} {point}: left behind:\n--- before\n{before}\n--- after\n{}",
                snapshot(&sb, &d)
            );
            let renewed = alive(&live);
            assert_eq!(
                renewed,
                Some(lease),
                "{kind} {point}: the live guest lost its network"
            );
            cases += 1;
        }
        drop(live);
        sb.client()
            .release(&format!("live-{kind}").parse().unwrap())
            .unwrap();
        assert!(sb.wait_for(20, || sb.journal_entries().is_empty()));
        let by = if by_name { ", TAP by name" } else { "" };
        per_kind.push(format!("{net} ({kind}{by}) {}", points_of(kind).len()));
    }
    eprintln!(
        "crash matrix: {cases} cases ({}); every one left nothing and kept the live guest's network",
        per_kind.join(", ")
    );
}

#[test]
fn a_crash_at_every_step_of_a_take_over_gives_the_pod_its_interface_back() {
    tapmanager_tests::require_root!();
    use std::os::fd::AsFd;
    use tapmanager_tests::cnidir::{pod_cni_with, pod_state, pod_state6};
    use tapmanager_tests::sandbox::Netns;
    let d = CniDir::new("crashpod");
    let mut sb = Sandbox::new("crashpod", GROUP, "[networks.pods]\nkind = \"pod\"\n");
    // A live pod whose interface a guest holds throughout.
    let live_pod = Netns::new("livepod");
    pod_cni_with(&sb, &d, &live_pod, "ADD", true);
    let ns = std::fs::File::open(format!("/run/netns/{}", live_pod.name)).unwrap();
    let mut nic = NetworkRequest::new("pods".parse().unwrap());
    nic.take_over = Some("eth0".parse().unwrap());
    let (a, fds) = sb
        .client()
        .attach_pod(
            AttachRequest {
                vm: "live-pod".parse().unwrap(),
                networks: vec![nic],
            },
            ns.as_fd(),
        )
        .unwrap();
    let live = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    let lease = live.dhcp().expect("the live guest's lease").ip;
    let lease6 = live
        .dhcpv6(true)
        .expect("the live guest's IPv6 lease")
        .address;
    // The pod a crashing take-over works on.
    let pod = Netns::new("crashpod");
    pod_cni_with(&sb, &d, &pod, "ADD", true);
    // Both families given back (an address given back is tentative until its duplicate
    // address detection is over: the wait below covers it).
    let state = |sb: &Sandbox| {
        format!(
            "{}\npod:\n{}{}",
            snapshot(sb, &d),
            pod_state(&pod),
            pod_state6(&pod)
        )
    };
    assert!(
        sb.wait_for(10, || !state(&sb).contains("tentative")),
        "the pod's addresses stay tentative"
    );
    let before = state(&sb);
    let points = points_of("pod");
    for (i, point) in points.iter().enumerate() {
        sb.kill();
        sb.crash_at = Some(point.to_string());
        sb.start();
        let mut c = Command::new(bin("vmwrapper"))
            .arg("--socket")
            .arg(&sb.socket)
            .arg("--netns")
            .arg(format!("/run/netns/{}", pod.name))
            .args(["--id", &format!("crash-pod-{i}"), "--net", "pods,take=eth0"])
            .args(["--hypervisor", "qemu", "--", "sh", "-c", "read x || true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if point.starts_with("teardown:") {
            assert!(
                sb.wait_for(10, || sb.journal_entries().len() == 2),
                "pod {point}: the guest never attached"
            );
            drop(c.stdin.take());
        }
        assert!(
            sb.died_within(10),
            "pod {point}: the daemon did not die there"
        );
        drop(c.stdin.take());
        let _ = c.wait();
        sb.crash_at = None;
        sb.start();
        assert!(
            sb.wait_for(20, || state(&sb) == before),
            "pod {point}: not given back:\n--- before\n{before}\n--- after\n{}",
            state(&sb)
        );
        assert_eq!(
            live.dhcp().map(|l| l.ip),
            Some(lease),
            "pod {point}: the live guest lost its lease"
        );
        assert_eq!(
            live.dhcpv6(true).map(|l| l.address),
            Some(lease6),
            "pod {point}: the live guest lost its IPv6 lease"
        );
    }
    eprintln!(
        "crash matrix: pods ({} points); every crash gave the pod its interface back and kept the \
         live guest's lease",
        points.len()
    );
    drop(live);
    sb.client().release(&"live-pod".parse().unwrap()).unwrap();
    assert!(sb.wait_for(20, || sb.journal_entries().is_empty()));
    pod_cni_with(&sb, &d, &pod, "DEL", true);
    pod_cni_with(&sb, &d, &live_pod, "DEL", true);
}

#[test]
fn a_dead_callers_tap_that_lives_on_keeps_its_guards_until_its_teardown() {
    tapmanager_tests::require_root!();
    let mut sb = Sandbox::with_defaults("reapguard", GROUP);
    // A TAP by name is persistent: it outlives its caller, as a TAP whose fd another process
    // holds does, and carries frames until the daemon deletes it.
    let mut c = caller(&sb, "fcdead", "default", true);
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 1));
    let tap = sb.taps().pop().expect("the caller's TAP");
    sb.kill();
    drop(c.stdin.take());
    c.wait().unwrap();
    assert!(
        sb.ns.link_exists(&tap),
        "the persistent TAP outlived its caller"
    );
    // Restarted, the daemon reaps the dead caller: stopped right after the rules are rebuilt
    // and before that teardown, the TAP still there is still guarded.
    sb.crash_at = Some("start:reconcile:rebuilt".to_owned());
    sb.spawn();
    assert!(
        sb.died_within(20),
        "the daemon did not reach the crash point"
    );
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    assert!(
        rules.contains(&format!("device \"{tap}\"")),
        "{tap} unguarded between the rebuild and its teardown: {rules}"
    );
    // Started for good, it deletes the TAP and then its guards.
    sb.crash_at = None;
    sb.start();
    assert!(sb.all_gone(10), "{:?}", sb.taps());
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    assert!(!rules.contains(&tap), "{rules}");
}

#[test]
fn a_release_answered_before_a_crash_is_finished_not_undone() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("relcrash");
    d.write(
        "tmrel",
        dual_stack_list(&d, "tmrel", "tmcnirel", "10.61.0.0/16", "fd61::/64"),
    );
    let networks = format!("{}\n{}", default_networks(), d.network("pod", "tmrel", ""));
    let mut sb = Sandbox::new("relcrash", GROUP, &networks);
    for net in ["default", "pod"] {
        let vm: protocol::VmId = format!("rel-{net}").parse().unwrap();
        let attach = |sb: &Sandbox| {
            let (_, fds) = sb
                .client()
                .attach(AttachRequest {
                    vm: vm.clone(),
                    networks: vec![NetworkRequest::new(net.parse().unwrap())],
                })
                .unwrap();
            drop(fds);
            sb.client().release(&vm).unwrap();
        };
        // Once without a crash, so what stays (the CNI plugin's bridge) is in `before`.
        attach(&sb);
        assert!(sb.wait_for(20, || sb.journal_entries().is_empty()));
        let before = snapshot(&sb, &d);
        // The caller (this test) stays alive throughout: only its Release ends the guest.
        sb.kill();
        sb.crash_at = Some("teardown:begin".to_owned());
        sb.start();
        attach(&sb);
        assert!(
            sb.died_within(10),
            "{net}: the daemon did not die in the teardown"
        );
        sb.crash_at = None;
        sb.start();
        assert!(
            sb.wait_for(20, || snapshot(&sb, &d) == before),
            "{net}: the released guest came back:\n--- before\n{before}\n--- after\n{}",
            snapshot(&sb, &d)
        );
        let listed = sb.client().list().unwrap();
        assert!(listed.is_empty(), "{net}: still listed: {listed:?}");
    }
}
