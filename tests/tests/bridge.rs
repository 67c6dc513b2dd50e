//! Kernel tier (root): the daemon runs in a namespace each test makes; a fake guest works on
//! the TAP fd it is handed. See DESIGN.md §9.

use protocol::{AttachRequest, ErrorCode, NetworkRequest};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;
use tapmanager_tests::fakevm::{self, Capture, FakeVm};
use tapmanager_tests::sandbox::{as_user, bin, Sandbox, BRIDGE, GATEWAY};

/// The group the sandbox daemon serves; tests run callers with it (or without it) by number.
use tapmanager_tests::ids::bridge::GROUP;
/// An unprivileged uid for callers.
use tapmanager_tests::ids::bridge::USER;

fn attach(sb: &Sandbox, vm: &str, queues: u16) -> (protocol::Attachment, Vec<OwnedFd>) {
    let mut net = NetworkRequest::new("default".parse().unwrap());
    net.queues = queues;
    sb.client()
        .attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![net],
        })
        .expect("attach")
}

fn guest(sb: &Sandbox, vm: &str) -> (protocol::Attachment, FakeVm) {
    let (a, mut fds) = attach(sb, vm, 1);
    assert_eq!(fds.len(), 1);
    let mac = a.interfaces[0].mac.0;
    (a, FakeVm::new(fds.remove(0), mac))
}

#[test]
fn guest_leases_the_configured_address_and_reaches_its_gateway() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("lease", GROUP);
    let (a, vm) = guest(&sb, "vm1");
    let iface = &a.interfaces[0];
    let lease = vm.dhcp().expect("DHCP lease");
    assert_eq!(Some((lease.ip, lease.prefix_len)), iface.address);
    assert_eq!(lease.ip, Ipv4Addr::new(10, 88, 0, 2));
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some(GATEWAY.parse().unwrap()));
    assert_eq!(lease.server_id, Some(GATEWAY.parse().unwrap()));
    assert_eq!(
        lease.dns,
        vec![Ipv4Addr::new(10, 88, 0, 1), Ipv4Addr::new(10, 88, 0, 53)]
    );
    assert_eq!(lease.mtu, Some(1400));
    // The gateway answers ARP, with the bridge's MAC.
    let gw_mac = vm
        .arp(vm.mac, lease.ip, GATEWAY.parse().unwrap())
        .expect("gateway answers ARP");
    assert_eq!(gw_mac, lease.server_mac);
    // The TAP is enslaved to the bridge, up, with the configured MTU.
    let show = sb
        .ns
        .ip(&["-d", "link", "show", "dev", iface.ifname.as_str()]);
    assert!(show.contains(&format!("master {BRIDGE}")), "{show}");
    assert!(show.contains("mtu 1400"), "{show}");
    assert!(show.contains("UP"), "{show}");
}

#[test]
fn spoofed_frames_never_reach_the_bridge() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("spoof", GROUP);
    let (_a, vm) = guest(&sb, "vm1");
    let lease = vm.dhcp().expect("lease");
    let cap = sb.ns.run_in(|| Capture::open(BRIDGE));
    let mut other_mac = vm.mac;
    other_mac[5] ^= 0x55;
    vm.send(&fakevm::marked_udp(vm.mac, lease.ip, b"TM-HONEST"));
    vm.send(&fakevm::marked_udp(other_mac, lease.ip, b"TM-SPOOF-MAC"));
    vm.send(&fakevm::marked_udp(
        vm.mac,
        Ipv4Addr::new(10, 88, 0, 99),
        b"TM-SPOOF-IP",
    ));
    vm.send(&fakevm::arp_request(
        vm.mac,
        Ipv4Addr::new(10, 88, 0, 99),
        GATEWAY.parse().unwrap(),
    ));
    // A DHCP server answer from the guest (source port 67) must not leave its port either.
    vm.send(&dhcp::frame::build_ipv4_udp_frame(
        vm.mac,
        fakevm::BROADCAST,
        lease.ip,
        Ipv4Addr::BROADCAST,
        67,
        68,
        b"TM-ROGUE-DHCP",
    ));
    let window = Duration::from_millis(500);
    // The capture is read once; count each marker in one pass by re-sending the honest one.
    assert!(
        cap.count_containing(b"TM-HONEST", window) >= 1,
        "honest frame must pass"
    );
    vm.send(&fakevm::marked_udp(other_mac, lease.ip, b"TM-SPOOF-MAC"));
    assert_eq!(cap.count_containing(b"TM-SPOOF-MAC", window), 0);
    vm.send(&fakevm::marked_udp(
        vm.mac,
        Ipv4Addr::new(10, 88, 0, 99),
        b"TM-SPOOF-IP",
    ));
    assert_eq!(cap.count_containing(b"TM-SPOOF-IP", window), 0);
    vm.send(&dhcp::frame::build_ipv4_udp_frame(
        vm.mac,
        fakevm::BROADCAST,
        lease.ip,
        Ipv4Addr::BROADCAST,
        67,
        68,
        b"TM-ROGUE-DHCP",
    ));
    assert_eq!(cap.count_containing(b"TM-ROGUE-DHCP", window), 0);
    // No IPv6 leaves the port (a neighbour advertisement could poison others' caches).
    let mut v6 = fakevm::BROADCAST.to_vec();
    v6.extend_from_slice(&vm.mac);
    v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, 17, 255]);
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(b"TM-IPV6-FRAME-XX");
    vm.send(&v6);
    assert_eq!(cap.count_containing(b"TM-IPV6-FRAME", window), 0);
    // ARP claiming another address gets no answer from the gateway.
    assert_eq!(
        vm.arp(
            vm.mac,
            Ipv4Addr::new(10, 88, 0, 99),
            GATEWAY.parse().unwrap()
        ),
        None
    );
}

