//! Kernel tier (root): the shim path. A "pod" namespace made by the test (its interface set
//! up by Debian's CNI bridge plugin, or by an unprivileged user in a namespace of their own)
//! is passed to the daemon as an fd; the guest takes over the pod's interface, and gets it
//! back as it was on release. Namespaces the caller does not own are refused.

use protocol::{AttachRequest, NetworkRequest};
use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use tapmanager_tests::cnidir::{
    ipv6_settled, pod_cni, pod_cni_with, pod_state, pod_state6, result_ip6, CniDir,
};
use tapmanager_tests::fakevm::FakeVm;
use tapmanager_tests::fakevm6 as v6;
use tapmanager_tests::sandbox::{run, Netns, Sandbox};

use tapmanager_tests::ids::pod::GROUP;
use tapmanager_tests::ids::pod::USER;

fn pods_network(binding: &str) -> String {
    format!("[networks.pods]\nkind = \"pod\"\nbinding = \"{binding}\"\ndns = [\"10.88.99.53\"]\n")
}

fn take_over(net: &str) -> AttachRequest {
    let mut n = NetworkRequest::new(net.parse().unwrap());
    n.take_over = Some("eth0".parse().unwrap());
    AttachRequest {
        vm: "podvm".parse().unwrap(),
        networks: vec![n],
    }
}

/// Pins, saved pod interfaces and journal entries the daemon holds.
fn held(sb: &Sandbox) -> (usize, usize, usize) {
    let count = |p: std::path::PathBuf| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    (
        count(sb.dir.join("state/netns")),
        count(sb.dir.join("state/pods")),
        sb.journal_entries().len(),
    )
}

/// Releases the pod guest and waits until the daemon holds nothing of it.
fn released(sb: &Sandbox, what: &str) {
    sb.client().release(&"podvm".parse().unwrap()).unwrap();
    assert!(
        sb.wait_for(10, || held(sb) == (0, 0, 0)),
        "{what}: left {:?}",
        held(sb)
    );
}

