//! QEMU's own way onto a bridge, for `--kind scale`: `qemu-bridge-helper --use-vnet --br=BR
//! --fd=N`, run as QEMU runs it (fork + exec, the helper makes a TAP, enslaves it, sends its
//! fd back over the socket N and exits), the same sequence of attaches up to one bridge's
//! cap, in a namespace of its own with a bridge like the daemon's. It adds no guards, no DHCP
//! and no journal; its TAPs go when their fds close.
//!
//! The helper reads which bridges it may use from `/etc/qemu/bridge.conf` (a path built into
//! it). If that file does not exist, the benchmark writes one allowing only its bridge and
//! removes it afterwards; if it exists, the comparison is skipped (an admin's file is not
//! touched).

use super::*;
use sendfd::RecvWithFd;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;

const HELPER: &str = "/usr/lib/qemu/qemu-bridge-helper";
const ACL: &str = "/etc/qemu/bridge.conf";
const HELPER_BRIDGE: &str = "tmbrhelp0";

/// `/etc/qemu/bridge.conf`, written here and removed on drop.
struct Acl;

impl Drop for Acl {
    fn drop(&mut self) {
        if std::fs::read_to_string(ACL).is_ok_and(|s| s == acl_text()) {
            let _ = std::fs::remove_file(ACL); // gone already is fine
            let _ = std::fs::remove_dir("/etc/qemu"); // only if empty, as it was
        }
    }
}

fn acl_text() -> String {
    format!("# written by tapmanager's bench-attach, removed when it ends\nallow {HELPER_BRIDGE}\n")
}

/// One helper run: its TAP's fd and the time from fork to the fd received.
fn helper_attach() -> (Duration, OwnedFd) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    // The helper's end must survive its exec: the number goes into its argv, as QEMU does.
    nix::fcntl::fcntl(
        &theirs,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .expect("clear FD_CLOEXEC");
    let t = Instant::now();
    let out = Command::new(HELPER)
        .arg("--use-vnet")
        .arg(format!("--br={HELPER_BRIDGE}"))
        .arg(format!("--fd={}", theirs.as_raw_fd()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run qemu-bridge-helper");
    drop(theirs);
    assert!(
        out.status.success(),
        "qemu-bridge-helper failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut byte = [0u8; 16];
    let mut fds = [0 as std::os::fd::RawFd; 1];
    let (_, n) = ours
        .recv_with_fd(&mut byte, &mut fds)
        .expect("receive the TAP fd");
    let took = t.elapsed();
    assert_eq!(n, 1, "qemu-bridge-helper sent no fd");
    // SAFETY: recv_with_fd just received this fd for us; nothing else owns it.
    (took, unsafe { OwnedFd::from_raw_fd(fds[0]) })
}

/// qemu-bridge-helper attaching `n` TAPs (at most a bridge's 1,023) one after another, all
/// held until the end; `None` (with the reason printed) when it cannot run here.
pub(crate) fn bench_helper(n: usize) -> Option<Samples> {
    if !Path::new(HELPER).exists() {
        println!("qemu-bridge-helper: not compared ({HELPER} is not installed)");
        return None;
    }
    if Path::new(ACL).exists() {
        println!(
            "qemu-bridge-helper: not compared ({ACL} exists, and an admin's file is not touched)"
        );
        return None;
    }
    std::fs::create_dir_all("/etc/qemu").expect("/etc/qemu");
    std::fs::write(ACL, acl_text()).expect("write the helper's ACL");
    let _acl = Acl;
    let ns = Netns::new("bench-helper");
    ns.ip(&["link", "add", HELPER_BRIDGE, "type", "bridge"]);
    ns.ip(&["link", "set", HELPER_BRIDGE, "mtu", &MTU.to_string(), "up"]);
    let n = n.min(1023);
    // The helpers are started from a thread inside the namespace: they are born in it.
    let samples = ns.run_in(move || {
        let mut s = Samples::new(format!("qemu-bridge-helper, {n} TAPs held on one bridge"));
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            check_interrupted();
            let (took, fd) = helper_attach();
            s.push(took);
            held.push(fd);
        }
        s
    });
    Some(samples)
}