#[test]
fn two_guests_get_different_addresses_and_macs() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("two", GROUP);
    let (a1, vm1) = guest(&sb, "vm1");
    let (a2, vm2) = guest(&sb, "vm2");
    let (l1, l2) = (vm1.dhcp().expect("lease 1"), vm2.dhcp().expect("lease 2"));
    assert_ne!(l1.ip, l2.ip);
    assert_ne!(a1.interfaces[0].mac, a2.interfaces[0].mac);
    assert_ne!(a1.interfaces[0].ifname, a2.interfaces[0].ifname);
    // The same id again is refused before anything is created.
    let mut c = sb.client();
    let e = c
        .attach(AttachRequest {
            vm: "vm1".parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyAttached));
    assert_eq!(sb.taps().len(), 2);
    // List shows both; release removes one completely.
    assert_eq!(c.list().unwrap().len(), 2);
    c.release(&"vm1".parse().unwrap()).unwrap();
    // Release answers at once; the kernel side finishes in the background.
    assert_eq!(c.list().unwrap().len(), 1);
    assert!(
        sb.wait_for(10, || !sb.ns.link_exists(a1.interfaces[0].ifname.as_str())
            && sb.journal_entries().len() == 1)
    );
    // The journal entry goes before the daemon forgets the attachment (and frees its
    // address): its log says when that happened.
    assert!(sb.wait_for(10, || sb
        .log()
        .lines()
        .any(|l| l.contains("released") && l.contains("vm1"))));
    // The freed address is handed out again.
    let (a3, _vm3) = guest(&sb, "vm3");
    assert_eq!(a3.interfaces[0].address.unwrap().0, l1.ip);
}

