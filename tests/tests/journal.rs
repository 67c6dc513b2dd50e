//! Kernel tier (root): the journal across releases and restarts. A daemon started on the
//! previous release's journal keeps its live guests (the entry migrated to the current form);
//! a restart puts back what was removed by hand from a guest of every kind while the daemon
//! was down (bridge, isolated in each binding, masquerade, CNI and pod in both joins), with the
//! same steps that built it, and adds nothing twice.

use protocol::{AttachRequest, NetworkRequest};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use tapmanager_tests::cnidir::{bridge_list, pod_cni, CniDir};
use tapmanager_tests::fakevm::{FakeVm, Lease};
use tapmanager_tests::ids::journal::GROUP;
use tapmanager_tests::sandbox::{default_networks, run, Netns, Sandbox, UPLINK};

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// The default bridge network, and one isolated network per binding and a masquerade one,
/// all routed out of the sandbox's LAN.
fn networks() -> String {
    let iso = |name: &str, range: &str, binding: &str| {
        format!(
            "[networks.{name}]\nkind = \"isolated\"\nrange = \"{range}\"\nuplink = \"{UPLINK}\"\nbinding = \"{binding}\"\n"
        )
    };
    format!(
        "{}{}{}{}[networks.nat]\nkind = \"masquerade\"\nuplink = \"{UPLINK}\"\n",
        default_networks(),
        iso("routed", "169.254.100.0/24", "routed"),
        iso("joined", "169.254.101.0/24", "bridge"),
        iso("redirect", "169.254.102.0/24", "tc-redirect"),
    )
}

/// Attaches `vm` on `nets`, one fake guest per NIC.
fn attach(sb: &Sandbox, vm: &str, nets: &[&str]) -> (protocol::Attachment, Vec<FakeVm>) {
    let (a, fds) = sb
        .client()
        .attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: nets
                .iter()
                .map(|n| NetworkRequest::new(n.parse().unwrap()))
                .collect(),
        })
        .expect("attach");
    let guests = a
        .interfaces
        .iter()
        .zip(fds)
        .map(|(i, fd): (_, OwnedFd)| FakeVm::new(fd, i.mac.0))
        .collect();
    (a, guests)
}

/// Whether a guest with lease `l` reaches `dst` through its gateway.
fn reaches(g: &FakeVm, l: &Lease, dst: Ipv4Addr) -> bool {
    let Some(gw) = g.arp(g.mac, l.ip, l.router.unwrap()) else {
        return false;
    };
    g.ping(gw, l.ip, dst)
}

/// What each guest should reach: the LAN host, or for the bridge network its gateway.
fn target(net: &str, l: &Lease) -> Ipv4Addr {
    match net {
        "default" => l.router.unwrap(),
        _ => LAN_HOST,
    }
}

fn journal_path(sb: &Sandbox) -> std::path::PathBuf {
    let entries = sb.journal_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    sb.dir.join("state/attachments").join(&entries[0])
}

