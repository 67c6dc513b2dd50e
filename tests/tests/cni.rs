//! Kernel tier (root): the CNI kind with Debian's real plugins (`containernetworking-plugins`
//! in /usr/lib/cni) and a fixture plugin (tests/cni/fixture-plugin) for what they cannot do.
//! Each test has its own conf dir and host-local data dir; the plugins' host side (their
//! bridge, their veths) lives in the sandbox's namespace, never the machine's.

use protocol::{AttachRequest, NetworkRequest};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use tapmanager_tests::cnidir::{bridge_list, dual_stack_list, CniDir};
use tapmanager_tests::fakevm::{Capture, FakeVm};
use tapmanager_tests::fakevm6 as v6;
use tapmanager_tests::sandbox::Sandbox;

use tapmanager_tests::ids::cni::GROUP;

fn attach(
    sb: &Sandbox,
    vm: &str,
    nets: &[&str],
) -> Result<(protocol::Attachment, Vec<std::os::fd::OwnedFd>), protocol::ClientError> {
    sb.client().attach(AttachRequest {
        vm: vm.parse().unwrap(),
        networks: nets
            .iter()
            .map(|n| NetworkRequest::new(n.parse().unwrap()))
            .collect(),
    })
}

/// The namespaces, cache entries and journal entries the daemon holds.
fn held(sb: &Sandbox) -> (usize, usize, usize) {
    let count = |p: PathBuf| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    (
        count(sb.dir.join("state/netns")),
        count(sb.dir.join("state/cni")),
        sb.journal_entries().len(),
    )
}