#[test]
fn queues_give_one_fd_per_queue_of_one_multiqueue_tap() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("mq", GROUP);
    let (a, fds) = attach(&sb, "mq1", 2);
    assert_eq!(fds.len(), 2);
    assert_eq!(a.interfaces[0].queues, 2);
    for fd in &fds {
        let (name, flags) = tapmanager::net::tap::flags(fd).unwrap();
        assert_eq!(name, a.interfaces[0].ifname.as_str());
        assert_ne!(flags & libc::IFF_MULTI_QUEUE, 0);
        assert_ne!(flags & libc::IFF_VNET_HDR, 0);
        assert_ne!(flags & libc::IFF_TAP, 0);
    }
    // MACs of the daemon's own shape are refused: they would collide with a host side.
    let mut net = NetworkRequest::new("default".parse().unwrap());
    net.mac = Some("fe:00:00:00:00:01".parse().unwrap());
    let e = sb
        .client()
        .attach(AttachRequest {
            vm: "mq3".parse().unwrap(),
            networks: vec![net],
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    assert!(e.to_string().contains("reserved"), "{e}");
    // Bad queue counts are refused.
    let mut net = NetworkRequest::new("default".parse().unwrap());
    net.queues = 0;
    let e = sb
        .client()
        .attach(AttachRequest {
            vm: "mq2".parse().unwrap(),
            networks: vec![net],
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
}

/// Runs vmwrapper as `USER` with the given supplementary groups, exec'ing `sh -c SCRIPT`.
fn vmwrapper_as(sb: &Sandbox, groups: &str, vm: &str, script: &str) -> Command {
    vmwrapper_on(sb, USER, groups, vm, "default", script)
}

/// Runs vmwrapper as `uid` with `groups` on network `net`, exec'ing `sh -c SCRIPT`.
fn vmwrapper_on(
    sb: &Sandbox,
    uid: u32,
    groups: &str,
    vm: &str,
    net: &str,
    script: &str,
) -> Command {
    let mut c = sb.vmwrapper_as(uid, groups);
    c.args([
        "--id",
        vm,
        "--hypervisor",
        "qemu",
        "--net",
        net,
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .stdin(Stdio::null());
    c
}

#[test]
fn a_caller_outside_the_group_is_refused() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("group", GROUP);
    // First line: the socket is 0660 root:group, so the kernel refuses the connect.
    let out = vmwrapper_as(&sb, "", "x1", "exit 0").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("hint: only root and members"), "{err}");
    // Second line: even with the socket opened up, the daemon checks the caller's groups.
    std::fs::set_permissions(
        &sb.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = vmwrapper_as(&sb, "", "x1", "exit 0").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PermissionDenied") && err.contains("not a member of group"),
        "{err}"
    );
    // A member (by supplementary group) is served.
    let out = vmwrapper_as(&sb, &GROUP.to_string(), "x2", "exit 0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.all_gone(10));
}

#[test]
fn the_guest_exiting_removes_everything() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("exit", GROUP);
    // The "hypervisor" checks it got an inheritable fd 3 that is its TAP, then exits.
    let out = vmwrapper_as(
        &sb,
        &GROUP.to_string(),
        "e1",
        "test -e /proc/self/fd/3 && ! test -e /proc/self/fd/5 && echo \"$@\"",
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-netdev tap,id=tmnet0,fd=3"), "{stdout}");
    assert!(
        stdout.contains("virtio-net-pci,netdev=tmnet0,mac="),
        "{stdout}"
    );
    // Its exit (same pid as vmwrapper) tears everything down.
    assert!(
        sb.all_gone(10),
        "{:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
    let (ok, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    assert!(ok, "{rules}");
    assert!(
        !rules.contains("elements") && !rules.contains("hook ingress"),
        "{rules}"
    );
    assert!(sb.client().list().unwrap().is_empty());
}

#[test]
fn sigkill_and_restart_keep_live_guests_and_reap_dead_ones() {
    tapmanager_tests::require_root!();
    let mut sb = Sandbox::with_defaults("restart", GROUP);
    let g = GROUP.to_string();
    // A live guest: keeps running across the daemon's death.
    let mut live = vmwrapper_as(&sb, &g, "live", "exec sleep 60")
        .spawn()
        .unwrap();
    // A guest that will exit while the daemon is dead.
    let mut dying = vmwrapper_as(&sb, &g, "dying", "read x")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 2));
    let taps_before = sb.taps();
    assert_eq!(taps_before.len(), 2);
    // Each TAP is owned by the caller, with its final flags.
    for tap in &taps_before {
        let d = sb.ns.ip(&["-d", "link", "show", "dev", tap]);
        assert!(d.contains(&format!("user {USER}")), "{d}");
        assert!(d.contains("vnet_hdr on"), "{d}");
    }
    sb.kill();
    drop(dying.stdin.take());
    dying.wait().unwrap();
    sb.start();
    // The live guest's network is adopted: TAP, journal, guards, DHCP; the dead one's is gone.
    assert!(sb.wait_for(10, || sb.taps().len() == 1), "{:?}", sb.taps());
    assert_eq!(sb.journal_entries().len(), 1);
    assert!(sb.journal_entries()[0].ends_with("-live.json"));
    let list = sb.client().list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].vm.as_str(), "live");
    let (ok, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    // Guards: exactly the live guest's port; the dead one's are gone.
    let live_tap = list[0].interfaces[0].ifname.to_string();
    assert!(ok && rules.contains(&format!("\"{live_tap}\"")), "{rules}");
    for tap in taps_before.iter().filter(|t| **t != live_tap) {
        assert!(!rules.contains(tap.as_str()), "{rules}");
    }
    // A bridge deleted while the daemon is down is recreated, and adopted ports rejoin it.
    sb.kill();
    sb.ns
        .ip(&["link", "del", "dev", tapmanager_tests::sandbox::BRIDGE]);
    sb.start();
    let show = sb.ns.ip(&["link", "show", "dev", &live_tap]);
    assert!(show.contains(&format!("master {BRIDGE}")), "{show}");
    // An orphan link of our shape (a crash between TAP creation and journal) is removed too.
    sb.kill();
    sb.ns
        .ip(&["tuntap", "add", "mode", "tap", "name", "tm00000000ff"]);
    sb.start();
    assert!(sb.wait_for(10, || !sb.ns.link_exists("tm00000000ff")));
    assert!(sb.ns.link_exists(list[0].interfaces[0].ifname.as_str()));
    // When the live guest exits, the re-armed watch tears it down.
    let _ = live.kill(); // it may have exited already, which the checks below would show
    live.wait().unwrap();
    assert!(sb.all_gone(10));
}

/// Runs `tapmanager ARGS --socket S` as `uid` in `GROUP`.
fn tapmanager_as(sb: &Sandbox, uid: u32, args: &[&str]) -> std::process::Output {
    as_user(uid, &GROUP.to_string(), &bin("tapmanager"))
        .args(args)
        .arg("--socket")
        .arg(&sb.socket)
        .output()
        .unwrap()
}

#[test]
fn attachments_belong_to_their_uid_and_private_networks_to_their_list() {
    tapmanager_tests::require_root!();
    use tapmanager_tests::ids::bridge::OTHER;
    let networks = format!(
        "{}\n[networks.secret]\nkind = \"bridge\"\nbridge = \"tmbr1\"\ngateway = \"10.89.0.1/24\"\nprivate = true\nallow_users = [\"{OTHER}\"]\n",
        tapmanager_tests::sandbox::default_networks()
    );
    let sb = Sandbox::new("owner", GROUP, &networks);
    let g = GROUP.to_string();
    let mut mine = vmwrapper_as(&sb, &g, "mine", "exec sleep 60")
        .spawn()
        .unwrap();
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 1));
    // Another member sees nothing of it and cannot show or release it.
    let out = tapmanager_as(&sb, OTHER, &["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    for verb in ["show", "release"] {
        let out = tapmanager_as(&sb, OTHER, &[verb, "mine"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    }
    assert_eq!(sb.taps().len(), 1);
    // Its owner sees it, as JSON with its address.
    let out = tapmanager_as(&sb, USER, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["vm"], "mine");
    assert_eq!(list[0]["uid"], USER);
    assert_eq!(list[0]["interfaces"][0]["address"], "10.88.0.2/24");
    // The private network: refused to a plain member, served to its listed user.
    let out = vmwrapper_on(&sb, USER, &g, "s1", "secret", "exit 0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not use network secret"), "{err}");
    let out = vmwrapper_on(&sb, OTHER, &g, "s2", "secret", "echo \"$@\"")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("-netdev tap,id=tmnet0,fd=3"));
    // An unknown network names the ones that exist.
    let mut c = sb.client();
    let e = c
        .attach(AttachRequest {
            vm: "u1".parse().unwrap(),
            networks: vec![NetworkRequest::new("nosuch".parse().unwrap())],
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownNetwork));
    assert!(
        e.to_string().contains("these exist: default, secret"),
        "{e}"
    );
    let _ = mine.kill(); // the test is done with it; its teardown is checked elsewhere
    mine.wait().unwrap();
}

#[test]
fn static_addresses_same_mac_for_the_same_id_and_the_async_client() {
    tapmanager_tests::require_root!();
    let networks = tapmanager_tests::sandbox::default_networks()
        + "addresses = [\"10.88.0.10/24\", \"10.88.0.11/24\"]\n";
    let sb = Sandbox::new("static", GROUP, &networks);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = protocol::AsyncClient::connect(&sb.socket).await.unwrap();
        let req = |vm: &str| AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        };
        let (a, fds) = c.attach(req("s1")).await.unwrap();
        assert_eq!(fds.len(), 1);
        assert_eq!(
            a.interfaces[0].address,
            Some((Ipv4Addr::new(10, 88, 0, 10), 24))
        );
        let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
        assert_eq!(vm.dhcp().expect("lease").ip, Ipv4Addr::new(10, 88, 0, 10));
        let (b, _fds_b) = c.attach(req("s2")).await.unwrap();
        assert_eq!(
            b.interfaces[0].address,
            Some((Ipv4Addr::new(10, 88, 0, 11), 24))
        );
        // The list is used up: the next attach is refused, and nothing is left of it.
        let e = c.attach(req("s3")).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::AddressesExhausted));
        assert_eq!(sb.taps().len(), 2);
        // The same id gets the same MAC again after a release.
        c.release(&"s1".parse().unwrap()).await.unwrap();
        let (again, _fds_again) = c.attach(req("s1")).await.unwrap();
        assert_eq!(again.interfaces[0].mac, a.interfaces[0].mac);
        assert_eq!(
            c.info(&"s1".parse().unwrap()).await.unwrap().vm.as_str(),
            "s1"
        );
        assert_eq!(c.list().await.unwrap().len(), 2);
    });
}

