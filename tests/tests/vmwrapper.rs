//! vmwrapper's errors a user can act on, without a daemon.

use std::process::Command;
use tapmanager_tests::sandbox::{bin, is_root, Sandbox};

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

#[test]
fn unknown_hypervisor_and_bad_arguments_are_explained() {
    let out = Command::new(bin("vmwrapper"))
        .args(["--net", "default", "--", "/usr/bin/some-emulator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pass --hypervisor (qemu, qemu-nic, cloud-hypervisor, crosvm)"),
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("Firecracker opens TAPs by name only"));
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
    if !is_root("each_adapter_puts_the_fds_where_its_argv_says") {
        return;
    }
    let sb = Sandbox::with_defaults("adapters", 47_131);
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