#[test]
fn a_guest_leases_what_host_local_allocated_and_del_frees_it() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("lease");
    d.write(
        "tmpods",
        bridge_list(&d, "tmpods", "1.0.0", "tmcni0", "10.99.0.0/24", &[]),
    );
    d.write(
        "tmsecond",
        bridge_list(&d, "tmsecond", "1.0.0", "tmcni1", "10.97.0.0/24", &[]),
    );
    let networks =
        d.network("pod", "tmpods", "") + &d.network("pod2", "tmsecond", "binding = \"bridge\"");
    let sb = Sandbox::new("cni", GROUP, &networks);
    // The plugins' bridges have MACs of their own; one of them starts with 0xfe, as one
    // random MAC in 64 does, the first byte of the daemon's TAP host sides (a guard once
    // dropped every frame to such a MAC, and with it the gateway).
    sb.ns.ip(&[
        "link",
        "add",
        "tmcni1",
        "address",
        "fe:00:00:00:00:01",
        "type",
        "bridge",
    ]);

    let (a, fds) = attach(&sb, "c1", &["pod", "pod2"]).expect("attach");
    assert_eq!(a.interfaces.len(), 2);
    let mut fds = fds.into_iter();
    let mut guests = Vec::new();
    for (i, (net, gw)) in [("tmpods", "10.99.0.1"), ("tmsecond", "10.97.0.1")]
        .into_iter()
        .enumerate()
    {
        let iface = &a.interfaces[i];
        let allocated = d.allocated(net);
        assert_eq!(allocated.len(), 1, "{net}: {allocated:?}");
        assert_eq!(iface.address.map(|(ip, _)| ip), Some(allocated[0]), "{net}");
        let vm = FakeVm::new(fds.next().unwrap(), iface.mac.0);
        let lease = vm.dhcp().expect("lease");
        // Exactly the address host-local allocated, its gateway, from the MAC the plugin gave
        // the namespace's interface.
        assert_eq!(lease.ip, allocated[0], "{net}");
        assert_eq!(lease.prefix_len, 24, "{net}");
        let gw: Ipv4Addr = gw.parse().unwrap();
        assert_eq!(lease.router, Some(gw), "{net}");
        let gw_mac = vm
            .arp(vm.mac, lease.ip, gw)
            .expect("the CNI gateway answers ARP");
        assert!(
            vm.ping(gw_mac, lease.ip, gw),
            "{net}: the CNI gateway does not answer"
        );
        guests.push(vm);
    }
    // One namespace for the guest (Multus's way), eth0 and eth1 in it; one cache entry a NIC.
    assert_eq!(held(&sb), (1, 2, 1));
    let entries: Vec<serde_json::Value> = std::fs::read_dir(sb.dir.join("state/cni"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let mut names: Vec<&str> = entries
        .iter()
        .map(|e| e["ifname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["eth0", "eth1"]);
    assert_eq!(entries[0]["netns"], entries[1]["netns"]);
    assert_eq!(entries[0]["container_id"], entries[1]["container_id"]);
    // CHECK: the bridge plugin compares its side and the namespace with the rewired result.
    sb.client()
        .check(&"c1".parse().unwrap())
        .expect("CHECK passes");
    // The guest's TAP gone (its fds closed): CHECK says so.
    drop(guests.pop());
    let e = sb.client().check(&"c1".parse().unwrap()).unwrap_err();
    assert!(e.to_string().contains("tap1 is gone"), "{e}");

    sb.client().release(&"c1".parse().unwrap()).unwrap();
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left: {:?}",
        held(&sb)
    );
    assert!(
        d.allocated("tmpods").is_empty(),
        "DEL did not free the address"
    );
    assert!(
        d.allocated("tmsecond").is_empty(),
        "DEL did not free the address"
    );
    let links = sb.ns.ip(&["-o", "link", "show", "type", "veth"]);
    assert!(
        links.trim().is_empty(),
        "the plugins' veths are left: {links}"
    );
}

#[test]
fn a_dual_stack_bridge_and_host_local_network_gives_the_guest_both_families() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("dual");
    let nets = [
        ("tmdual", "tmcni6", "10.91.0.0/24", "fd91::"),
        ("tmdualbr", "tmcni7", "10.90.0.0/24", "fd90::"),
    ];
    for (net, bridge, v4, v6) in nets {
        d.write(
            net,
            dual_stack_list(&d, net, bridge, v4, &format!("{v6}/64")),
        );
    }
    // The tc-redirect binding (the default) and the bridge binding.
    let networks =
        d.network("pod", "tmdual", "") + &d.network("pod2", "tmdualbr", "binding = \"bridge\"");
    let sb = Sandbox::new("cni6", GROUP, &networks);
    let (a, fds) = attach(&sb, "c6", &["pod", "pod2"]).expect("attach");
    for ((iface, fd), (net, bridge, _, prefix)) in a.interfaces.iter().zip(fds).zip(nets) {
        let lease = iface
            .ipv6
            .clone()
            .expect("the interface carries its IPv6 lease");
        let allocated = d.allocated6(net);
        assert_eq!(allocated.len(), 1, "{net}: {allocated:?}");
        let own = allocated[0];
        let gateway: std::net::Ipv6Addr = format!("{prefix}1").parse().unwrap();
        // The plugin's address and gateway; the router is the plugin's bridge's link-local.
        let router = sb.ns.link_local(bridge);
        assert_eq!(lease.address, (own, 64), "{net}");
        assert_eq!((lease.gateway, lease.router), (gateway, router), "{net}");

        let vm = FakeVm::new(fd, iface.mac.0);
        let v4 = vm.dhcp().expect("the IPv4 lease");
        assert_eq!(Some(v4.ip), iface.address.map(|(ip, _)| ip), "{net}");
        let ra = vm.solicit_router().expect("a router advertisement");
        assert_eq!(
            (ra.router, ra.hop_limit, ra.managed),
            (router, 255, true),
            "{net}"
        );
        assert_eq!(
            ra.prefixes,
            [(prefix.parse().unwrap(), 64, true, false)],
            "{net}: on-link, managed"
        );
        // The router is the plugin's, on its own MAC: the guest resolves it.
        assert_eq!(ra.slla, None, "{net}");
        for rapid in [true, false] {
            let l = vm.dhcpv6(rapid).expect("a DHCPv6 lease");
            assert_eq!((l.address, l.from), (own, router), "{net}: rapid {rapid}");
        }
        // The default route's next hop answers for its link-local address, and the gateway's
        // global address answers through it and on the link.
        assert!(
            vm.ping6_via(own, router, gateway),
            "{net}: no echo through the router"
        );
        assert!(
            vm.ping6(own, gateway),
            "{net}: no echo from the gateway on the link"
        );

        // What a hostile guest sends never reaches the plugin's bridge; its own traffic does.
        let cap = sb.ns.run_in(|| Capture::open(bridge));
        let mac = vm.mac;
        let spoofed: std::net::Ipv6Addr = format!("{prefix}99").parse().unwrap();
        for _ in 0..20 {
            vm.send(&v6::marked_udp6(mac, spoofed, (4000, 4001), b"TMSPOOF6"));
            vm.send(&v6::marked_udp6(mac, own, (4000, 4001), b"TMOWN6"));
            vm.send(&v6::rogue_advert(mac, "2001:db8:66::".parse().unwrap()));
            vm.send(&v6::neighbor_advert(
                mac,
                dhcp::frame6::link_local(mac),
                gateway,
            ));
            vm.send(&v6::marked_udp6(
                mac,
                dhcp::frame6::link_local(mac),
                (547, 546),
                b"TMSERV6",
            ));
        }
        let frames = cap.frames(std::time::Duration::from_millis(700));
        use tapmanager_tests::fakevm::count;
        assert_eq!(
            count(&frames, b"TMOWN6"),
            20,
            "{net}: the guest's own datagrams"
        );
        assert_eq!(
            count(&frames, b"TMSPOOF6"),
            0,
            "{net}: a spoofed source got through"
        );
        assert_eq!(
            count(&frames, b"TMSERV6"),
            0,
            "{net}: a DHCPv6 server message got through"
        );
        assert_eq!(
            v6::icmp6_from(&frames, mac, 134),
            0,
            "{net}: a rogue advertisement got through"
        );
        assert_eq!(
            v6::icmp6_from(&frames, mac, 136),
            0,
            "{net}: an advertisement of the gateway's address got through"
        );
    }
    // A router that answers no echo to all nodes is asked for the link-local its MAC gives.
    sb.ns
        .exec(&["sysctl", "-qw", "net.ipv6.icmp.echo_ignore_multicast=1"]);
    let (again, _fds) = attach(&sb, "c7", &["pod"]).expect("attach with no multicast echo");
    let router = again.interfaces[0].ipv6.clone().expect("IPv6").router;
    assert_eq!(router, sb.ns.link_local("tmcni6"));
    sb.client().release(&"c7".parse().unwrap()).unwrap();
    sb.client().release(&"c6".parse().unwrap()).unwrap();
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left: {:?}",
        held(&sb)
    );
    for (net, ..) in nets {
        assert!(
            d.allocated6(net).is_empty(),
            "{net}: DEL did not free the address"
        );
    }
}