#[test]
fn a_shim_hands_its_pods_interface_to_the_guest_and_gets_it_back() {
    tapmanager_tests::require_root!();
    for binding in ["tc-redirect", "bridge"] {
        let d = CniDir::new(&format!("pod-{binding}"));
        let mut sb = Sandbox::new("pod", GROUP, &pods_network(binding));
        let pod = Netns::new("pod");
        let result: serde_json::Value =
            serde_json::from_str(&pod_cni(&sb, &d, &pod, "ADD")).unwrap();
        let pod_ip: std::net::Ipv4Addr = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let gw: std::net::Ipv4Addr = result["ips"][0]["gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let before = pod_state(&pod);

        let netns = File::open(format!("/run/netns/{}", pod.name)).unwrap();
        let (a, fds) = sb
            .client()
            .attach_pod(take_over("pods"), netns.as_fd())
            .expect("attach_pod");
        let iface = &a.interfaces[0];
        assert_eq!(iface.address.map(|(ip, _)| ip), Some(pod_ip), "{binding}");
        assert!(
            before.contains(&iface.mac.to_string()),
            "{binding}: the guest has eth0's MAC"
        );
        // While the guest has it, the pod's interface holds no address.
        let during = pod.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(during.trim().is_empty(), "{binding}: {during}");

        let vm = FakeVm::new(fds.into_iter().next().unwrap(), iface.mac.0);
        let lease = vm.dhcp().expect("lease");
        assert_eq!(lease.ip, pod_ip, "{binding}");
        assert_eq!(lease.router, Some(gw), "{binding}");
        assert_eq!(lease.dns, vec![std::net::Ipv4Addr::new(10, 88, 99, 53)]);
        let gw_mac = vm
            .arp(vm.mac, lease.ip, gw)
            .expect("the pod's gateway answers ARP");
        assert!(
            vm.ping(gw_mac, lease.ip, gw),
            "{binding}: the pod's gateway does not answer"
        );

        // A restart adopts it: the guest keeps its network and its lease renews.
        sb.kill();
        sb.start();
        assert!(
            vm.ping(gw_mac, lease.ip, gw),
            "{binding}: lost after restart"
        );
        assert_eq!(vm.dhcp().expect("lease after restart").ip, pod_ip);

        // The network's binding changes while the guest runs: adopted, it is served as it was
        // built (the saved pod interface says how), not as the new binding would build it.
        sb.kill();
        let config = std::fs::read_to_string(&sb.config).unwrap();
        std::fs::write(
            &sb.config,
            config.replace(
                &format!("binding = \"{binding}\""),
                "binding = \"masquerade\"",
            ),
        )
        .unwrap();
        sb.start();
        let again = vm.dhcp().expect("lease after the binding changed");
        assert_eq!(
            (again.ip, again.router, again.server_mac),
            (pod_ip, Some(gw), lease.server_mac),
            "{binding}: served as another binding after the change"
        );
        assert!(
            vm.ping(gw_mac, lease.ip, gw),
            "{binding}: lost after the binding changed"
        );

        // Taking the same interface twice is refused.
        let e = sb
            .client()
            .attach_pod(
                AttachRequest {
                    vm: "again".parse().unwrap(),
                    ..take_over("pods")
                },
                netns.as_fd(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("already taken over"), "{e}");

        drop(vm);
        released(&sb, binding);
        // The pod as it was: address, routes, MAC, MTU, and no link of ours.
        assert_eq!(pod_state(&pod), before, "{binding}");
        let qdisc = pod.ip(&["link", "show", "dev", "eth0"]);
        assert!(!qdisc.contains("ingress"), "{binding}: {qdisc}");
        let (_, tc) = pod.exec(&["tc", "qdisc", "show", "dev", "eth0", "ingress"]);
        assert!(tc.trim().is_empty(), "{binding}: ingress qdisc left: {tc}");
        // And usable: the pod itself reaches its gateway again.
        let (ok, out) = pod.exec(&["busybox", "ping", "-c", "1", "-W", "2", &gw.to_string()]);
        assert!(ok, "{binding}: the pod lost its network: {out}");
        pod_cni(&sb, &d, &pod, "DEL");
    }
}

#[test]
fn a_dual_stack_pods_interface_gives_the_guest_both_families_and_gets_them_back() {
    tapmanager_tests::require_root!();
    for binding in ["tc-redirect", "bridge"] {
        let d = CniDir::new(&format!("pod6-{binding}"));
        let network = pods_network(binding) + "dns6 = [\"fd50::53\"]\n";
        let mut sb = Sandbox::new("pod6", GROUP, &network);
        let pod = Netns::new("pod6");
        let result: serde_json::Value =
            serde_json::from_str(&pod_cni_with(&sb, &d, &pod, "ADD", true)).unwrap();
        let ip6 = |k: &str| -> std::net::Ipv6Addr { result_ip6(&result, k).parse().unwrap() };
        let (own, gw) = (ip6("address"), ip6("gateway"));
        // The pod's gateway address answers once its duplicate address detection is over.
        assert!(
            ipv6_settled(&sb.ns, "tmpodbr"),
            "the pod bridge's address stays tentative"
        );
        assert!(
            ipv6_settled(&pod, "eth0"),
            "the pod's address stays tentative"
        );
        let (before, before6) = (pod_state(&pod), pod_state6(&pod));
        assert!(before6.contains(&own.to_string()), "{before6}");

        let netns = File::open(format!("/run/netns/{}", pod.name)).unwrap();
        let (a, fds) = sb
            .client()
            .attach_pod(take_over("pods"), netns.as_fd())
            .expect("attach_pod");
        let iface = &a.interfaces[0];
        let lease = iface.ipv6.clone().expect("the guest takes the pod's IPv6");
        let router = sb.ns.link_local("tmpodbr");
        assert_eq!(lease.address, (own, 64), "{binding}");
        assert_eq!((lease.gateway, lease.router), (gw, router), "{binding}");
        // While the guest has them, the pod's interface holds no IPv6 at all.
        let during = pod.ip(&["-6", "-o", "addr", "show", "dev", "eth0"]);
        assert!(during.trim().is_empty(), "{binding}: {during}");

        let vm = FakeVm::new(fds.into_iter().next().unwrap(), iface.mac.0);
        vm.dhcp().expect("the IPv4 lease");
        let ra = vm.solicit_router().expect("a router advertisement");
        assert_eq!(
            (ra.router, ra.managed, ra.slla),
            (router, true, None),
            "{binding}"
        );
        assert_eq!(
            ra.rdnss,
            ["fd50::53".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        let l = vm.dhcpv6(true).expect("a DHCPv6 lease");
        assert_eq!(l.address, own, "{binding}");
        assert!(
            vm.ping6_via(own, router, gw),
            "{binding}: the pod's gateway does not answer"
        );

        // A spoofed source never leaves the pod.
        let cap = sb
            .ns
            .run_in(|| tapmanager_tests::fakevm::Capture::open("tmpodbr"));
        let spoofed: std::net::Ipv6Addr = "fd50::99".parse().unwrap();
        for _ in 0..20 {
            vm.send(&v6::marked_udp6(vm.mac, spoofed, (4000, 4001), b"TMSPOOF6"));
            vm.send(&v6::marked_udp6(vm.mac, own, (4000, 4001), b"TMOWN6"));
        }
        let frames = cap.frames(std::time::Duration::from_millis(700));
        use tapmanager_tests::fakevm::count;
        assert_eq!(count(&frames, b"TMOWN6"), 20, "{binding}");
        assert_eq!(
            count(&frames, b"TMSPOOF6"),
            0,
            "{binding}: a spoofed source got out"
        );

        // A restart adopts it: the guest keeps its IPv6.
        sb.kill();
        sb.start();
        assert!(
            vm.ping6_via(own, router, gw),
            "{binding}: IPv6 lost after restart"
        );
        assert_eq!(vm.dhcpv6(false).expect("DHCPv6 after restart").address, own);

        drop(vm);
        released(&sb, binding);
        // The pod as it was, both families, once its address is through detection again.
        assert!(
            ipv6_settled(&pod, "eth0"),
            "{binding}: the pod's address stays tentative"
        );
        assert_eq!(pod_state(&pod), before, "{binding}");
        assert_eq!(pod_state6(&pod), before6, "{binding}");
        let (ok, out) = pod.exec(&["busybox", "ping6", "-c", "1", "-W", "2", &gw.to_string()]);
        assert!(ok, "{binding}: the pod lost its IPv6: {out}");
        pod_cni_with(&sb, &d, &pod, "DEL", true);
    }
}

#[test]
fn a_calico_style_pod_gets_its_onlink_ipv6_route_back() {
    tapmanager_tests::require_root!();
    // Calico's shape, made by hand: /32 and /128 addresses, default routes `onlink` through a
    // gateway no address of the pod's covers.
    let mut sb = Sandbox::new("pod6c", GROUP, &pods_network("tc-redirect"));
    let pod = Netns::new("pod6c");
    let host = format!("tmc6{}", std::process::id() % 100_000);
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        &host,
        "netns",
        &sb.ns.name,
    ]);
    for (ns, link, cmds) in [
        (
            &sb.ns,
            host.as_str(),
            vec![
                vec!["addr", "add", "10.51.0.1/32", "dev", "LINK"],
                vec!["-6", "addr", "add", "fd51::1/128", "dev", "LINK", "nodad"],
                vec!["link", "set", "LINK", "up"],
                vec!["route", "add", "10.51.0.5/32", "dev", "LINK"],
                vec!["-6", "route", "add", "fd51::5/128", "dev", "LINK"],
            ],
        ),
        (
            &pod,
            "eth0",
            vec![
                vec!["addr", "add", "10.51.0.5/32", "dev", "LINK"],
                vec!["-6", "addr", "add", "fd51::5/128", "dev", "LINK", "nodad"],
                vec!["link", "set", "LINK", "up"],
                vec![
                    "route",
                    "add",
                    "default",
                    "via",
                    "10.51.0.1",
                    "dev",
                    "LINK",
                    "onlink",
                ],
                vec![
                    "-6", "route", "add", "default", "via", "fd51::1", "dev", "LINK", "onlink",
                ],
            ],
        ),
    ] {
        for c in cmds {
            let args: Vec<&str> = c
                .iter()
                .map(|a| if *a == "LINK" { link } else { a })
                .collect();
            ns.ip(&args);
        }
    }
    assert!(
        ipv6_settled(&pod, "eth0"),
        "the pod's link-local stays tentative"
    );
    let (before, before6) = (pod_state(&pod), pod_state6(&pod));
    assert!(before6.contains("onlink"), "{before6}");
    let netns = File::open(format!("/run/netns/{}", pod.name)).unwrap();
    let (a, fds) = sb
        .client()
        .attach_pod(take_over("pods"), netns.as_fd())
        .expect("attach_pod");
    let lease = a.interfaces[0]
        .ipv6
        .clone()
        .expect("the guest takes the pod's IPv6");
    assert_eq!(lease.address, ("fd51::5".parse().unwrap(), 128));
    assert_eq!(lease.router, sb.ns.link_local(&host));
    let vm = FakeVm::new(fds.into_iter().next().unwrap(), a.interfaces[0].mac.0);
    assert_eq!(
        vm.dhcpv6(true).expect("a DHCPv6 lease").address,
        lease.address.0
    );
    // A restart on the way: the saved state is read back from disk.
    sb.kill();
    sb.start();
    drop(vm);
    released(&sb, "");
    assert!(
        ipv6_settled(&pod, "eth0"),
        "the pod's addresses stay tentative"
    );
    assert_eq!(pod_state(&pod), before);
    assert_eq!(
        pod_state6(&pod),
        before6,
        "the onlink IPv6 route is not back"
    );
    let (ok, out) = pod.exec(&["busybox", "ping6", "-c", "1", "-W", "2", "fd51::1"]);
    assert!(ok, "the pod lost its IPv6: {out}");
    sb.ns.ip(&["link", "del", &host]);
}

#[test]
fn namespaces_the_caller_does_not_own_are_refused() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("podown", GROUP, &pods_network("tc-redirect"));
    // Root may adopt any pod, but never the daemon's own namespace (nor the host's: pid 1's,
    // which this machine's pid 1 does not let even root open, so that case is not tried here).
    let path = format!("/run/netns/{}", sb.ns.name);
    let f = File::open(&path).unwrap();
    let e = sb
        .client()
        .attach_pod(take_over("pods"), f.as_fd())
        .unwrap_err();
    assert!(e.to_string().contains("the daemon's own"), "{path}: {e}");
    // Not a namespace at all.
    let f = File::open("/dev/null").unwrap();
    let e = sb
        .client()
        .attach_pod(take_over("pods"), f.as_fd())
        .unwrap_err();
    assert!(e.to_string().contains("not a namespace"), "{e}");

    // A user passing a namespace root made (readable under /run/netns): refused.
    let rootpod = Netns::new("rootpod");
    rootpod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "gw0"]);
    let out = sb
        .vmwrapper_as(USER, &GROUP.to_string())
        .arg("--netns")
        .arg(format!("/run/netns/{}", rootpod.name))
        .args([
            "--net",
            "pods,take=eth0",
            "--hypervisor",
            "qemu",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not own that network namespace"),
        "{stderr}"
    );
    assert!(rootpod
        .ip(&["-o", "link", "show", "dev", "eth0"])
        .contains("eth0"));

    // The same user's own namespace (an unprivileged `unshare -Urn`): accepted, and given back.
    let mut own =
        tapmanager_tests::sandbox::as_user(USER, "", std::path::Path::new("/usr/bin/unshare"))
            .args(["-Urn", "sh", "-c"])
            .arg(
                "ip link add eth0 type veth peer name gw0 && ip addr add 10.89.0.2/24 dev eth0 && \
             ip link set eth0 up && ip link set gw0 up && ip route add default via 10.89.0.1 && \
             echo ready && read x",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(own.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let own_ns = format!("/proc/{}/ns/net", own.id());
    let addr_in_own = || {
        run(Command::new("nsenter")
            .arg(format!("--net={own_ns}"))
            .args(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]))
    };
    let before = addr_in_own();
    assert!(before.contains("10.89.0.2/24"), "{before}");
    let mut guest = sb
        .vmwrapper_as(USER, &GROUP.to_string())
        .arg("--netns")
        .arg(&own_ns)
        .args([
            "--id",
            "mine",
            "--net",
            "pods,take=eth0",
            "--hypervisor",
            "qemu",
            "--",
        ])
        .args(["sh", "-c", "read x || true"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listed = sb.wait_for(10, || {
        sb.client().list().is_ok_and(|l| {
            l.iter().any(|a| {
                a.uid == USER
                    && a.interfaces[0].address.map(|(ip, _)| ip.to_string())
                        == Some("10.89.0.2".into())
            })
        })
    });
    drop(guest.stdin.take());
    let status = guest.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(guest.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        listed,
        "the user's own namespace was not taken over: {stderr}"
    );
    assert!(status.success(), "{stderr}");
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left {:?}",
        held(&sb)
    );
    assert_eq!(
        addr_in_own(),
        before,
        "the user's namespace did not get eth0 back"
    );
    drop(own.stdin.take());
    let _ = own.wait();
}

/// The protocol crate's `examples/shim.rs`, built by `cargo test` next to the tests.
fn shim_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().unwrap().parent().unwrap();
    let p = debug.join("examples/shim");
    assert!(
        p.exists(),
        "{} not built: `cargo test --workspace` builds it (or `cargo build --examples`)",
        p.display()
    );
    p
}

#[test]
fn the_protocol_crates_shim_example_runs_the_whole_exchange() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("pod-example");
    let sb = Sandbox::new("podex", GROUP, &pods_network("tc-redirect"));
    let pod = Netns::new("podex");
    pod_cni(&sb, &d, &pod, "ADD");
    let before = pod_state(&pod);
    let out = run(Command::new(shim_example())
        .arg(&sb.socket)
        .arg(format!("/run/netns/{}", pod.name))
        .args(["pods", "eth0"]));
    assert!(
        out.contains("address 10.88.50.2/24, gateway 10.88.50.1"),
        "{out}"
    );
    assert!(out.contains("released shim-"), "{out}");
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "left {:?}",
        held(&sb)
    );
    assert_eq!(pod_state(&pod), before);
    pod_cni(&sb, &d, &pod, "DEL");
}