#[test]
fn a_failed_attach_leaves_nothing_behind() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("fail", GROUP);
    // Pull the bridge from under the daemon: enslaving the new TAP must fail, mid-script.
    sb.ns.ip(&["link", "del", "dev", BRIDGE]);
    let e = sb
        .client()
        .attach(AttachRequest {
            vm: "f1".parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Internal));
    assert!(e.to_string().contains("cannot set up TAP"), "{e}");
    assert!(sb.taps().is_empty(), "{:?}", sb.taps());
    assert!(sb.journal_entries().is_empty());
    let (ok, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    assert!(
        ok && !rules.contains("elements") && !rules.contains("hook ingress"),
        "{rules}"
    );
    assert!(sb.client().list().unwrap().is_empty());
}

#[test]
fn several_nics_on_several_networks_in_order() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "{}\n[networks.lan2]\nkind = \"bridge\"\nbridge = \"tmbr2\"\ngateway = \"10.90.0.1/24\"\ndns = [\"10.90.0.1\"]\n",
        tapmanager_tests::sandbox::default_networks()
    );
    let sb = Sandbox::new("nics", GROUP, &networks);
    let (a, fds) = sb
        .client()
        .attach(AttachRequest {
            vm: "multi".parse().unwrap(),
            networks: vec![
                NetworkRequest::new("default".parse().unwrap()),
                NetworkRequest::new("lan2".parse().unwrap()),
            ],
        })
        .unwrap();
    assert_eq!(fds.len(), 2);
    assert_eq!(a.interfaces[0].network.as_str(), "default");
    assert_eq!(a.interfaces[1].network.as_str(), "lan2");
    assert_ne!(a.interfaces[0].mac, a.interfaces[1].mac);
    let mut fds = fds.into_iter();
    let nic0 = FakeVm::new(fds.next().unwrap(), a.interfaces[0].mac.0);
    let nic1 = FakeVm::new(fds.next().unwrap(), a.interfaces[1].mac.0);
    let (l0, l1) = (nic0.dhcp().expect("lease 0"), nic1.dhcp().expect("lease 1"));
    assert_eq!(l0.ip, Ipv4Addr::new(10, 88, 0, 2));
    assert_eq!(l1.ip, Ipv4Addr::new(10, 90, 0, 2));
    assert_eq!(l1.router, Some(Ipv4Addr::new(10, 90, 0, 1)));
    // Each NIC is on its own bridge.
    let show = sb
        .ns
        .ip(&["link", "show", "dev", a.interfaces[1].ifname.as_str()]);
    assert!(show.contains("master tmbr2"), "{show}");
    // vmwrapper gives QEMU both, in order, each with its MAC.
    let out = sb
        .vmwrapper_as(USER, &GROUP.to_string())
        .args([
            "--id",
            "m2",
            "--net",
            "default",
            "--net",
            "lan2,queues=2",
            "--hypervisor",
            "qemu",
        ])
        .args(["--", "sh", "-c", "echo \"$@\"", "sh"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-netdev tap,id=tmnet0,fd=3 -device virtio-net-pci,netdev=tmnet0,mac="),
        "{stdout}"
    );
    assert!(
        stdout.contains("-netdev tap,id=tmnet1,fds=4:5 -device virtio-net-pci,netdev=tmnet1,mac="),
        "{stdout}"
    );
    assert!(stdout.contains(",mq=on,vectors=6"), "{stdout}");
}