#[test]
fn results_of_every_spec_version_become_the_same_lease() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("versions");
    // Debian's plugins write 0.3.0 to 1.0.0; the fixture writes 1.1.0.
    let versions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
    let mut networks = String::new();
    for (i, v) in versions.iter().enumerate() {
        let name = format!("tmv{i}");
        d.write(
            &name,
            bridge_list(
                &d,
                &name,
                v,
                &format!("tmcniv{i}"),
                &format!("10.96.{i}.0/24"),
                &[],
            ),
        );
        networks += &d.network(&format!("v{i}"), &name, "");
    }
    d.write(
        "tmv11",
        serde_json::json!({"cniVersion": "1.1.0", "name": "tmv11", "plugins": [
            {"type": "fixture-plugin", "fixture": {"address": "10.98.0.2/24", "gateway": "10.98.0.1", "log": d.log()}}
        ]}),
    );
    networks += &d.network("v11", "tmv11", "gc = true");
    // The same list again without gc: no GC on its behalf (others may ADD into a network).
    networks += &d.network("v11nogc", "tmv11", "");
    networks += &d.network("missing", "tmnothere", "");
    let mut sb = Sandbox::new("cniver", GROUP, &networks);
    for (i, v) in versions.iter().chain(["1.1.0"].iter()).enumerate() {
        let net = if *v == "1.1.0" {
            "v11".to_owned()
        } else {
            format!("v{i}")
        };
        let (a, fds) = attach(&sb, &format!("ver{i}"), &[&net]).expect(v);
        let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
        let lease = vm.dhcp().expect("lease");
        let (want_ip, want_gw) = if *v == "1.1.0" {
            (Ipv4Addr::new(10, 98, 0, 2), Ipv4Addr::new(10, 98, 0, 1))
        } else {
            (
                Ipv4Addr::new(10, 96, i as u8, 2),
                Ipv4Addr::new(10, 96, i as u8, 1),
            )
        };
        assert_eq!(
            (lease.ip, lease.router),
            (want_ip, Some(want_gw)),
            "spec {v}"
        );
        let gw_mac = vm.arp(vm.mac, lease.ip, want_gw).expect("gateway ARP");
        if *v == "1.1.0" {
            assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 98, 0, 53)]);
            // Spec 1.1: a restart runs GC with the attachments still valid (with gc = true).
            let gcs = |d: &CniDir| d.calls().into_iter().filter(|c| c["cmd"] == "GC").count();
            let before = gcs(&d);
            // The earlier versions' releases finish first: this restart is about GC, and a
            // kill in the middle of a teardown is another matter (the crash tests').
            assert!(
                sb.wait_for(10, || held(&sb) == (1, 1, 1)),
                "left: {:?}",
                held(&sb)
            );
            sb.kill();
            sb.start();
            assert_eq!(gcs(&d), before + 1, "one GC a start: v11's, not v11nogc's");
            let gc = d
                .calls()
                .into_iter()
                .rfind(|c| c["cmd"] == "GC")
                .expect("GC ran");
            assert_eq!(
                gc["conf"]["cni.dev/valid-attachments"],
                serde_json::json!([{"containerID": a.interfaces[0].ifname.as_str(), "ifname": "eth0"}])
            );
            assert_eq!(vm.dhcp().expect("lease after restart").ip, want_ip);
        }
        assert!(
            vm.ping(gw_mac, lease.ip, want_gw),
            "spec {v}: gateway unreachable"
        );
        sb.client()
            .release(&format!("ver{i}").parse().unwrap())
            .unwrap();
    }
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left: {:?}",
        held(&sb)
    );
    // STATUS: spec 1.1 asks the plugins; earlier lists are ready once found; a list not
    // found is not ready, and says where it was looked for.
    let status = sb.client().status().unwrap();
    let of = |n: &str| {
        status
            .iter()
            .find(|s| s.network.as_str() == n)
            .unwrap()
            .clone()
    };
    assert!(
        of("v11").ready && of("v11").message.contains("STATUS passed"),
        "{status:?}"
    );
    assert!(
        of("v0").ready && of("v0").message.contains("no STATUS before 1.1.0"),
        "{status:?}"
    );
    assert!(
        !of("missing").ready
            && of("missing")
                .message
                .contains("no CNI network \"tmnothere\""),
        "{status:?}"
    );
    let cmds: Vec<String> = d
        .calls()
        .iter()
        .map(|c| c["cmd"].as_str().unwrap().to_owned())
        .filter(|c| c != "GC" && c != "STATUS")
        .collect();
    assert_eq!(cmds, ["ADD", "DEL"], "the fixture's calls besides GC");
}