/// An entry of the current form as the previous release wrote it: the NICs' interfaces, and
/// beside them the side tables (transit addresses, bindings, taken interfaces) by name.
fn to_previous_release(current: &serde_json::Value) -> serde_json::Value {
    let mut old = current.clone();
    let nics = old["nics"].as_array().unwrap().clone();
    let obj = old.as_object_mut().unwrap();
    obj.remove("nics");
    let (mut transit, mut bindings, mut taken) = (Vec::new(), Vec::new(), Vec::new());
    for nic in &nics {
        let name = nic["iface"]["ifname"].clone();
        let built = &nic["built"];
        match built["kind"].as_str().unwrap() {
            "isolated" => bindings.push(serde_json::json!([name, built["binding"]])),
            "masquerade" => {
                bindings.push(serde_json::json!([name, built["binding"]]));
                transit.push(serde_json::json!([name, built["transit"]]));
            }
            "pod" => taken.push(
                serde_json::json!({"ifname": name, "netns": built["netns"], "name": built["taken"]}),
            ),
            _ => {}
        }
    }
    // `ipv6` is newer than that release (issue 14): it never wrote it.
    let iface = |n: &serde_json::Value| {
        let mut i = n["iface"].clone();
        i.as_object_mut().unwrap().remove("ipv6");
        i
    };
    obj.insert("interfaces".into(), nics.iter().map(iface).collect());
    for (key, table) in [
        ("transit", transit),
        ("bindings", bindings),
        ("taken", taken),
    ] {
        if !table.is_empty() {
            obj.insert(key.into(), table.into());
        }
    }
    old
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn a_journal_of_the_previous_release_is_migrated_and_its_live_guests_are_kept() {
    tapmanager_tests::require_root!();
    let (mut sb, _lan) = Sandbox::with_lan("jmig", GROUP, &networks());
    let nets = ["default", "redirect", "nat"];
    let (a, guests) = attach(&sb, "old", &nets);
    let before: Vec<_> = guests.iter().map(|g| g.dhcp().expect("lease")).collect();
    let redirect_pin = sb
        .dir
        .join("state/netns")
        .join(a.interfaces[1].ifname.to_string());
    let filters = || {
        ["veth0", "tap0"].map(|dev| {
            in_pin(
                &redirect_pin,
                &["tc", "filter", "show", "dev", dev, "ingress"],
            )
            .lines()
            .filter(|l| l.contains("mirred"))
            .count()
        })
    };
    let filters_before = filters();
    assert_eq!(filters_before, [1, 2], "the tc-redirect join's filters");
    sb.kill();

    let path = journal_path(&sb);
    let current: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let old = to_previous_release(&current);
    // The shape the previous release's daemon wrote (captured from it, in the crate's
    // testdata): the same keys, at the top and per interface.
    let captured: serde_json::Value = serde_json::from_str(include_str!(
        "../../tapmanager/src/testdata/journal-v1.json"
    ))
    .unwrap();
    let mut want = keys(&captured);
    want.retain(|k| k != "taken"); // this one had no pod NIC
    assert_eq!(keys(&old), want);
    assert_eq!(
        keys(&old["interfaces"][0]),
        keys(&captured["interfaces"][0])
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();

    sb.start();
    assert_eq!(
        sb.client().list().unwrap().len(),
        1,
        "the guest was not adopted"
    );
    let migrated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        migrated["nics"], current["nics"],
        "not written back in the current form, or migration changed what was built"
    );
    // With the previous release's view beside it, the same as that release wrote: a daemon
    // downgraded to it still reads the entry.
    // (Beside `ipv6`, newer than that release: its reader ignores keys it does not know.)
    let mut view = migrated.clone();
    for i in view["interfaces"].as_array_mut().unwrap() {
        i.as_object_mut().unwrap().remove("ipv6");
    }
    for key in ["interfaces", "transit", "bindings"] {
        assert_eq!(view[key], old[key], "{key}");
    }
    for ((g, lease), net) in guests.iter().zip(&before).zip(nets) {
        let after = g.dhcp().expect("lease after the restart");
        assert_eq!(after.ip, lease.ip, "{net}");
        assert!(
            reaches(g, &after, target(net, &after)),
            "{net}: lost its network"
        );
    }

    // Its teardown goes by the migrated state: everything goes.
    sb.client().release(&a.vm).unwrap();
    assert!(sb.all_gone(20), "left behind: {:?}", sb.taps());
    assert_eq!(pins(&sb), Vec::<String>::new());
}

fn pins(sb: &Sandbox) -> Vec<String> {
    std::fs::read_dir(sb.dir.join("state/netns"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `args` inside the namespace pinned at `pin`.
fn in_pin(pin: &Path, args: &[&str]) -> String {
    run(Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(args))
}

#[test]
fn a_restart_puts_back_what_was_removed_by_hand_for_every_kind() {
    tapmanager_tests::require_root!();
    let (mut sb, _lan) = Sandbox::with_lan("jconv", GROUP, &networks());
    let nets = ["default", "routed", "joined", "redirect", "nat"];
    let (a, guests) = attach(&sb, "conv", &nets);
    let leases: Vec<Lease> = guests.iter().map(|g| g.dhcp().expect("lease")).collect();
    for ((g, l), net) in guests.iter().zip(&leases).zip(nets) {
        assert!(
            reaches(g, l, target(net, l)),
            "{net}: unreachable before anything was removed"
        );
    }
    sb.kill();

    let name = |i: usize| a.interfaces[i].ifname.to_string();
    let pin = |i: usize| sb.dir.join("state/netns").join(name(i));
    // Bridge: the TAP off its bridge (down, it would refuse the fake guest's writes).
    sb.ns.ip(&["link", "set", &name(0), "nomaster"]);
    // Routed: the host's route to the guest's /30, and the namespace's default route.
    let route = sb.ns.ip(&["-o", "route", "show", "dev", &name(1)]);
    let dst = route
        .split_whitespace()
        .next()
        .expect("a route to the guest");
    sb.ns.ip(&["route", "del", dst, "dev", &name(1)]);
    in_pin(&pin(1), &["ip", "route", "del", "default"]);
    // Bridge binding: the TAP off the namespace's bridge.
    in_pin(&pin(2), &["ip", "link", "set", "tap0", "nomaster"]);
    // tc-redirect binding: the redirects gone.
    in_pin(&pin(3), &["tc", "qdisc", "del", "dev", "veth0", "ingress"]);
    in_pin(&pin(3), &["tc", "qdisc", "del", "dev", "tap0", "ingress"]);
    // Masquerade: the namespace's NAT gone.
    in_pin(
        &pin(4),
        &["nft", "delete", "table", "ip", "tapmanager_guest"],
    );
    // Each removal cut its guest off (the kernel forwards with the daemon down).
    for ((g, l), net) in guests.iter().zip(&leases).zip(nets) {
        assert!(
            !reaches(g, l, target(net, l)),
            "{net}: still reachable with its setup removed"
        );
    }

    sb.start();
    assert_eq!(
        sb.client().list().unwrap().len(),
        1,
        "the guest was not adopted"
    );
    for ((g, l), net) in guests.iter().zip(&leases).zip(nets) {
        assert_eq!(g.dhcp().expect("lease after the restart").ip, l.ip, "{net}");
        assert!(
            reaches(g, l, target(net, l)),
            "{net}: not put back by the restart"
        );
    }
    sb.client().release(&a.vm).unwrap();
    assert!(sb.all_gone(20), "left behind: {:?}", sb.taps());
    assert_eq!(pins(&sb), Vec::<String>::new());
}

#[test]
fn a_restart_rejoins_cni_and_pod_guests_whose_join_was_removed_by_hand() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("jconv");
    d.write(
        "tmjred",
        bridge_list(&d, "tmjred", "1.0.0", "tmjcni0", "10.96.7.0/24", &[]),
    );
    d.write(
        "tmjbr",
        bridge_list(&d, "tmjbr", "1.0.0", "tmjcni1", "10.96.8.0/24", &[]),
    );
    let networks = d.network("redirect", "tmjred", "")
        + &d.network("bridged", "tmjbr", "binding = \"bridge\"")
        + "[networks.pods]\nkind = \"pod\"\n";
    let mut sb = Sandbox::new("jcni", GROUP, &networks);
    let (a, mut guests) = attach(&sb, "plugins", &["redirect", "bridged"]);
    // A pod whose eth0 the CNI bridge plugin made, taken over by a shim's guest.
    let pod = Netns::new("jpod");
    pod_cni(&sb, &d, &pod, "ADD");
    let netns = std::fs::File::open(format!("/run/netns/{}", pod.name)).unwrap();
    let mut take = NetworkRequest::new("pods".parse().unwrap());
    take.take_over = Some("eth0".parse().unwrap());
    let (p, fds) = sb
        .client()
        .attach_pod(
            AttachRequest {
                vm: "shim".parse().unwrap(),
                networks: vec![take],
            },
            std::os::fd::AsFd::as_fd(&netns),
        )
        .expect("attach_pod");
    guests.push(FakeVm::new(
        fds.into_iter().next().unwrap(),
        p.interfaces[0].mac.0,
    ));
    let leases: Vec<Lease> = guests.iter().map(|g| g.dhcp().expect("lease")).collect();
    let names = ["cni tc-redirect", "cni bridge", "pod tc-redirect"];
    for ((g, l), what) in guests.iter().zip(&leases).zip(names) {
        assert!(
            reaches(g, l, l.router.unwrap()),
            "{what}: no gateway before anything was removed"
        );
    }
    sb.kill();

    // The CNI NICs share the first one's namespace: eth0/tap0 and eth1/tap1 (bridge br1).
    let cni_ns = sb
        .dir
        .join("state/netns")
        .join(a.interfaces[0].ifname.to_string());
    in_pin(&cni_ns, &["tc", "qdisc", "del", "dev", "eth0", "ingress"]);
    in_pin(&cni_ns, &["tc", "qdisc", "del", "dev", "tap0", "ingress"]);
    in_pin(&cni_ns, &["ip", "link", "set", "tap1", "nomaster"]);
    // The pod's join: its eth0's and the guest's TAP's redirects.
    let tap = p.interfaces[0].ifname.to_string();
    run(Command::new("tc").args(["-n", &pod.name, "qdisc", "del", "dev", "eth0", "ingress"]));
    run(Command::new("tc").args(["-n", &pod.name, "qdisc", "del", "dev", &tap, "ingress"]));
    for ((g, l), what) in guests.iter().zip(&leases).zip(names) {
        assert!(
            !reaches(g, l, l.router.unwrap()),
            "{what}: still reachable with its join removed"
        );
    }

    sb.start();
    assert_eq!(sb.client().list().unwrap().len(), 2, "not both adopted");
    for ((g, l), what) in guests.iter().zip(&leases).zip(names) {
        assert_eq!(
            g.dhcp().expect("lease after the restart").ip,
            l.ip,
            "{what}"
        );
        assert!(
            reaches(g, l, l.router.unwrap()),
            "{what}: not rejoined by the restart"
        );
    }
    // Rejoined, not joined twice: one redirect filter set per interface.
    let filters = |ns: &Path, dev: &str| {
        in_pin(ns, &["tc", "filter", "show", "dev", dev, "ingress"])
            .lines()
            .filter(|l| l.contains("mirred"))
            .count()
    };
    assert_eq!((filters(&cni_ns, "eth0"), filters(&cni_ns, "tap0")), (1, 2));
    sb.client().release(&a.vm).unwrap();
    sb.client().release(&p.vm).unwrap();
    assert!(sb.all_gone(20), "left behind: {:?}", sb.taps());
    assert_eq!(pins(&sb), Vec::<String>::new());
    pod_cni(&sb, &d, &pod, "DEL");
}