#[test]
fn a_second_daemon_in_the_same_namespace_is_refused() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("twice", GROUP);
    let (_a, _fds) = attach(&sb, "keep", 1);
    // Another state dir and socket, same namespace: its rebuild would wipe the first one's
    // guards, so it must not start.
    let other = sb.dir.join("other.toml");
    std::fs::write(
        &other,
        format!(
            "socket = \"{}\"\nstate_dir = \"{}\"\ngroup = \"{GROUP}\"\n",
            sb.dir.join("other.sock").display(),
            sb.dir.join("other-state").display()
        ),
    )
    .unwrap();
    let (ok, err) = sb.serve_other(&other);
    assert!(!ok);
    assert!(
        err.contains("another tapmanager already runs in this network namespace"),
        "{err}"
    );
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    assert!(
        rules.contains("type filter hook ingress device \"tm"),
        "the first daemon's guards are gone: {rules}"
    );
}

/// The 1,024th port of a bridge is refused by the kernel (EXFULL): here the network's bridge
/// is filled with ports that are not the daemon's. The caller used to get `Internal` and a bare
/// errno; it gets `CapacityExceeded`, the network, the step, the reason and the fix, and
/// nothing is left behind. A client of protocol version 5 gets `HostSetup`, one of version 3
/// `Internal`, with the same message.
#[test]
fn a_full_bridge_is_refused_with_the_step_and_the_fix() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("brfull", GROUP);
    // 1,023 ports, the kernel's most, made with one `ip -batch`.
    let mut batch = String::new();
    for i in 0..1023 {
        batch.push_str(&format!(
            "link add tmfill{i} type veth peer name tmfilp{i}\nlink set tmfill{i} master {BRIDGE}\n"
        ));
    }
    let file = sb.dir.join("fill.batch");
    std::fs::write(&file, batch).unwrap();
    sb.ns.ip(&["-batch", &file.to_string_lossy()]);
    let refused = sb
        .client()
        .attach(AttachRequest {
            vm: "full1".parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        })
        .expect_err("a 1,024th port was taken");
    eprintln!("refused: {refused}");
    assert_eq!(
        refused.code(),
        Some(ErrorCode::CapacityExceeded),
        "{refused}"
    );
    let msg = refused.to_string();
    for part in [
        "network default: ",
        "cannot set up TAP",
        "Exchange full",
        "1,023 ports",
        "another network",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    assert!(sb.all_gone(5), "left behind: {:?}", sb.taps());

    // Older protocol versions, by hand: the hello, then the same attach. Version 5 and 3
    // read errors as version 6 does (only success replies differ, for version 3 and 4).
    for (version, code) in [(5, ErrorCode::HostSetup), (3, ErrorCode::Internal)] {
        let sock = std::os::unix::net::UnixStream::connect(&sb.socket).unwrap();
        protocol::fdpass::write_frame(&sock, &protocol::Hello { version }, &[]).unwrap();
        let (reply, _): (protocol::HelloReply, _) = protocol::fdpass::read_frame(&sock).unwrap();
        assert!(
            matches!(reply, protocol::HelloReply::Accepted(protocol::Hello { version: v }) if v == version),
            "{reply:?}"
        );
        let req = protocol::Request {
            id: 1,
            body: protocol::RequestBody::Attach(AttachRequest {
                vm: "full2".parse().unwrap(),
                networks: vec![NetworkRequest::new("default".parse().unwrap())],
            }),
        };
        protocol::fdpass::write_frame(&sock, &req, &[]).unwrap();
        let (resp, _): (protocol::Response, _) = protocol::fdpass::read_frame(&sock).unwrap();
        let e = resp.body.expect_err("attached on a full bridge");
        assert_eq!(e.code, code, "version {version}");
        assert!(e.message.contains("1,023 ports"), "{}", e.message);
        assert!(sb.all_gone(5), "left behind: {:?}", sb.taps());
    }
}