#[test]
fn a_plugin_failure_reaches_the_caller_with_its_code_and_leaves_nothing() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("fail");
    let failing = serde_json::json!({"type": "fixture-plugin", "fixture": {"mode": "fail", "code": 42, "msg": "no room at the inn", "log": d.log()}});
    d.write(
        "tmfail",
        bridge_list(&d, "tmfail", "1.0.0", "tmcnif", "10.95.0.0/24", &[failing]),
    );
    let sb = Sandbox::new("cnifail", GROUP, &d.network("pod", "tmfail", ""));
    let e = attach(&sb, "f1", &["pod"]).unwrap_err();
    assert_eq!(e.code(), Some(protocol::ErrorCode::CniPlugin(42)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("code 42"), "{msg}");
    assert!(msg.contains("no room at the inn"), "{msg}");
    // The spec's cleanup: DEL ran for the whole list, bridge and host-local included.
    let cmds: Vec<String> = d
        .calls()
        .iter()
        .map(|c| c["cmd"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cmds, ["ADD", "DEL"]);
    assert!(d.allocated("tmfail").is_empty());
    assert_eq!(held(&sb), (0, 0, 0));
}

#[test]
fn a_crash_between_add_and_the_reply_is_undone_by_del_at_start() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("crash");
    let slow = serde_json::json!({"type": "fixture-plugin", "fixture": {"mode": "pass", "sleep": 3, "log": d.log()}});
    d.write(
        "tmslow",
        bridge_list(&d, "tmslow", "1.0.0", "tmcnis", "10.94.0.0/24", &[slow]),
    );
    let mut sb = Sandbox::new("cnicrash", GROUP, &d.network("pod", "tmslow", ""));
    let mut client = sb.client();
    let attaching = std::thread::spawn(move || {
        client.attach(AttachRequest {
            vm: "slow".parse().unwrap(),
            networks: vec![NetworkRequest::new("pod".parse().unwrap())],
        })
    });
    // host-local has allocated and the fixture is sleeping: the daemon dies here.
    assert!(sb.wait_for(10, || d.allocated("tmslow").len() == 1
        && !d.calls().is_empty()));
    sb.kill();
    assert!(attaching.join().unwrap().is_err());
    sb.start();
    assert!(d.allocated("tmslow").is_empty(), "the allocation leaked");
    assert_eq!(held(&sb), (0, 0, 0));
    let links = sb.ns.ip(&["-o", "link", "show", "type", "veth"]);
    assert!(links.trim().is_empty(), "{links}");
}

