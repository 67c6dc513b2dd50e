//! vmwrapper's errors a user can act on, without a daemon.

use std::process::Command;
use tapmanager_tests::sandbox::bin;

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
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --hypervisor qemu"));
    let out = Command::new(bin("vmwrapper"))
        .args(["--net", "default,queues=zero", "--", "qemu-system-x86_64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: vmwrapper"));
}