/// Past one bridge's 1,023 ports, as an operator runs it: 1,100 guests, each a `vmwrapper`
/// process that execs a fake QEMU (a DHCP client that then ARPs and pings its router). Every
/// guest leases a distinct address and reaches the gateway and back, wherever its TAP is (the
/// network's bridge or one of the shard bridges joined to it); when they all exit at once,
/// every TAP, journal entry and guard chain goes.
#[test]
fn eleven_hundred_guests_on_one_bridge_network_are_served_and_removed_on_exit() {
    tapmanager_tests::require_root!();
    const GUESTS: usize = 1100;
    const BATCH: usize = 50;
    // Each guest is a process with pipes here and an fd in the daemon: the soft limit
    // (1,024) is below that, the hard one is what a service gets.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("setrlimit");
    let opts = tapmanager_tests::sandbox::SandboxOptions {
        log_filter: "info".to_owned(),
        ..Default::default()
    };
    let sb = Sandbox::with_options(
        "eleven",
        GROUP,
        &tapmanager_tests::sandbox::wide_networks(),
        opts,
    );
    let out = sb.dir.join("guests.out");
    // Whole lines only here (one write each); vmwrapper's stderr comes in pieces, elsewhere.
    let append = |p: &std::path::Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let out_file = append(&out);
    let err_file = append(&sb.dir.join("guests.err"));
    // One pipe is every guest's stdin: closing its write end is every guest's exit at once.
    let (stdin_r, stdin_w) = nix::unistd::pipe().expect("pipe");
    let mut guests = Guests(Vec::new());
    let lines = |prefix: &str| -> Vec<String> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    for start in (0..GUESTS).step_by(BATCH) {
        for i in start..(start + BATCH).min(GUESTS) {
            let child = Command::new(bin("vmwrapper"))
                .arg("--socket")
                .arg(&sb.socket)
                .args(["--id", &format!("g{i}"), "--hypervisor", "qemu"])
                .args(["--net", "default", "--"])
                .arg(env!("CARGO_BIN_EXE_fake-qemu"))
                .arg("-tm-ping")
                .stdin(Stdio::from(stdin_r.try_clone().unwrap()))
                .stdout(Stdio::from(out_file.try_clone().unwrap()))
                .stderr(Stdio::from(err_file.try_clone().unwrap()))
                .spawn()
                .expect("spawn vmwrapper");
            guests.0.push(child);
        }
        let want = (start + BATCH).min(GUESTS);
        assert!(
            sb.wait_for(120, || lines("TM-PING").len()
                + lines("TM-LEASE-FAIL").len()
                >= want),
            "{} of {want} guests done; their output:\n{}",
            lines("TM-PING").len(),
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        // The host's neighbour table is shared by every namespace, 1,024 entries by default:
        // the checked guests' entries go, so that this test never fills it.
        sb.ns.ip(&["neigh", "flush", "dev", BRIDGE]);
    }
    let leases = lines("TM-LEASE ");
    let addresses: std::collections::HashSet<&str> = leases
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("ip=")))
        .collect();
    assert_eq!(leases.len(), GUESTS, "failed: {:?}", lines("TM-LEASE-FAIL"));
    assert_eq!(addresses.len(), GUESTS, "addresses not distinct");
    let failed: Vec<String> = lines("TM-PING")
        .into_iter()
        .filter(|l| !l.ends_with(" ok"))
        .collect();
    assert!(
        failed.is_empty(),
        "guests that did not reach the gateway: {failed:?}"
    );
    assert_eq!(sb.taps().len(), GUESTS);
    // One packet socket serves every guest's DHCP (a socket per guest made every link event
    // walk all of them), and the daemon holds one descriptor per guest (its caller's pidfd).
    let pid = sb.daemon_pid();
    let packet = std::fs::read_to_string(format!("/proc/{pid}/net/packet")).unwrap();
    assert_eq!(
        packet.lines().skip(1).count(),
        1,
        "packet sockets in the daemon's namespace:\n{packet}"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(
        fds < GUESTS + 100,
        "the daemon holds {fds} descriptors for {GUESTS} guests"
    );
    let bridges = sb.ns.ip(&["-o", "link", "show", "type", "bridge"]);
    assert!(
        bridges.lines().count() > GUESTS / 128,
        "not enough bridges for {GUESTS} guests: {bridges}"
    );

    drop(stdin_w);
    assert!(
        sb.all_gone(120),
        "left behind after the guests exited: {} TAPs, {} journal entries",
        sb.taps().len(),
        sb.journal_entries().len()
    );
    // With its last guest, the namespace's DHCP socket goes too.
    assert!(
        sb.wait_for(10, || std::fs::read_to_string(format!(
            "/proc/{pid}/net/packet"
        ))
        .unwrap()
        .lines()
        .count()
            == 1),
        "the DHCP socket outlived every guest"
    );
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    // Every guest's guard chain (`in_<TAP>`) is gone; the shards' seals stay with the shards.
    assert!(!rules.contains("chain in_"), "guards left: {rules}");
    assert!(
        rules.contains("chain seal_"),
        "the shards lost their seals: {rules}"
    );
    guests.reap();
}