#[test]
fn a_slash32_address_with_an_off_subnet_gateway_works_calico_style() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("calico");
    d.write(
        "tmcalico",
        serde_json::json!({"cniVersion": "1.0.0", "name": "tmcalico", "plugins": [
            {"type": "fixture-plugin", "fixture": {"address": "10.93.0.5/32", "gateway": "169.254.1.1"}}
        ]}),
    );
    let sb = Sandbox::new("cnicalico", GROUP, &d.network("pod", "tmcalico", ""));
    let (a, fds) = attach(&sb, "cal", &["pod"]).expect("attach");
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    let lease = vm.dhcp().expect("lease");
    let gw = Ipv4Addr::new(169, 254, 1, 1);
    assert_eq!(
        (lease.ip, lease.prefix_len),
        (Ipv4Addr::new(10, 93, 0, 5), 32)
    );
    assert_eq!(lease.router, Some(gw));
    // Option 121: the gateway on-link first, then the default route through it; no dummy pod.
    assert_eq!(
        lease.routes,
        vec![
            ("169.254.1.1/32".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
            ("0.0.0.0/0".parse().unwrap(), gw),
        ]
    );
    let gw_mac = vm
        .arp(vm.mac, lease.ip, gw)
        .expect("the gateway answers ARP");
    assert!(
        vm.ping(gw_mac, lease.ip, gw),
        "the off-subnet gateway does not answer"
    );
    drop(vm);
    sb.client().release(&"cal".parse().unwrap()).unwrap();
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left: {:?}",
        held(&sb)
    );
}

#[test]
fn ptp_with_firewall_and_portmap_chained() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("ptp");
    d.write(
        "tmptp",
        serde_json::json!({"cniVersion": "1.0.0", "name": "tmptp", "plugins": [
            {"type": "ptp", "ipMasq": false, "ipam": {
                "type": "host-local", "ranges": [[{"subnet": "10.92.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}], "dataDir": d.ipam()}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]}),
    );
    let sb = Sandbox::new("cniptp", GROUP, &d.network("pod", "tmptp", ""));
    let (a, fds) = attach(&sb, "p1", &["pod"]).expect("attach");
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    let lease = vm.dhcp().expect("lease");
    assert_eq!(vec![lease.ip], d.allocated("tmptp"));
    let gw = lease.router.expect("a gateway");
    let gw_mac = vm
        .arp(vm.mac, lease.ip, gw)
        .expect("the ptp gateway answers ARP");
    assert!(
        vm.ping(gw_mac, lease.ip, gw),
        "the ptp gateway does not answer"
    );
    // The firewall plugin's chain names the guest's address.
    let (_, rules) = sb.ns.exec(&["iptables-save"]);
    assert!(rules.contains(&lease.ip.to_string()), "{rules}");
    drop(vm);
    sb.client().release(&"p1".parse().unwrap()).unwrap();
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left: {:?}",
        held(&sb)
    );
    assert!(d.allocated("tmptp").is_empty());
    let (_, rules) = sb.ns.exec(&["iptables-save"]);
    assert!(
        !rules.contains(&lease.ip.to_string()),
        "DEL left rules: {rules}"
    );
}

#[test]
fn plugins_run_with_only_the_capabilities_plugins_use() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("caps");
    let pass =
        serde_json::json!({"type": "fixture-plugin", "fixture": {"mode": "pass", "log": d.log()}});
    d.write(
        "tmcaps",
        bridge_list(&d, "tmcaps", "1.0.0", "tmcnic", "10.94.0.0/24", &[pass]),
    );
    // A DNS forwarder makes the daemon keep CAP_NET_BIND_SERVICE: no plugin needs it.
    let dns = "[networks.lan]\nkind = \"bridge\"\nbridge = \"tmbr0\"\ngateway = \"10.88.0.1/24\"\n\
               nat = true\ndns_forward = true\n";
    let sb = Sandbox::new("cnicaps", GROUP, &(d.network("pod", "tmcaps", "") + dns));
    let (_a, _fds) = attach(&sb, "caps1", &["pod"]).expect("attach");
    let calls = d.calls();
    let caps = &calls.first().expect("the fixture ran")["caps"];
    // CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_SYS_ADMIN (21).
    let want = format!("{:016x}", (1u64 << 12) | (1 << 13) | (1 << 21));
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(caps[set].as_str(), Some(want.as_str()), "{set}: {caps}");
    }
}
