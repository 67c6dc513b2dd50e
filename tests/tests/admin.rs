//! The admin commands against a real daemon and host (root): `check-config` names the line
//! of each error, `doctor` checks the host, the daemon and the caller's group (and finds a
//! dropping forward chain and a taken port 53), `init` writes a config `check-config` accepts.

use std::process::Command;
use tapmanager_tests::sandbox::{default_networks, Sandbox};

use tapmanager_tests::ids::admin::GROUP;
use tapmanager_tests::ids::admin::USER;

#[test]
fn check_config_says_valid_or_names_the_line_of_each_error() {
    let dir = std::env::temp_dir().join(format!("tmt-checkconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |name: &str, text: &str| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        let out = Command::new(tapmanager_tests::sandbox::bin("tapmanager"))
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let good = format!(
        "group = \"0\"\n{}\n[policy]\nmax_attachments = 4\n",
        default_networks()
    );
    let (ok, said) = check("good.toml", &good);
    assert!(ok, "{said}");
    assert!(
        said.contains("network default: bridge") && said.contains("4 attachments"),
        "{said}"
    );
    let (ok, said) = check(
        "bad.toml",
        "group = \"0\"\n\n[networks.iso]\nkind = \"isolated\"\nrange = \"10.0.0.1/24\"\nuplink = \"eth0\"\n",
    );
    assert!(!ok);
    assert!(
        said.contains("bad.toml:3: network iso: range 10.0.0.1/24: host bits are set"),
        "{said}"
    );
    let (ok, said) = check("typo.toml", "group = \"0\"\n[policy]\nmax_attachment = 1\n");
    assert!(!ok);
    assert!(
        said.contains("typo.toml:3:") && said.contains("max_attachment"),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn doctor_checks_the_host_the_daemon_and_the_callers_group() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::new("doctor", GROUP, &default_networks());
    let doctor = |mut c: Command| {
        let out = c
            .arg("doctor")
            .arg("--config")
            .arg(&sb.config)
            .arg("--socket")
            .arg(&sb.socket)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let tapmanager = tapmanager_tests::sandbox::bin("tapmanager");
    let (_, said) = doctor(Command::new(&tapmanager));
    assert!(said.contains("ok    /dev/net/tun is there"), "{said}");
    assert!(said.contains("is valid: 1 network(s)"), "{said}");
    assert!(said.contains("the daemon answers at"), "{said}");
    assert!(said.contains("1 network(s) ready"), "{said}");
    // A user outside the group is told so, and how to join.
    let (ok, said) = doctor(tapmanager_tests::sandbox::as_user(
        tapmanager_tests::ids::admin::OUTSIDER,
        "",
        &tapmanager,
    ));
    assert!(!ok);
    let outsider = format!(
        "uid {} is not in group",
        tapmanager_tests::ids::admin::OUTSIDER
    );
    assert!(said.contains(&outsider), "{said}");
    assert!(said.contains("fix: `sudo usermod -aG"), "{said}");
    // A member is not.
    let (_, said) = doctor(tapmanager_tests::sandbox::as_user(
        USER,
        &GROUP.to_string(),
        &tapmanager,
    ));
    assert!(said.contains(&format!("uid {USER} may connect")), "{said}");
}

/// The doctor, run in the sandbox's namespace as the host, finds another table's forward
/// chain that drops (Docker's FORWARD policy) and port 53 held by another server.
#[test]
fn doctor_finds_a_dropping_forward_chain_and_port_53_taken() {
    tapmanager_tests::require_root!();
    let networks = "[networks.default]\nkind = \"bridge\"\nbridge = \"tmbr0\"\n\
                    gateway = \"10.88.0.1/24\"\nnat = true\ndns_forward = true\n";
    let mut sb = Sandbox::new("doctorfw", GROUP, networks);
    let doctor = |sb: &Sandbox| {
        let out = Command::new("ip")
            .args(["netns", "exec", &sb.ns.name])
            .arg(tapmanager_tests::sandbox::bin("tapmanager"))
            .arg("doctor")
            .arg("--config")
            .arg(&sb.config)
            .arg("--socket")
            .arg(&sb.socket)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = doctor(&sb);
    assert!(
        said.contains("no other firewall table drops forwarded traffic"),
        "{said}"
    );
    assert!(
        said.contains("port 53 on 10.88.0.1 is free for the DNS forwarder (or is its)"),
        "{said}"
    );
    // Docker's FORWARD policy, as iptables-nft writes it.
    let (ok, out) = sb.ns.exec(&[
        "nft",
        "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    ]);
    assert!(ok, "{out}");
    let said = doctor(&sb);
    assert!(
        said.contains("forwarded traffic is dropped by default in ip filter FORWARD"),
        "{said}"
    );
    assert!(
        said.contains("iptables -I FORWARD -i tmbr0 -j ACCEPT"),
        "{said}"
    );
    // A DNS server on every address, the daemon stopped: it could not start again.
    sb.kill();
    let _held = sb
        .ns
        .run_in(|| std::net::UdpSocket::bind("0.0.0.0:53").expect("bind 0.0.0.0:53"));
    let said = doctor(&sb);
    assert!(said.contains("port 53 is held on every address"), "{said}");
    assert!(said.contains("bind-interfaces"), "{said}");
}

#[test]
fn init_writes_a_config_check_config_accepts_and_keeps_an_existing_one() {
    let dir = std::env::temp_dir().join(format!("tmt-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tapmanager.toml");
    let tapmanager = tapmanager_tests::sandbox::bin("tapmanager");
    let init = |args: &[&str]| {
        Command::new(&tapmanager)
            .arg("init")
            .args(["--group", "0", "--output"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(init(&["--kind", "masquerade", "--uplink", "eth0"])
        .status
        .success());
    let check = Command::new(&tapmanager)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("network default: masquerade"),
        "{said}"
    );
    // An existing file is kept unless --force.
    let again = init(&["--kind", "bridge"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --force"));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("masquerade"));
    assert!(init(&["--kind", "bridge", "--force"]).status.success());
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("kind = \"bridge\""));
    // What a kind needs is asked for.
    let e = Command::new(&tapmanager)
        .args(["init", "--kind", "isolated"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("--kind isolated needs --uplink"));
    std::fs::remove_dir_all(&dir).unwrap();
}
