//! Kernel tier (root): hostile local users, as the outside audit tried them (issue 11). A
//! stranger (a uid outside the daemon's group) squats the old lock's name, opens a guest's
//! namespace pin, or points the shim path at the host's namespace; each attempt is refused
//! or harmless. The daemon runs as users run it by hand: with the test's umask (022).

use protocol::{AttachRequest, NetworkRequest};
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use tapmanager_tests::sandbox::{as_user, default_networks, Netns, Running, Sandbox, UPLINK};

use tapmanager_tests::ids::local_attacks::GROUP;
use tapmanager_tests::ids::local_attacks::MEMBER;
use tapmanager_tests::ids::local_attacks::STRANGER;

/// `program ARGS` as the stranger inside `ns`, started and running until dropped; returns
/// once it printed its first line.
fn stranger_in(ns: &Netns, script: &str) -> Running {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv"])
        .args(as_user(STRANGER, "", std::path::Path::new("/usr/bin/python3")).get_args())
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the stranger's script did not start");
    Running(Some(child))
}

/// What the stranger gets opening `path`: "opened" or the error.
fn stranger_opens(path: &std::path::Path) -> String {
    let out = as_user(STRANGER, "", std::path::Path::new("/usr/bin/python3"))
        .args(["-c", "import sys\ntry:\n open(sys.argv[1]).close(); print('opened')\nexcept OSError as e:\n print(e.strerror)"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_stranger_holding_the_old_lock_name_does_not_keep_the_daemon_from_restarting() {
    tapmanager_tests::require_root!();
    let mut sb = Sandbox::with_defaults("squat", GROUP);
    sb.kill();
    // The audit's attack: bind the abstract name the daemon used as its lock, then wait.
    let _squatter = stranger_in(
        &sb.ns,
        "import socket, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0tapmanager-netns-lock')\nprint('ready', flush=True)\ntime.sleep(120)",
    );
    // Panics with the daemon's log if it does not come up.
    sb.start();
    // The lock that replaced it lives where only root may look.
    let dir = std::path::Path::new("/run/tapmanager-netns");
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    assert_eq!(stranger_opens(dir), "Permission denied");
}

#[test]
fn a_stranger_cannot_open_a_guests_namespace_pin() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"{UPLINK}\"\n"
    );
    let (sb, _lan) = Sandbox::with_lan("pins", GROUP, &networks);
    let (a, _fds) = sb
        .client()
        .attach(AttachRequest {
            vm: "pinned".parse().unwrap(),
            networks: vec![NetworkRequest::new("iso".parse().unwrap())],
        })
        .unwrap();
    let pin = sb
        .dir
        .join("state/netns")
        .join(a.interfaces[0].ifname.as_str());
    assert!(pin.exists(), "no pin at {}", pin.display());
    // The packaged layout: the socket's directory is the state directory, so it is 0755.
    std::fs::set_permissions(sb.dir.join("state"), PermissionsExt::from_mode(0o755)).unwrap();
    // Held open, a pin would keep the guest's namespace alive after its teardown.
    assert_eq!(stranger_opens(&pin), "Permission denied");
    for sub in ["attachments", "netns", "pods", "cni"] {
        let mode = std::fs::metadata(sb.dir.join("state").join(sub))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "state/{sub}");
    }
}