#[test]
fn a_masquerade_binding_natting_the_guest_behind_the_pods_address() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("pod-masq");
    let networks =
        "[networks.pods]\nkind = \"pod\"\nbinding = \"masquerade\"\nports = [\"tcp:8080:80\"]\n";
    let sb = Sandbox::new("podmasq", GROUP, networks);
    let pod = Netns::new("podmasq");
    pod_cni(&sb, &d, &pod, "ADD");
    let before = pod_state(&pod);
    let (_, forward_before) = pod.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);

    let netns = File::open(format!("/run/netns/{}", pod.name)).unwrap();
    let (a, fds) = sb
        .client()
        .attach_pod(take_over("pods"), netns.as_fd())
        .expect("attach_pod");
    let iface = &a.interfaces[0];
    let guest = std::net::Ipv4Addr::new(10, 0, 2, 2);
    let gw = std::net::Ipv4Addr::new(10, 0, 2, 1);
    assert_eq!(iface.address, Some((guest, 30)));
    // The pod keeps its address: the guest is behind it.
    assert!(pod
        .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
        .contains("10.88.50.2/24"));

    let vm = FakeVm::new(fds.into_iter().next().unwrap(), iface.mac.0);
    let lease = vm.dhcp().expect("lease");
    assert_eq!(
        (lease.ip, lease.prefix_len, lease.router),
        (guest, 30, Some(gw))
    );
    let gw_mac = vm
        .arp(vm.mac, guest, gw)
        .expect("the TAP in the pod answers ARP");
    assert!(
        vm.ping(gw_mac, guest, gw),
        "the masquerade gateway does not answer"
    );
    // Out through the pod's interface, NATed to its address: the CNI gateway answers.
    let cni_gw = std::net::Ipv4Addr::new(10, 88, 50, 1);
    assert!(vm.ping(gw_mac, guest, cni_gw), "NATed egress failed");
    assert!(
        !vm.ping(gw_mac, std::net::Ipv4Addr::new(10, 0, 2, 3), cni_gw),
        "a spoofed source left the pod"
    );
    // The forward: the pod's 8080 reaches the guest's 80.
    // A client in the sandbox (the pod's network), on a thread of its own meanwhile.
    let sandbox = sb.ns.file();
    let connect = std::thread::spawn(move || {
        nix::sched::setns(sandbox.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        std::net::TcpStream::connect_timeout(
            &"10.88.50.2:8080".parse().unwrap(),
            std::time::Duration::from_secs(2),
        )
        .is_ok()
    });
    let syn = vm.recv_until(std::time::Duration::from_secs(3), |f| {
        let tcp_to_guest_80 = f.len() >= 54
            && f[12..14] == [0x08, 0x00]
            && f[23] == 6
            && f[30..34] == guest.octets()
            && f[36..38] == 80u16.to_be_bytes();
        tcp_to_guest_80.then_some(())
    });
    assert!(
        syn.is_some(),
        "the forward did not reach the guest's port 80"
    );
    let _ = connect.join(); // no one listens in the fake guest: the connect times out

    drop(vm);
    released(&sb, "");
    assert_eq!(pod_state(&pod), before);
    let (_, forward_after) = pod.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(forward_after, forward_before, "ip_forward not given back");
    let (_, tables) = pod.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("tapmanager"), "{tables}");
    pod_cni(&sb, &d, &pod, "DEL");
}

