//! End-to-end tier (root): a real QEMU (TCG), started through vmwrapper by an unprivileged
//! user in the daemon's group, boots a Debian kernel with a busybox initramfs built by
//! `tests/guest/build-initramfs.sh`; the guest's `udhcpc` must get the expected lease and
//! ping the gateway, and when QEMU exits the daemon must remove everything.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::{run, Sandbox, GATEWAY, UPLINK};

use tapmanager_tests::ids::qemu::GROUP;
use tapmanager_tests::ids::qemu::USER;

/// Builds (or reuses) the guest kernel and initramfs in a directory the test user can read.
fn guest_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("tapmanager-e2e-guest");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/guest/build-initramfs.sh");
    run(Command::new("bash").arg(script).arg(&dir));
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir));
    dir
}

/// Boots the guest through vmwrapper as `USER` on `net`; returns its console once QEMU exits.
/// Also checks that the attachment was listed for `USER` while the guest ran.
fn boot(sb: &Sandbox, vm: &str, net: &str, append: &str) -> String {
    let guest = guest_dir();
    let started = Instant::now();
    let mut qemu = sb
        .vmwrapper_as(USER, &GROUP.to_string())
        .args(["--id", vm, "--net", net, "--", "qemu-system-x86_64"])
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(guest.join("vmlinuz"))
        .arg("-initrd")
        .arg(guest.join("initramfs.cpio.gz"))
        .arg("-append")
        .arg(format!("console=ttyS0 quiet panic=-1 {append}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmwrapper");
    let listed = sb.wait_for(20, || {
        sb.client()
            .list()
            .map(|l| l.iter().any(|a| a.vm.as_str() == vm && a.uid == USER))
            .unwrap_or(false)
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    while qemu.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let timed_out = qemu.try_wait().unwrap().is_none();
    if timed_out {
        let _ = qemu.kill(); // stop it; the assertion below reports the timeout
        let _ = qemu.wait();
    }
    let mut console = String::new();
    qemu.stdout
        .take()
        .unwrap()
        .read_to_string(&mut console)
        .unwrap();
    let mut stderr = String::new();
    qemu.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("guest {vm} ran {:?}", started.elapsed());
    assert!(!timed_out, "QEMU did not finish:\n{console}\n{stderr}");
    assert!(
        listed,
        "attachment not listed while the guest ran:\n{stderr}"
    );
    console.replace('\r', "")
}

fn lease_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.starts_with("TM-LEASE "))
        .unwrap_or_else(|| panic!("no lease:\n{console}"))
}

fn assert_gone(sb: &Sandbox) {
    // QEMU has exited: the daemon saw it through the pidfd and removed everything.
    assert!(
        sb.all_gone(10),
        "left behind: {:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
}

#[test]
fn qemu_guest_leases_and_pings_its_gateway_through_vmwrapper() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("qemu", GROUP);
    let console = boot(&sb, "e2e", "default", "");
    let lease = lease_line(&console);
    assert!(lease.contains("ip=10.88.0.2 "), "{lease}");
    assert!(lease.contains("mask=24 "), "{lease}");
    assert!(lease.contains(&format!("router={GATEWAY} ")), "{lease}");
    assert!(lease.contains("dns=10.88.0.1 "), "{lease}");
    assert!(lease.contains("mtu=1400 "), "{lease}");
    assert!(lease.contains(&format!("serverid={GATEWAY}")), "{lease}");
    assert!(
        console.contains(&format!("TM-PING-OK {GATEWAY}")),
        "no ping:\n{console}"
    );
    assert_gone(&sb);
}

/// A guest on an isolated network with `binding`: it leases the first /30, pings its
/// gateway and a LAN host, not the dropped range, and leaves nothing behind.
fn isolated_guest_reaches_the_lan(tag: &str, binding: &str) {
    let networks = format!(
        "[networks.iso]\nkind = \"isolated\"\nbinding = \"{binding}\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\ndrop = [\"192.168.78.0/24\"]\n"
    );
    let (sb, _lan) = Sandbox::with_lan(tag, GROUP, &networks);
    let console = boot(
        &sb,
        &format!("e2e{tag}"),
        "iso",
        "tm.ping=192.168.77.2,192.168.78.1",
    );
    let lease = lease_line(&console);
    assert!(
        lease.contains("ip=169.254.100.2 mask=30 router=169.254.100.1 "),
        "{lease}"
    );
    assert!(console.contains("TM-PING-OK 169.254.100.1"), "{console}");
    assert!(console.contains("TM-PING-OK 192.168.77.2"), "{console}");
    assert!(console.contains("TM-PING-FAIL 192.168.78.1"), "{console}");
    assert_gone(&sb);
    assert!(!sb.dir.join("state/netns").read_dir().unwrap().any(|_| true));
}

#[test]
fn qemu_guest_on_an_isolated_network_reaches_the_lan() {
    tapmanager_tests::require_root!();
    isolated_guest_reaches_the_lan("qemuiso", "routed");
}

/// A guest on a routed network: busybox's udhcpc takes the /32 and option 121's on-link route
/// to its gateway; it pings the gateway and a LAN host through NAT, not the dropped range, and
/// leaves nothing behind.
#[test]
fn qemu_guest_on_a_routed_network_reaches_the_lan() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.fleet]\nkind = \"routed\"\ndevice = \"tmrt0\"\ngateway = \"10.90.0.1/16\"\n\
         nat = true\nuplink = \"{UPLINK}\"\ndrop = [\"192.168.78.0/24\"]\n"
    );
    let (sb, _lan) = Sandbox::with_lan("qemurouted", GROUP, &networks);
    let console = boot(
        &sb,
        "e2erouted",
        "fleet",
        "tm.dhcpopt=staticroutes tm.ping=192.168.77.2,192.168.78.1",
    );
    let lease = lease_line(&console);
    assert!(
        lease.contains("ip=10.90.0.2 mask=32 router=10.90.0.1 "),
        "{lease}"
    );
    assert!(
        console.contains("staticroutes=10.90.0.1/32,0.0.0.0,0.0.0.0/0,10.90.0.1"),
        "{console}"
    );
    assert!(console.contains("TM-PING-OK 10.90.0.1"), "{console}");
    assert!(console.contains("TM-PING-OK 192.168.77.2"), "{console}");
    assert!(console.contains("TM-PING-FAIL 192.168.78.1"), "{console}");
    assert_gone(&sb);
}