#[test]
fn a_state_dir_others_may_write_is_refused_and_loose_subdirectories_are_tightened() {
    tapmanager_tests::require_root!();
    let mut sb = Sandbox::with_defaults("statedir", GROUP);
    sb.kill();
    let state = sb.dir.join("state");
    // An older daemon's (or umask 022's) netns directory.
    std::fs::set_permissions(state.join("netns"), PermissionsExt::from_mode(0o755)).unwrap();
    sb.start();
    let mode = std::fs::metadata(state.join("netns"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    sb.kill();
    std::fs::set_permissions(&state, PermissionsExt::from_mode(0o777)).unwrap();
    let (ok, err) = sb.serve_other(&sb.config);
    assert!(!ok);
    assert!(
        err.contains("writable by group or others (mode 777)") && err.contains("chmod 0755"),
        "{err}"
    );
}

#[test]
fn the_hosts_namespace_is_never_taken_over_even_by_a_user_who_may_adopt_any() {
    tapmanager_tests::require_root!();
    let networks = format!(
        "{}[networks.pods]\nkind = \"pod\"\nbinding = \"tc-redirect\"\nadopt_any_users = [\"{MEMBER}\"]\n",
        default_networks()
    );
    let sb = Sandbox::new("hostns", GROUP, &networks);
    // The member runs in the host's namespace (pid 1's): its own is the one it passes. The
    // interface named does not exist there, so a daemon that let this through would fail
    // later with another error, having pinned and entered the host's namespace.
    let out = sb
        .vmwrapper_as(MEMBER, &GROUP.to_string())
        .args(["--netns", "/proc/self/ns/net"])
        .args([
            "--net",
            "pods,take=tmnoneXq",
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
        stderr.contains("that is the host's network namespace"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(sb.dir.join("state/netns"))
            .unwrap()
            .next()
            .is_none(),
        "the host's namespace was pinned"
    );
    // A user's own namespace is still accepted: pod.rs's tests take one over.
}

/// The audit's TAP thief, run as the stranger: spins `TUNSETIFF(IFF_MULTI_QUEUE)` on the
/// predicted names given as arguments, and also on every `tm…` name a link notification
/// announces (the birth names too). Whatever it joins it makes its own (`TUNSETOWNER`) and
/// detaches from (`TUNSETQUEUE`), staying tied to it, as a review of the first fix found one
/// could, and keeps trying to attach each such queue again. Prints `ready`, then, once its
/// stdin closes, `joined NAME` per name it joined and `reattached NAME` per TAP it held a
/// queue of once the TAP had its final name (one the daemon handed out).
const TAP_THIEF: &str = r#"
import fcntl, os, socket, struct, sys, threading
TUNSETIFF = 0x400454ca
FLAGS = 0x0002 | 0x1000 | 0x4000 | 0x0100  # IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE
joined, held, stop = [], [], threading.Event()
TUNSETOWNER, TUNSETQUEUE, TUNGETIFF = 0x400454cc, 0x400454d9, 0x800454d2
IFF_ATTACH_QUEUE, IFF_DETACH_QUEUE = 0x0200, 0x0400
def join(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), FLAGS))
    except OSError:
        os.close(fd)
        return
    joined.append(name); held.append((name, fd))
    try:
        fcntl.ioctl(fd, TUNSETOWNER, os.getuid())
        fcntl.ioctl(fd, TUNSETQUEUE, struct.pack("16sH22x", b"", IFF_DETACH_QUEUE))
    except OSError:
        pass
reattached = []
def spin(names):
    while not stop.is_set():
        for n in names:
            join(n)
        for n, fd in list(held):
            try:
                fcntl.ioctl(fd, TUNSETQUEUE, struct.pack("16sH22x", b"", IFF_ATTACH_QUEUE))
            except OSError:
                pass
            # Attached to a TAP under its final name: one the daemon handed out.
            try:
                now = fcntl.ioctl(fd, TUNGETIFF, bytes(40))[:16].split(b"\0")[0].decode()
            except OSError:
                continue
            if not now.startswith("tmq") and now not in reattached:
                reattached.append(now)
def watch():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.bind((0, 1))  # RTMGRP_LINK
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("IH", data, off)
            if kind == 16:  # RTM_NEWLINK: ifinfomsg (16 bytes), then attributes
                a = off + 32
                while a + 4 <= off + length:
                    alen, atype = struct.unpack_from("HH", data, a)
                    if alen < 4:
                        break
                    if atype == 3:  # IFLA_IFNAME
                        name = data[a + 4:a + alen].split(b"\0")[0].decode()
                        if name.startswith("tm"):
                            join(name)
                    a += (alen + 3) & ~3
            if length < 16:
                break
            off += (length + 3) & ~3
threads = [threading.Thread(target=spin, args=(sys.argv[1:],)), threading.Thread(target=watch)]
for t in threads:
    t.start()
print("ready", flush=True)
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
for n in joined:
    print("joined", n, flush=True)
for n in reattached:
    print("reattached", n, flush=True)
"#;

#[test]
fn a_stranger_racing_tap_creation_never_joins_a_guests_multi_queue_tap() {
    tapmanager_tests::require_root!();
    const ATTACHES: usize = 24;
    let sb = Sandbox::with_defaults("tapthief", GROUP);
    let vms: Vec<protocol::VmId> = (0..ATTACHES)
        .map(|i| format!("mq{i}").parse().unwrap())
        .collect();
    // The test's client is root: its TAPs' names are a function of uid 0, the id and NIC 0.
    let predicted: Vec<String> = vms
        .iter()
        .map(|vm| tapmanager::names::tap_name("tm", 0, vm, 0, 0).to_string())
        .collect();
    let mut thief = Command::new("ip")
        .args(["netns", "exec", &sb.ns.name, "setpriv"])
        .args(as_user(STRANGER, "", std::path::Path::new("/usr/bin/python3")).get_args())
        .args(["-c", TAP_THIEF])
        .args(&predicted)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(thief.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let thief = Running(Some(thief));

    let mut client = sb.client();
    let mut queues_seen = Vec::new();
    for (vm, name) in vms.iter().zip(&predicted) {
        let mut nic = NetworkRequest::new("default".parse().unwrap());
        nic.queues = 2;
        let (a, fds) = client
            .attach(AttachRequest {
                vm: vm.clone(),
                networks: vec![nic],
            })
            .unwrap();
        assert_eq!(a.interfaces[0].ifname.as_str(), name);
        assert_eq!(fds.len(), 2);
        // What the kernel says is attached while the guest holds its fds.
        let detail = sb.ns.ip(&["-d", "link", "show", "dev", name]);
        queues_seen.push(
            detail
                .split_whitespace()
                .skip_while(|w| *w != "numqueues")
                .nth(1)
                .unwrap_or("?")
                .to_owned(),
        );
        // The guest runs a moment: time for the thief to attach a queue it kept.
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(fds);
        client.release(vm).unwrap();
    }
    // Closing its stdin makes it report what it joined.
    let mut thief = thief;
    drop(thief.0.as_mut().unwrap().stdin.take());
    let lines: Vec<String> = std::io::BufRead::lines(out).map(Result::unwrap).collect();
    drop(thief);
    let named = |what: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(what).map(str::to_owned))
            .collect()
    };
    let (joined, reattached) = (named("joined "), named("reattached "));
    let (births, finals): (Vec<_>, Vec<_>) = joined.iter().partition(|n| n.starts_with("tmq"));
    eprintln!(
        "local attack: {ATTACHES} two-queue attaches raced by a stranger: {} final-name joins, \
         {} birth-name joins (each caught: that TAP was deleted and made anew), {} queues \
         attached again later",
        finals.len(),
        births.len(),
        reattached.len()
    );
    assert!(finals.is_empty(), "the stranger joined {finals:?}");
    assert!(
        reattached.is_empty(),
        "the stranger got back {reattached:?}"
    );
    assert!(
        queues_seen.iter().all(|q| q == "2"),
        "queues attached per TAP: {queues_seen:?}"
    );
}