#[test]
fn a_masquerade_binding_gives_a_dual_stack_pods_guest_ipv6_behind_nat66() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("pod-masq6");
    let networks =
        "[networks.pods]\nkind = \"pod\"\nbinding = \"masquerade\"\ndns6 = [\"fd50::53\"]\n";
    let mut sb = Sandbox::new("podmasq6", GROUP, networks);
    let pod = Netns::new("podmasq6");
    let result: serde_json::Value =
        serde_json::from_str(&pod_cni_with(&sb, &d, &pod, "ADD", true)).unwrap();
    let pod_gw6: std::net::Ipv6Addr = result_ip6(&result, "gateway").parse().unwrap();
    assert!(ipv6_settled(&pod, "eth0") && ipv6_settled(&sb.ns, "tmpodbr"));
    let (before, before6) = (pod_state(&pod), pod_state6(&pod));
    let forwarding = |pod: &Netns| {
        pod.exec(&["cat", "/proc/sys/net/ipv6/conf/all/forwarding"])
            .1
    };
    let forward6_before = forwarding(&pod);

    let netns = File::open(format!("/run/netns/{}", pod.name)).unwrap();
    let (a, fds) = sb
        .client()
        .attach_pod(take_over("pods"), netns.as_fd())
        .expect("attach_pod");
    let iface = &a.interfaces[0];
    let lease = iface.ipv6.clone().expect("IPv6 behind the pod's address");
    let (me, gw): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
        "fd10:0:2::2".parse().unwrap(),
        "fd10:0:2::1".parse().unwrap(),
    );
    assert_eq!((lease.address, lease.gateway), ((me, 64), gw));
    // The pod keeps its addresses and routes, IPv6 included: the guest is behind them.
    let during6 = pod_state6(&pod);
    for line in before6.lines() {
        assert!(during6.contains(line), "{line:?} gone:\n{during6}");
    }

    let vm = FakeVm::new(fds.into_iter().next().unwrap(), iface.mac.0);
    let ra = vm.solicit_router().expect("a router advertisement");
    assert_eq!(ra.router, lease.router);
    assert_eq!(
        ra.slla,
        Some(tapmanager_tests::fakevm6::host_side(iface.mac.0)),
        "the TAP is the router"
    );
    assert_eq!(
        ra.rdnss,
        ["fd50::53".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    assert_eq!(vm.dhcpv6(true).expect("a DHCPv6 lease").address, me);
    assert!(vm.ping6(me, gw), "the TAP does not answer");
    // Out through the pod's interface, NATed to its IPv6 address: the pod's gateway answers.
    assert!(vm.ping6_via(me, gw, pod_gw6), "NAT66 egress failed");
    assert!(
        !vm.ping6_via("fd10:0:2::3".parse().unwrap(), gw, pod_gw6),
        "a spoofed source left the pod"
    );
    // A restart adopts it as it was.
    sb.kill();
    sb.start();
    assert!(vm.ping6_via(me, gw, pod_gw6), "NAT66 lost after restart");

    drop(vm);
    released(&sb, "");
    assert_eq!(pod_state(&pod), before);
    assert_eq!(pod_state6(&pod), before6);
    assert_eq!(
        forwarding(&pod),
        forward6_before,
        "IPv6 forwarding not given back"
    );
    let (_, tables) = pod.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("tapmanager"), "{tables}");
    pod_cni_with(&sb, &d, &pod, "DEL", true);
}

