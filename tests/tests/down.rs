//! Kernel tier (root): `tapmanager down`, what the package's removal runs once the daemon is
//! stopped. It must refuse while the daemon runs and, removing nothing, while a guest's VM
//! still holds its network; once the VMs are gone (reaped as a start would) it leaves no
//! link, namespace, nftables table or state file of the daemon's, and no bridge it made, but
//! leaves a bridge the admin made alone.

use std::process::{Child, Command, Stdio};
use tapmanager_tests::sandbox::{bin, Sandbox, UPLINK};

use tapmanager_tests::ids::down::GROUP;

/// A vmwrapper holding one NIC on `net` until its stdin closes.
fn caller(sb: &Sandbox, vm: &str, net: &str) -> Child {
    Command::new(bin("vmwrapper"))
        .arg("--socket")
        .arg(&sb.socket)
        .args(["--id", vm, "--net", net, "--hypervisor", "qemu", "--"])
        .args(["sh", "-c", "read x || true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `tapmanager down ARGS` on the sandbox's config, in its namespace.
fn down(sb: &Sandbox, args: &[&str]) -> (bool, String) {
    sb.down(args)
}

/// `tapmanager down --config CONFIG ARGS` in namespace `ns`, by `ip netns exec`.
fn down_in(
    ns: &tapmanager_tests::sandbox::Netns,
    config: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin("tapmanager"))
        .args(["down", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ours(sb: &Sandbox) -> (Vec<String>, Vec<String>) {
    let links = sb
        .ns
        .ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("tm") && n != UPLINK)
        .collect();
    let (_, tables) = sb.ns.exec(&["nft", "list", "tables"]);
    let tables = tables
        .lines()
        .filter(|l| l.contains("tapmanager"))
        .map(str::to_owned)
        .collect();
    (links, tables)
}

#[test]
fn down_refuses_while_guests_run_then_leaves_nothing() {
    tapmanager_tests::require_root!();
    let networks = format!(
        r#"
[networks.default]
kind = "bridge"
bridge = "tmbrdown0"
gateway = "10.88.0.1/24"
nat = true
uplink = "{UPLINK}"

[networks.mine]
kind = "bridge"
bridge = "tmbradmin"
gateway = "10.89.0.1/24"

[networks.iso]
kind = "isolated"
range = "169.254.100.0/22"
uplink = "{UPLINK}"

[networks.nat]
kind = "masquerade"
uplink = "{UPLINK}"
transit = "169.254.104.0/22"
"#
    );
    let (mut sb, _lan) = Sandbox::with_lan("down", GROUP, &networks);
    // An admin's own bridge, there before the daemon: down must leave it.
    sb.kill();
    sb.ns.ip(&["link", "del", "tmbradmin"]);
    sb.ns.ip(&["link", "add", "tmbradmin", "type", "bridge"]);
    let _ = std::fs::remove_file(sb.dir.join("state/bridges/tmbradmin"));
    sb.start();
    let mut vms: Vec<Child> = ["default", "mine", "iso", "nat"]
        .iter()
        .enumerate()
        .map(|(i, net)| caller(&sb, &format!("down{i}"), net))
        .collect();
    assert!(
        sb.wait_for(20, || sb.journal_entries().len() == 4),
        "attached: {:?}\n{}",
        sb.journal_entries(),
        sb.log()
    );
    let before = ours(&sb);
    assert!(!before.1.is_empty(), "no tables to remove: {before:?}");

    // The daemon running: refused.
    let (ok, out) = down(&sb, &[]);
    assert!(!ok && out.contains("the daemon is running"), "{out}");

    // Stopped, but its guests' VMs run: refused, and nothing removed.
    sb.kill();
    let (ok, out) = down(&sb, &[]);
    assert!(
        !ok && out.contains("guests still hold their networks"),
        "{out}"
    );
    assert_eq!(ours(&sb), before, "down removed things while refusing");
    assert_eq!(sb.journal_entries().len(), 4);

    // The VMs exit with no daemon running: down reaps them as a start would.
    for vm in &mut vms {
        drop(vm.stdin.take());
        vm.wait().unwrap();
    }
    let (ok, out) = down(&sb, &[]);
    assert!(ok, "{out}");
    let (links, tables) = ours(&sb);
    assert_eq!(links, ["tmbradmin"], "links left: {links:?}");
    assert!(tables.is_empty(), "tables left: {tables:?}");
    assert!(
        !sb.dir.join("state").exists(),
        "state dir left: {:?}",
        std::fs::read_dir(sb.dir.join("state"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*sb.dir.to_string_lossy()),
        "a namespace pin is still mounted"
    );
}

#[test]
fn down_force_cuts_off_running_guests() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\n"
    );
    let (mut sb, _lan) = Sandbox::with_lan("downf", GROUP, &networks);
    let mut vm = caller(&sb, "forced", "iso");
    assert!(
        sb.wait_for(20, || sb.journal_entries().len() == 1),
        "{}",
        sb.log()
    );
    sb.kill();
    let (ok, out) = down(&sb, &["--force"]);
    assert!(ok, "{out}");
    let (links, tables) = ours(&sb);
    assert!(
        links.is_empty() && tables.is_empty(),
        "{links:?} {tables:?}"
    );
    assert!(!sb.dir.join("state").exists());
    drop(vm.stdin.take());
    vm.wait().unwrap();
}

/// `down` makes nothing: on a host where the daemon never ran it turns no forwarding on and
/// leaves no bridge or table; and run in another network namespace than the daemon's (whose
/// guests it would otherwise take for dead) it refuses, removing nothing.
#[test]
fn down_changes_nothing_where_the_daemon_never_ran_and_refuses_another_namespace() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbrnew0\"\ngateway = \"10.88.0.1/24\"\nnat = true\nuplink = \"{UPLINK}\"\n\
         [networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\n"
    );
    let (mut sb, _lan) = Sandbox::with_lan("downnew", GROUP, &networks);
    let mut vm = caller(&sb, "other1", "iso");
    assert!(
        sb.wait_for(20, || sb.journal_entries().len() == 1),
        "{}",
        sb.log()
    );
    sb.kill();
    let before = ours(&sb);

    // Another namespace, with this config (and so this state dir): refused.
    let elsewhere = tapmanager_tests::sandbox::Netns::new("downelse");
    elsewhere.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let (ok, text) = down_in(&elsewhere, &sb.config, &[]);
    assert!(!ok && text.contains("another network namespace"), "{text}");
    assert_eq!(ours(&sb), before, "down elsewhere removed things here");
    assert_eq!(
        sb.journal_entries().len(),
        1,
        "down elsewhere reaped a live guest"
    );
    // Where no daemon ever ran (a state dir of its own): down succeeds and makes nothing.
    let fresh = sb.dir.join("fresh.toml");
    let text = std::fs::read_to_string(&sb.config).unwrap().replace(
        &*sb.dir.join("state").to_string_lossy(),
        &sb.dir.join("fresh-state").to_string_lossy(),
    );
    std::fs::write(&fresh, text).unwrap();
    let (ok, text) = down_in(&elsewhere, &fresh, &[]);
    assert!(ok, "{text}");
    assert!(
        !sb.dir.join("fresh-state").exists(),
        "down left a state dir"
    );
    let (_, fwd) = elsewhere.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(fwd.trim(), "0", "down turned forwarding on");
    let (_, links) = elsewhere.exec(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("tmbrnew0"), "down made a bridge: {links}");
    let (_, tables) = elsewhere.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("tapmanager"), "down left tables: {tables}");
    drop(vm.stdin.take());
    vm.wait().unwrap();
}
