//! Kernel tier (root): the isolated kind. The sandbox namespace stands in for the host; a
//! second namespace made by the test stands in for the LAN, joined to it by a veth that is the
//! network's "uplink" (never the machine's eth0).

use protocol::{AttachRequest, NetworkRequest};
use std::net::Ipv4Addr;
use tapmanager_tests::fakevm::{self, Capture, FakeVm};
use tapmanager_tests::sandbox::{Launch, Sandbox, UPLINK};

use tapmanager_tests::ids::isolated::GROUP;
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const HOST_UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const LAN_DROPPED: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 1);

fn attach(sb: &Sandbox, vm: &str) -> (protocol::Attachment, FakeVm) {
    attach_on(sb, vm, "iso")
}

fn attach_on(sb: &Sandbox, vm: &str, net: &str) -> (protocol::Attachment, FakeVm) {
    let (a, fds) = sb
        .client()
        .attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![NetworkRequest::new(net.parse().unwrap())],
        })
        .expect("attach");
    let mac = a.interfaces[0].mac.0;
    (a, FakeVm::new(fds.into_iter().next().unwrap(), mac))
}

#[test]
fn isolated_guests_lease_a_slash30_reach_the_lan_and_nothing_else() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\ndrop = [\"192.168.78.0/24\"]\ndns = [\"192.168.77.2\"]\n"
    );
    let (mut sb, _lan) = Sandbox::with_lan("iso", GROUP, &networks);

    let (a1, vm1) = attach(&sb, "iso1");
    let l1 = vm1.dhcp().expect("lease");
    assert_eq!(l1.ip, Ipv4Addr::new(169, 254, 100, 2));
    assert_eq!(l1.prefix_len, 30);
    assert_eq!(l1.router, Some(Ipv4Addr::new(169, 254, 100, 1)));
    assert_eq!(l1.dns, vec![LAN_HOST]);
    let gw1 = vm1
        .arp(vm1.mac, l1.ip, l1.router.unwrap())
        .expect("gateway ARP");
    // NAT egress to the LAN.
    assert!(vm1.ping(gw1, l1.ip, LAN_HOST), "LAN host unreachable");
    // The drop list, the host's own address, a spoofed source: nothing comes back.
    assert!(
        !vm1.ping(gw1, l1.ip, LAN_DROPPED),
        "dropped destination answered"
    );
    assert!(
        !vm1.ping(gw1, l1.ip, HOST_UPLINK_ADDR),
        "host address answered"
    );
    assert!(
        !vm1.ping(gw1, Ipv4Addr::new(169, 254, 100, 9), LAN_HOST),
        "spoofed source passed"
    );

    // A second guest gets the next /30 and cannot reach the first.
    let (_a2, vm2) = attach(&sb, "iso2");
    let l2 = vm2.dhcp().expect("lease 2");
    assert_eq!(l2.ip, Ipv4Addr::new(169, 254, 100, 6));
    let gw2 = vm2
        .arp(vm2.mac, l2.ip, l2.router.unwrap())
        .expect("gateway ARP 2");
    assert!(vm2.ping(gw2, l2.ip, LAN_HOST));
    assert!(!vm2.ping(gw2, l2.ip, l1.ip), "guest reached another guest");

    // Release removes the namespace, the veth and the rules.
    let ifname = a1.interfaces[0].ifname.to_string();
    let netns_file = sb.dir.join("state/netns").join(&ifname);
    assert!(netns_file.exists());
    sb.client().release(&"iso1".parse().unwrap()).unwrap();
    assert!(sb.wait_for(10, || !netns_file.exists() && !sb.ns.link_exists(&ifname)));
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "inet", "tapmanager_routed"]);
    assert!(!rules.contains(&ifname), "{rules}");

    // SIGKILL and restart: the live guest is adopted and still reaches the LAN.
    sb.kill();
    sb.start();
    assert_eq!(sb.client().list().unwrap().len(), 1);
    assert!(
        vm2.ping(gw2, l2.ip, LAN_HOST),
        "adopted guest lost its network"
    );
    assert_eq!(vm2.dhcp().expect("lease after restart").ip, l2.ip);
}

