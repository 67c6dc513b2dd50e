//! End-to-end tier (root): a real QEMU (TCG), started through vmwrapper by an unprivileged
//! user in the daemon's group, boots a Debian kernel with a busybox initramfs built by
//! `tests/guest/build-initramfs.sh`; the guest's `udhcpc` must get the expected lease and
//! ping the gateway, and when QEMU exits the daemon must remove everything.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::{bin, is_root, run, Sandbox, GATEWAY};

const GROUP: u32 = 47_011;
const USER: u32 = 47_012;

/// Builds (or reuses) the guest kernel and initramfs in a directory the test user can read.
fn guest_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("tapmanager-e2e-guest");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/guest/build-initramfs.sh");
    run(Command::new("bash").arg(script).arg(&dir));
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir));
    dir
}

#[test]
fn qemu_guest_leases_and_pings_its_gateway_through_vmwrapper() {
    if !is_root("qemu_guest_leases_and_pings_its_gateway_through_vmwrapper") {
        return;
    }
    assert!(
        Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_ok(),
        "qemu-system-x86_64 missing: run scripts/install-test-deps.sh"
    );
    let guest = guest_dir();
    let sb = Sandbox::with_defaults("qemu", GROUP);
    let started = Instant::now();
    let mut qemu = Command::new("setpriv")
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg(format!("--groups={GROUP}"))
        .arg(bin("vmwrapper"))
        .arg("--socket")
        .arg(&sb.socket)
        .args([
            "--id",
            "e2e",
            "--net",
            "default",
            "--",
            "qemu-system-x86_64",
        ])
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
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmwrapper");
    // While it runs, the attachment belongs to the test user and is listed for root.
    let listed = sb.wait_for(20, || {
        sb.client()
            .list()
            .map(|l| l.iter().any(|a| a.vm.as_str() == "e2e" && a.uid == USER))
            .unwrap_or(false)
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    while qemu.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let timed_out = qemu.try_wait().unwrap().is_none();
    if timed_out {
        let _ = qemu.kill(); // stop it; the assertions below report the timeout
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
    let console = console.replace('\r', "");
    eprintln!("guest ran {:?}", started.elapsed());
    assert!(!timed_out, "QEMU did not finish:\n{console}\n{stderr}");
    assert!(
        listed,
        "attachment not listed while the guest ran:\n{stderr}"
    );
    let lease = console
        .lines()
        .find(|l| l.starts_with("TM-LEASE "))
        .unwrap_or_else(|| panic!("no lease:\n{console}\n{stderr}"));
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
    // QEMU has exited: the daemon saw it through the pidfd and removed everything.
    assert!(
        sb.wait_for(10, || sb.taps().is_empty()
            && sb.journal_entries().is_empty()),
        "left behind: {:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
}