/// Guests on different bridges of one network (the network's own and a shard) are one L2
/// segment: a broadcast from one reaches the other, and the answer comes back.
#[test]
fn guests_on_different_bridges_of_a_network_reach_each_other() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("shards", GROUP, &tapmanager_tests::sandbox::wide_networks());
    let mut client = sb.client();
    let mut vms = Vec::new();
    // Addresses .2 to .127 are on the network's bridge, .128 and up on the first shard.
    for i in 0..128 {
        let (a, mut fds) = client
            .attach(AttachRequest {
                vm: format!("s{i}").parse().unwrap(),
                networks: vec![NetworkRequest::new("default".parse().unwrap())],
            })
            .expect("attach");
        let iface = &a.interfaces[0];
        let ip = iface.address.unwrap().0;
        vms.push((ip, FakeVm::new(fds.remove(0), iface.mac.0)));
    }
    let (ip_a, a) = &vms[0];
    let (ip_b, b) = vms.last().unwrap();
    assert_eq!(*ip_a, Ipv4Addr::new(10, 88, 0, 2));
    assert_eq!(*ip_b, Ipv4Addr::new(10, 88, 0, 129));
    let shard = sb
        .ns
        .ip(&["-o", "link", "show", "master", BRIDGE, "type", "veth"]);
    assert_eq!(shard.lines().count(), 1, "one shard joined: {shard}");
    // A asks for B; B sees the request and answers; A gets the answer.
    a.send(&fakevm::arp_request(a.mac, *ip_a, *ip_b));
    let asked = b.recv_until(Duration::from_secs(3), |f| {
        (f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == ip_b.octets()).then_some(())
    });
    assert!(asked.is_some(), "B never saw A's ARP request");
    let mut reply = fakevm::arp_request(b.mac, *ip_b, *ip_a);
    reply[0..6].copy_from_slice(&a.mac);
    reply[21] = 2; // opcode: reply
    reply[32..38].copy_from_slice(&a.mac);
    b.send(&reply);
    let answered = a.recv_until(Duration::from_secs(3), |f| {
        (f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[21] == 2 && f[6..12] == b.mac)
            .then_some(())
    });
    assert!(answered.is_some(), "A never got B's ARP reply");

    // The attack: B addresses its packets to the shard's own links (the shard bridge, the
    // veth ends), whose MACs anyone can work out or learn. A frame to the end on the
    // network's bridge would go up that bridge's stack past the hairpin rule (which knows only
    // the bridge's own MAC) and be routed back out, making the host resolve an address no
    // guest has; one to the shard bridge or its end would go up the shard bridge's own stack.
    // Sealed: every such frame is dropped at B's TAP, so no neighbour entry appears. The host
    // forwards, as hosts with NAT networks do.
    sb.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let shard_links: Vec<(String, [u8; 6])> = sb
        .ns
        .ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_owned();
            let mac = l.split("link/ether ").nth(1)?.split_whitespace().next()?;
            let mac: Vec<u8> = mac
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            (name.starts_with("tm") && name.len() != 12 && name != BRIDGE)
                .then(|| (name, mac.try_into().unwrap()))
        })
        .collect();
    assert_eq!(shard_links.len(), 3, "{shard_links:?}");
    for (i, (name, mac)) in shard_links.iter().enumerate() {
        let unused = Ipv4Addr::new(10, 88, 200, 1 + i as u8);
        let frame = dhcp::frame::build_ipv4_udp_frame(b.mac, *mac, *ip_b, unused, 4000, 4000, b"x");
        for _ in 0..3 {
            b.send(&frame);
        }
        std::thread::sleep(Duration::from_millis(300));
        let neigh = sb.ns.ip(&["neigh", "show", &unused.to_string()]);
        assert!(
            neigh.trim().is_empty(),
            "a frame to {name}'s MAC was routed: the host resolves {unused}: {neigh}"
        );
    }
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "netdev", "tapmanager"]);
    assert!(
        rules.contains("policy drop"),
        "no seal on the shard bridge: {rules}"
    );

    // `tapmanager down` (the daemon stopped, the guests cut off) removes the shard too.
    drop(vms);
    let mut sb = sb;
    sb.kill();
    let (ok, out) = sb.down(&["--force"]);
    assert!(ok, "{out}");
    let left = sb.ns.ip(&["-o", "link", "show"]);
    assert!(
        !left.contains("master") && left.lines().count() <= 2,
        "links left after down: {left}"
    );
}