#[test]
fn a_pod_whose_shim_died_while_the_daemon_was_down_gets_its_interface_back() {
    tapmanager_tests::require_root!();
    let d = CniDir::new("pod-crash");
    let mut sb = Sandbox::new("podcrash", GROUP, &pods_network("tc-redirect"));
    let pod = Netns::new("podcrash");
    pod_cni(&sb, &d, &pod, "ADD");
    let before = pod_state(&pod);
    let mut shim = Command::new(tapmanager_tests::sandbox::bin("vmwrapper"))
        .arg("--socket")
        .arg(&sb.socket)
        .arg("--netns")
        .arg(format!("/run/netns/{}", pod.name))
        .args([
            "--id",
            "gone",
            "--net",
            "pods,take=eth0",
            "--hypervisor",
            "qemu",
            "--",
        ])
        .args(["sh", "-c", "read x || true"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        sb.wait_for(10, || held(&sb) == (1, 1, 1)),
        "{:?}",
        held(&sb)
    );
    assert_ne!(pod_state(&pod), before, "eth0 was not taken over");
    sb.kill();
    drop(shim.stdin.take());
    shim.wait().unwrap();
    sb.start();
    assert_eq!(held(&sb), (0, 0, 0));
    assert_eq!(pod_state(&pod), before, "the pod did not get eth0 back");
    pod_cni(&sb, &d, &pod, "DEL");
}

#[test]
fn a_take_over_of_an_interface_the_pod_does_not_have_is_the_callers_mistake() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("podnone", GROUP, &pods_network("tc-redirect"));
    // A pod namespace with nothing but its loopback: no eth0 to take over.
    let pod = Netns::new("podnone");
    let netns = File::open(format!("/run/netns/{}", pod.name)).unwrap();
    let err = sb
        .client()
        .attach_pod(take_over("pods"), netns.as_fd())
        .expect_err("an absent interface was taken over");
    let protocol::ClientError::Server(e) = &err else {
        panic!("not the daemon's refusal: {err}");
    };
    assert_eq!(e.code, protocol::ErrorCode::InvalidRequest, "{}", e.message);
    assert!(
        e.message.contains("NIC 0") && e.message.contains("the pod's eth0 is not there"),
        "{}",
        e.message
    );
    // Nothing of it stays: no pin, no saved interface, no journal entry.
    assert!(
        sb.wait_for(10, || held(&sb) == (0, 0, 0)),
        "{:?}",
        held(&sb)
    );
}