/// Attaches a guest on `net` and returns (guest, its address, its gateway's MAC).
fn leased(sb: &Sandbox, vm: &str, net: &str) -> (FakeVm, Ipv4Addr, [u8; 6]) {
    let (_, g) = attach_on(sb, vm, net);
    let l = g.dhcp().expect("lease");
    let gw = g.arp(g.mac, l.ip, l.router.unwrap()).expect("gateway ARP");
    (g, l.ip, gw)
}

#[test]
fn drop_and_allow_lists_on_several_isolated_networks() {
    tapmanager_tests::require_root!();
    let iso = |name: &str, range: &str, lists: &str| {
        format!("[networks.{name}]\nkind = \"isolated\"\nrange = \"{range}\"\nuplink = \"{UPLINK}\"\n{lists}\n")
    };
    let networks = [
        iso("open", "169.254.100.0/24", ""),
        iso(
            "allowonly",
            "169.254.101.0/24",
            "allow = [\"192.168.78.0/24\"]",
        ),
        iso(
            "both",
            "169.254.102.0/24",
            "allow = [\"192.168.76.0/22\"]\ndrop = [\"192.168.78.0/24\"]",
        ),
    ]
    .concat();
    let (sb, _lan) = Sandbox::with_lan("lists", GROUP, &networks);
    let reach = |net: &str| {
        let (g, ip, gw) = leased(&sb, &format!("vm-{net}"), net);
        (g.ping(gw, ip, LAN_HOST), g.ping(gw, ip, LAN_DROPPED))
    };
    // No list: everything outside is reachable.
    assert_eq!(reach("open"), (true, true));
    // allow alone: nothing but the allowed range.
    assert_eq!(reach("allowonly"), (false, true));
    // allow and drop: in allow and not in drop (drop wins).
    assert_eq!(reach("both"), (true, false));
}

#[test]
fn a_dead_callers_isolated_guest_is_reaped_at_restart() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\n"
    );
    let mut sb = Sandbox::new("isoreap", GROUP, &networks);
    // A caller that exits while the daemon is down.
    let mut caller = std::process::Command::new(tapmanager_tests::sandbox::bin("vmwrapper"))
        .arg("--socket")
        .arg(&sb.socket)
        .args([
            "--id",
            "gone",
            "--net",
            "iso",
            "--hypervisor",
            "qemu",
            "--",
            "sh",
            "-c",
            "read x",
            "sh",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 1));
    let ifname = sb.taps().pop().expect("host veth");
    assert!(sb.dir.join("state/netns").join(&ifname).exists());
    sb.kill();
    drop(caller.stdin.take());
    caller.wait().unwrap();
    sb.start();
    assert!(sb.journal_entries().is_empty());
    assert!(!sb.ns.link_exists(&ifname));
    assert!(!sb.dir.join("state/netns").join(&ifname).exists());
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "inet", "tapmanager_routed"]);
    assert!(!rules.contains(&ifname), "{rules}");
}