/// Guest processes, killed (by pid) and reaped if a test ends early.
struct Guests(Vec<std::process::Child>);

impl Guests {
    fn reap(&mut self) {
        for c in &mut self.0 {
            let _ = c.wait(); // its exit status is not the test's concern
        }
        self.0.clear();
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill(); // already exited is fine
        }
        self.reap();
    }
}

/// A daemon out of file descriptors (its unit's `LimitNOFILE=` too low for its guests) refuses
/// the next attach with `CapacityExceeded` and the fix, never `Internal`, leaves nothing of it
/// behind, and attaches again once guests have left.
#[test]
fn a_daemon_out_of_fds_refuses_with_capacity_exceeded_and_recovers() {
    tapmanager_tests::require_root!();
    let mut sb = Sandbox::with_defaults("nofile", GROUP);
    sb.kill();
    sb.nofile = Some(64);
    sb.start();
    let mut client = sb.client();
    let mut held = Vec::new();
    let refused = loop {
        let vm = format!("fd{}", held.len());
        match client.attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![NetworkRequest::new("default".parse().unwrap())],
        }) {
            Ok((_, fds)) => held.push((vm, fds)),
            Err(e) => break e,
        }
        assert!(held.len() < 64, "64 attaches on 64 fds");
    };
    eprintln!("refused after {}: {refused}", held.len());
    assert_eq!(
        refused.code(),
        Some(ErrorCode::CapacityExceeded),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("file descriptors"),
        "{refused}"
    );
    // Nothing of the refused one: as many TAPs and journal entries as guests held.
    assert!(
        sb.wait_for(5, || sb.taps().len() == held.len()),
        "{:?}",
        sb.taps()
    );
    assert_eq!(sb.journal_entries().len(), held.len());
    // Two guests leave; the next attach is served.
    for (vm, fds) in held.drain(..2) {
        client.release(&vm.parse().unwrap()).unwrap();
        drop(fds);
    }
    assert!(sb.wait_for(10, || sb.journal_entries().len() == held.len()));
    let again = sb.wait_for(10, || {
        client
            .attach(AttachRequest {
                vm: "fd-again".parse().unwrap(),
                networks: vec![NetworkRequest::new("default".parse().unwrap())],
            })
            .is_ok()
    });
    assert!(again, "no attach after guests left");
}