#[test]
fn qemu_guest_on_a_masquerade_network_reaches_the_lan() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.nat]\nkind = \"masquerade\"\nuplink = \"{UPLINK}\"\nports = [\"tcp:8080:80\"]\n"
    );
    let (sb, _lan) = Sandbox::with_lan("qemumasq", GROUP, &networks);
    let console = boot(&sb, "e2emasq", "nat", "tm.ping=192.168.77.2");
    let lease = lease_line(&console);
    assert!(
        lease.contains("ip=10.0.2.2 mask=30 router=10.0.2.1 "),
        "{lease}"
    );
    assert!(console.contains("TM-PING-OK 10.0.2.1"), "{console}");
    assert!(console.contains("TM-PING-OK 192.168.77.2"), "{console}");
    assert_gone(&sb);
}

/// The desktop default network as shipped (NAT out, DNS forwarded): the guest looks a name
/// up through its gateway, which asks resolved's stub (a stand-in on 127.0.0.53 in the
/// "host"), and pings the answer, past the host's default route, through NAT.
#[test]
fn qemu_guest_on_the_default_network_resolves_a_name_and_reaches_it_through_nat() {
    tapmanager_tests::require_root!();
    let dir = tapmanager_tests::sandbox::TestDir::new("qemudesk");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.53\n").unwrap();
    let networks = format!(
        "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\ngateway = \"{GATEWAY}/24\"\n\
         nat = true\ndns_forward = true\nresolv_conf = \"{}\"\n",
        resolv.display()
    );
    let (sb, _lan) = Sandbox::with_lan("qemudesk", GROUP, &networks);
    sb.ns
        .ip(&["route", "add", "default", "via", "192.168.77.2"]);
    let stub = tapmanager_tests::fakedns::FakeDns::start(
        &sb.ns,
        "127.0.0.53".parse().unwrap(),
        "www.example.test",
        "192.168.78.1".parse().unwrap(),
    );
    let console = boot(&sb, "e2edesk", "default", "tm.resolve=www.example.test");
    let lease = lease_line(&console);
    assert!(lease.contains(&format!("dns={GATEWAY} ")), "{lease}");
    assert!(
        console.contains("TM-RESOLVE www.example.test 192.168.78.1"),
        "{console}"
    );
    assert!(console.contains("TM-PING-OK 192.168.78.1"), "{console}");
    assert!(stub.asked() >= 1);
    assert_gone(&sb);
}

