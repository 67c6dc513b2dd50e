//! Kernel tier (root): what the daemon keeps of root's power. Every thread's effective,
//! permitted and bounding capability sets, read from `/proc`, must hold exactly what the
//! configured kinds use, and nothing else.

use tapmanager_tests::sandbox::{is_root, Sandbox, UPLINK};

const GROUP: u32 = 47_071;
const NET_ADMIN: u64 = 1 << 12;
const NET_RAW: u64 = 1 << 13;
const SYS_ADMIN: u64 = 1 << 21;
const MKNOD: u64 = 1 << 27;

/// Each thread's (CapEff, CapPrm, CapBnd, CapInh) of the daemon.
fn thread_caps(sb: &Sandbox) -> Vec<(String, [u64; 4])> {
    let tasks = format!("/proc/{}/task", sb.daemon_pid());
    let mut out = Vec::new();
    for t in std::fs::read_dir(tasks).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        let get = |set: &str| {
            let line = status.lines().find(|l| l.starts_with(set)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let name = status.lines().next().unwrap_or("").to_owned();
        out.push((
            name,
            [get("CapEff"), get("CapPrm"), get("CapBnd"), get("CapInh")],
        ));
    }
    assert!(!out.is_empty());
    out
}

fn assert_exactly(sb: &Sandbox, what: &str, want: u64) {
    for (thread, sets) in thread_caps(sb) {
        for (set, got) in ["effective", "permitted", "bounding", "inheritable"]
            .iter()
            .zip(sets)
        {
            assert_eq!(
                got, want,
                "{what}: thread {thread}: {set} set {got:#x}, expected {want:#x}"
            );
        }
    }
}

#[test]
fn every_thread_keeps_exactly_what_the_configured_kinds_use() {
    if !is_root("every_thread_keeps_exactly_what_the_configured_kinds_use") {
        return;
    }
    // Bridges: links, nftables, packet sockets.
    let sb = Sandbox::with_defaults("capsbr", GROUP);
    assert_exactly(&sb, "bridge", NET_ADMIN | NET_RAW);
    drop(sb);
    // Namespaces (isolated, masquerade, CNI, pod): also mount and setns.
    let pods = "[networks.pods]\nkind = \"pod\"\n";
    let sb = Sandbox::new("capspod", GROUP, pods);
    assert_exactly(&sb, "pod", NET_ADMIN | NET_RAW | SYS_ADMIN);
    drop(sb);
    // macvtap: its sysfs in a private mount namespace, and device nodes of its own.
    let mv = format!("[networks.mv]\nkind = \"macvtap\"\nlower = \"{UPLINK}\"\n");
    let (sb, _lan) = Sandbox::with_lan("capsmv", GROUP, &mv);
    assert_exactly(&sb, "macvtap", NET_ADMIN | NET_RAW | SYS_ADMIN | MKNOD);
}

#[test]
fn socket_activation_and_readiness_as_systemd_does_them() {
    if !is_root("socket_activation_and_readiness_as_systemd_does_them") {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    use tapmanager_tests::sandbox::{bin, Netns};
    // A config whose own socket path is elsewhere: the daemon must use the passed one.
    let ns = Netns::new("sdact");
    let dir = std::env::temp_dir().join(format!("tmt-sdact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tapmanager.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nstate_dir = \"{}\"\ngroup = \"0\"\n",
            dir.join("not-this.sock").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let activated = dir.join("activated.sock");
    let notify = UnixDatagram::bind(dir.join("notify")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // systemd's own helper: it holds the socket and starts the daemon, as a .socket unit does.
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "systemd-socket-activate", "-l"])
        .arg(&activated)
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            dir.join("notify").display()
        ))
        .arg(bin("tapmanager"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first connection starts the daemon on the passed socket; it then says it is ready.
    let mut connected = None;
    for _ in 0..200 {
        if let Ok(c) = protocol::Client::connect(&activated) {
            connected = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = connected.expect("no daemon behind the activated socket");
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no READY=1 from the daemon");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(client.list().unwrap().is_empty());
    assert!(
        !dir.join("not-this.sock").exists(),
        "it bound its own socket too"
    );
    let _ = child.kill(); // by pid: systemd-socket-activate exec'd the daemon
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