/// What the guest's namespace shows of its binding: `ip -d link show tap0` and the TAP's
/// ingress filters, read through the namespace's pin.
fn binding_shape(sb: &Sandbox, ifname: &str) -> String {
    let pin = sb.dir.join("state/netns").join(ifname);
    let pin = format!("--net={}", pin.display());
    let mut out = String::new();
    for args in [
        &["ip", "-d", "link", "show", "dev", "tap0"][..],
        &["tc", "filter", "show", "dev", "tap0", "ingress"][..],
    ] {
        let o = std::process::Command::new("nsenter")
            .arg(&pin)
            .args(args)
            .output()
            .expect("nsenter");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

#[test]
fn bridge_and_tc_redirect_bindings_isolate_like_the_routed_one() {
    tapmanager_tests::require_root!();
    for (binding, tag) in [("bridge", "isobr"), ("tc-redirect", "isotc")] {
        let networks = format!(
            "[networks.iso]\nkind = \"isolated\"\nbinding = \"{binding}\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\ndrop = [\"192.168.78.0/24\"]\n"
        );
        let (mut sb, _lan) = Sandbox::with_lan(tag, GROUP, &networks);
        let (a1, vm1) = attach(&sb, "j1");
        let ifname = a1.interfaces[0].ifname.to_string();
        let shape = binding_shape(&sb, &ifname);
        if binding == "bridge" {
            assert!(shape.contains("master br0"), "{binding}: {shape}");
            assert!(shape.contains("learning off"), "{binding}: {shape}");
        } else {
            assert!(!shape.contains("master"), "{binding}: {shape}");
            assert_eq!(shape.matches("mirred").count(), 2, "{binding}: {shape}");
        }
        let l1 = vm1.dhcp().expect("lease");
        assert_eq!(l1.ip, Ipv4Addr::new(169, 254, 100, 2), "{binding}");
        let gw = l1.router.unwrap();
        // The gateway is the host side of the veth.
        let gw1 = vm1.arp(vm1.mac, l1.ip, gw).expect("gateway ARP");
        assert_eq!(gw1[0], 0xfa, "{binding}: gateway MAC {gw1:02x?}");
        let host = sb.ns.ip(&["-4", "addr", "show", "dev", &ifname]);
        assert!(host.contains("169.254.100.1/30"), "{binding}: {host}");
        assert!(vm1.ping(gw1, l1.ip, LAN_HOST), "{binding}: LAN unreachable");
        assert!(
            !vm1.ping(gw1, l1.ip, LAN_DROPPED),
            "{binding}: dropped destination answered"
        );
        assert!(
            !vm1.ping(gw1, l1.ip, HOST_UPLINK_ADDR),
            "{binding}: host address answered"
        );
        // The gateway answers a ping, as a routed namespace's TAP does; no other host address.
        assert!(
            vm1.ping(gw1, l1.ip, gw),
            "{binding}: the gateway did not answer"
        );
        assert!(
            !vm1.ping(gw1, Ipv4Addr::new(169, 254, 100, 9), LAN_HOST),
            "{binding}: spoofed source address passed"
        );
        let other_mac = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
        assert!(
            !vm1.ping_from(other_mac, gw1, l1.ip, LAN_HOST),
            "{binding}: spoofed source MAC passed"
        );
        // Where the spoofed frames stop: tc-redirect's guard keeps them in the guest's
        // namespace; on the bridge binding they reach the host side, whose rules drop them.
        let cap = {
            let name = ifname.clone();
            sb.ns.run_in(move || Capture::open(&name))
        };
        vm1.send(&fakevm::marked_udp(vm1.mac, l1.ip, b"TM-J-HONEST"));
        vm1.send(&fakevm::marked_udp(other_mac, l1.ip, b"TM-J-SPOOF"));
        vm1.send(&fakevm::marked_udp(
            vm1.mac,
            Ipv4Addr::new(169, 254, 100, 9),
            b"TM-J-SPOOF",
        ));
        let frames = cap.frames(std::time::Duration::from_millis(300));
        assert_eq!(fakevm::count(&frames, b"TM-J-HONEST"), 1, "{binding}");
        let spoofed = fakevm::count(&frames, b"TM-J-SPOOF");
        if binding == "tc-redirect" {
            assert_eq!(spoofed, 0, "{binding}: spoofed frames left the namespace");
        } else {
            assert_eq!(spoofed, 2, "{binding}: the bridge passes frames unchecked");
        }
        // A second guest cannot reach the first.
        let (_a2, vm2) = attach(&sb, "j2");
        let l2 = vm2.dhcp().expect("lease 2");
        let gw2 = vm2.arp(vm2.mac, l2.ip, l2.router.unwrap()).expect("ARP 2");
        assert!(vm2.ping(gw2, l2.ip, LAN_HOST), "{binding}");
        assert!(
            !vm2.ping(gw2, l2.ip, l1.ip),
            "{binding}: guest reached guest"
        );
        assert!(
            !vm2.ping(gw2, l2.ip, gw),
            "{binding}: a guest pinged another guest's gateway"
        );

        // SIGKILL and restart: the guest keeps its network and its lease renews.
        sb.kill();
        sb.start();
        assert!(
            vm1.ping(gw1, l1.ip, LAN_HOST),
            "{binding}: lost after restart"
        );
        assert_eq!(vm1.dhcp().expect("lease after restart").ip, l1.ip);
        // The network's binding changes while the guests run: adopted, they keep the rules
        // they were built for (the journal says which); a new guest gets the new binding.
        sb.kill();
        let config = std::fs::read_to_string(&sb.config).unwrap();
        std::fs::write(
            &sb.config,
            config.replace(&format!("binding = \"{binding}\""), "binding = \"routed\""),
        )
        .unwrap();
        sb.start();
        assert!(
            vm1.ping(gw1, l1.ip, LAN_HOST),
            "{binding}: lost after the binding changed"
        );
        assert_eq!(vm1.dhcp().expect("lease after the change").ip, l1.ip);
        assert!(
            !vm1.ping(gw1, l1.ip, Ipv4Addr::new(192, 168, 78, 1)),
            "{binding}: the drop list no longer holds"
        );
        let (a3, vm3) = attach(&sb, "j3");
        let routed = binding_shape(&sb, a3.interfaces[0].ifname.as_str());
        assert!(
            !routed.contains("master") && !routed.contains("mirred"),
            "{binding}: the new guest is not routed: {routed}"
        );
        let l3 = vm3.dhcp().expect("lease 3");
        let gw3 = vm3.arp(vm3.mac, l3.ip, l3.router.unwrap()).expect("ARP 3");
        assert!(
            vm3.ping(gw3, l3.ip, LAN_HOST),
            "{binding}: the routed guest"
        );
        drop(vm3);
        sb.client().release(&"j3".parse().unwrap()).unwrap();
        // Release removes the namespace, the veth and the rules.
        sb.client().release(&"j1".parse().unwrap()).unwrap();
        let pin = sb.dir.join("state/netns").join(&ifname);
        assert!(sb.wait_for(10, || !pin.exists() && !sb.ns.link_exists(&ifname)));
        drop(vm2);
        sb.client().release(&"j2".parse().unwrap()).unwrap();
        assert!(sb.all_gone(10), "{binding}: something left after release");
    }
}

/// A daemon started with `ip netns exec` has a mount namespace of its own, which dies with it:
/// pins mounted only there ended every isolated guest's namespace at a restart (the guest then
/// got no lease). The pins must be in the starting process's mount namespace too.
#[test]
fn a_daemon_started_with_ip_netns_exec_keeps_isolated_guests_across_a_restart() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\n"
    );
    let (mut sb, _lan) = Sandbox::with_lan("isonsx", GROUP, &networks);
    sb.kill();
    sb.launch = Launch::IpNetnsExec;
    sb.start();
    let (a, vm) = attach(&sb, "nsx1");
    let lease = vm.dhcp().expect("lease");
    let pin = sb
        .dir
        .join("state/netns")
        .join(a.interfaces[0].ifname.to_string());
    // Seen from this test's mount namespace, the one `ip netns exec` was run from.
    let fs = nix::sys::statfs::statfs(&pin).expect("statfs pin");
    assert_eq!(
        fs.filesystem_type().0 as i64,
        0x6e73_6673,
        "{} is not a namespace here: its pin lives only in the daemon's mount namespace",
        pin.display()
    );
    sb.kill();
    sb.start();
    assert_eq!(sb.client().list().unwrap().len(), 1);
    assert_eq!(vm.dhcp().expect("lease after restart").ip, lease.ip);
    sb.client().release(&"nsx1".parse().unwrap()).unwrap();
    assert!(sb.wait_for(10, || !pin.exists()), "pin left behind");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*pin.to_string_lossy()),
        "pin still mounted here after release"
    );
}