#[test]
fn qemu_guest_on_a_tc_redirect_isolated_network_reaches_the_lan() {
    tapmanager_tests::require_root!();
    isolated_guest_reaches_the_lan("qemutc", "tc-redirect");
}

/// busybox's `udhcpd` serving the test LAN (the LAN's own DHCP, which a macvtap guest uses);
/// killed by pid when dropped.
struct LanDhcp {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl LanDhcp {
    fn start(lan: &tapmanager_tests::sandbox::Netns) -> LanDhcp {
        let dir = std::env::temp_dir().join(format!("{}-udhcpd", lan.name));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("udhcpd.conf");
        std::fs::write(
            &conf,
            format!(
                "start 192.168.77.50\nend 192.168.77.50\ninterface lan0\nlease_file {}\n\
                 pidfile {}\noption subnet 255.255.255.0\noption router 192.168.77.2\n\
                 option lease 600\n",
                dir.join("leases").display(),
                dir.join("pid").display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lan.name, "busybox", "udhcpd", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("udhcpd");
        LanDhcp { child, dir }
    }
}

impl Drop for LanDhcp {
    fn drop(&mut self) {
        let _ = self.child.kill(); // by pid; already gone is fine
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir); // best effort
    }
}

#[test]
fn qemu_guest_on_a_macvtap_network_leases_from_the_lan() {
    tapmanager_tests::require_root!();
    let networks = format!("[networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n");
    let (sb, lan) = Sandbox::with_lan("qemumv", GROUP, &networks);
    let _dhcp = LanDhcp::start(&lan);
    let console = boot(&sb, "e2emv", "mv", "");
    let lease = lease_line(&console);
    // The lease comes from the LAN's udhcpd, not from tapmanager.
    assert!(
        lease.contains("ip=192.168.77.50 mask=24 router=192.168.77.2 "),
        "{lease}"
    );
    assert!(lease.contains("serverid=192.168.77.2"), "{lease}");
    assert!(console.contains("TM-PING-OK 192.168.77.2"), "{console}");
    assert_gone(&sb);
}

#[test]
fn qemu_guest_on_a_cni_network_leases_the_plugins_address() {
    tapmanager_tests::require_root!();
    use tapmanager_tests::cnidir::{bridge_list, CniDir};
    let d = CniDir::new("qemu");
    d.write(
        "tmqemu",
        bridge_list(&d, "tmqemu", "1.0.0", "tmcniq", "10.91.0.0/24", &[]),
    );
    let sb = Sandbox::new("qemucni", GROUP, &d.network("pod", "tmqemu", ""));
    let console = boot(&sb, "e2ecni", "pod", "");
    let lease = lease_line(&console);
    // The address host-local allocated (the first of the range), the bridge plugin's gateway.
    assert!(
        lease.contains("ip=10.91.0.2 mask=24 router=10.91.0.1 "),
        "{lease}"
    );
    assert!(console.contains("TM-PING-OK 10.91.0.1"), "{console}");
    assert_gone(&sb);
    assert!(
        d.allocated("tmqemu").is_empty(),
        "DEL did not free the address"
    );
}
