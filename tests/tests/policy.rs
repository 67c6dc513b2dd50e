//! Kernel tier (root): the `[policy]` quotas. A group member may hold only so many
//! attachments and queues; past that, an attach is refused with `QuotaExceeded` and changes
//! nothing. Root is not counted.

use std::process::{Child, Command, Stdio};
use tapmanager_tests::sandbox::{default_networks, Sandbox};

use tapmanager_tests::ids::policy::GROUP;
use tapmanager_tests::ids::policy::USER;

/// vmwrapper as `USER` holding `vm` on `default` (`net` spec) until its stdin closes.
fn holder(sb: &Sandbox, vm: &str, net: &str) -> Command {
    let mut c = sb.vmwrapper_as(USER, &GROUP.to_string());
    c.args(["--id", vm, "--hypervisor", "qemu", "--net", net, "--"])
        .args(["sh", "-c", "read x || true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn refused(mut c: Command) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn end(mut c: Child) {
    drop(c.stdin.take());
    c.wait().unwrap();
}

#[test]
fn a_member_holds_at_most_its_quota_of_attachments_and_queues() {
    tapmanager_tests::require_root!();
    let config = format!(
        "{}\n[policy]\nmax_attachments = 2\nmax_queues = 3\n",
        default_networks()
    );
    let sb = Sandbox::new("quota", GROUP, &config);
    // More queues than the quota in one request: refused, nothing made.
    let e = refused(holder(&sb, "wide", "default,queues=4"));
    assert!(
        e.contains("QuotaExceeded") && e.contains("max_queues"),
        "{e}"
    );
    assert!(sb.taps().is_empty());

    let a = holder(&sb, "q1", "default").spawn().unwrap();
    let b = holder(&sb, "q2", "default,queues=2").spawn().unwrap();
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 2));
    // A third attachment, and one more queue: both past the quota.
    let e = refused(holder(&sb, "q3", "default"));
    assert!(
        e.contains("QuotaExceeded") && e.contains("max_attachments"),
        "{e}"
    );
    assert_eq!(sb.taps().len(), 2, "a refused attach left a TAP");
    // Root is not counted.
    let mut root = sb.client();
    let (_, fds) = root
        .attach(protocol::AttachRequest {
            vm: "rootvm".parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
        })
        .expect("root is not limited");
    drop(fds);
    root.release(&"rootvm".parse().unwrap()).unwrap();
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 2));
    // Releasing one makes room again.
    end(a);
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 1));
    let c = holder(&sb, "q4", "default").spawn().unwrap();
    assert!(sb.wait_for(10, || sb.journal_entries().len() == 2));
    end(b);
    end(c);
    assert!(sb.all_gone(10));
}
