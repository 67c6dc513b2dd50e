//! The package under a real systemd (DESIGN.md §9, tier 4; issue 12): a Debian 12 VM under
//! QEMU (TCG) with systemd as pid 1 installs the freshly built `.deb` with `apt install`, an
//! unprivileged user runs the README's first-screen `vmwrapper` command (the hypervisor being
//! `fake-qemu`, a fake guest that leases by DHCP), and `tests/vm/systemd-tier.sh` checks,
//! with systemd's own tools, socket activation, readiness, the unit's hardening while every
//! kind attaches, the journal, a restart with guests running, systemd-networkd and
//! NetworkManager leaving tapmanager's links alone, `tapmanager doctor`, and what `apt purge`
//! leaves. The VM has no NIC: nothing here touches the machine's network.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::TestDir;
use tapmanager_tests::vm::{qemu_args, BootSpec, Image, TmioDisk, Vm};

/// Every check the in-VM script must report as ok; one missing is a failure.
const CHECKS: &[&str] = &[
    "install",
    "unit-files",
    "socket-enabled-and-listening",
    "service-inactive-before-first-vmwrapper",
    "adduser",
    "readme-command",
    "socket-activation",
    "ready-notify",
    "journal-attach",
    "hardening-default-CapabilityBoundingSet",
    "hardening-default-NoNewPrivileges",
    "hardening-default-RestrictAddressFamilies",
    "hardening-default-LockPersonality",
    "hardening-default-MemoryDenyWriteExecute",
    "hardening-default-RestrictRealtime",
    "hardening-default-RestrictSUIDSGID",
    "hardening-default-RestrictNamespaces",
    "hardening-default-ProtectHostname",
    "hardening-default-SystemCallArchitectures",
    "hardening-default-UMask",
    "hardening-default-LimitNOFILE",
    "hardening-default-host-mount-namespace",
    "hardening-default-host-network-namespace",
    "config-valid",
    "restart-with-all-kinds",
    "still-adopted-after-config-restart",
    "attach-iso",
    "attach-nat",
    "attach-cni",
    "attach-pod",
    "attach-macvtap",
    "hardening-all-kinds-CapabilityBoundingSet",
    "hardening-all-kinds-NoNewPrivileges",
    "hardening-all-kinds-RestrictAddressFamilies",
    "hardening-all-kinds-LockPersonality",
    "hardening-all-kinds-MemoryDenyWriteExecute",
    "hardening-all-kinds-RestrictRealtime",
    "hardening-all-kinds-RestrictSUIDSGID",
    "hardening-all-kinds-RestrictNamespaces",
    "hardening-all-kinds-ProtectHostname",
    "hardening-all-kinds-SystemCallArchitectures",
    "hardening-all-kinds-UMask",
    "hardening-all-kinds-LimitNOFILE",
    "hardening-all-kinds-host-mount-namespace",
    "hardening-all-kinds-host-network-namespace",
    "doctor",
    "restart",
    "restart-adopts",
    "restart-keeps-link-default",
    "restart-keeps-link-iso",
    "restart-keeps-link-nat",
    "restart-keeps-link-cni",
    "restart-keeps-link-mv",
    "restart-keeps-dhcp-default",
    "restart-keeps-dhcp-iso",
    "restart-keeps-dhcp-nat",
    "restart-keeps-dhcp-cni",
    "restart-keeps-dhcp-pod",
    "enable-networkd-nm",
    "networkd-leaves-tm-links",
    "nm-leaves-tm-links",
    "tm-links-unchanged",
    "renew-with-network-managers",
    "guests-released",
    "purge",
    "purge-no-links",
    "purge-no-netns",
    "purge-no-nft-tables",
    "purge-no-state",
    "purge-no-group-files",
    "purge-no-units",
];

fn deb() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no .deb in {}: run scripts/deb.sh (scripts/test.sh does)",
                dir.display()
            )
        })
}

#[test]
fn the_package_under_systemd_in_a_debian_vm() {
    tapmanager_tests::require_root!();
    let tier = Instant::now();
    let image = Image::ensure();

    let dir = TestDir::new("vm-systemd");
    let io = dir.join("io");
    std::fs::create_dir_all(&io).unwrap();
    let deb = deb();
    std::fs::copy(&deb, io.join(deb.file_name().unwrap())).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_fake-qemu"), io.join("fake-qemu")).unwrap();
    let vm_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm");
    std::fs::copy(vm_dir.join("systemd-tier.sh"), io.join("run.sh")).unwrap();
    std::fs::copy(vm_dir.join("guest/lib.sh"), io.join("lib.sh")).unwrap();
    let disk = TmioDisk::build(&io, &dir.join("tmio.img"), 512);

    let console = dir.join("console.log");
    let args = qemu_args(&image, Some(&disk.path), &BootSpec::default());
    let mut vm = Vm::boot_qemu(&args, &console);
    let booted = vm.wait_line("TM-AGENT-START", Duration::from_secs(300));
    let exited = vm.wait(Duration::from_secs(1200));
    let console_text = vm.console_text();
    let log = disk.read_string("/out/run.log").unwrap_or_default();
    let rc = disk.rc();

    let seen = |name: &str| {
        log.lines()
            .find(|l| {
                l.strip_prefix("TM-CHECK ")
                    .and_then(|r| r.strip_prefix(name))
                    .is_some_and(|r| r.starts_with(' '))
            })
            .map(str::to_owned)
    };
    for line in log.lines().filter(|l| {
        l.starts_with("TM-CHECK")
            || l.starts_with("TM-SECURITY-SCORE")
            || l.starts_with("TM-STEP")
            || l.starts_with("TM-TIER-DONE")
    }) {
        println!("{line}");
    }
    if let Some((_, at)) = &booted {
        println!(
            "vm boot: agent started {:.1} s after QEMU",
            at.as_secs_f64()
        );
    }
    println!(
        "systemd tier: {:.1} s in all (image, boot, script, power-off)",
        tier.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = log
        .lines()
        .filter(|l| l.starts_with("TM-CHECK ") && l.split(' ').nth(2) != Some("ok"))
        .map(str::to_owned)
        .collect();
    let missing: Vec<&str> = CHECKS
        .iter()
        .copied()
        .filter(|c| seen(c).is_none())
        .collect();
    let complete = log.lines().any(|l| l.starts_with("TM-TIER-DONE"));
    if exited.is_none() || !failed.is_empty() || !missing.is_empty() || !complete {
        println!("---- console ----\n{console_text}\n---- run.log ----\n{log}");
    }
    assert!(booted.is_some(), "the VM's agent never started");
    assert!(
        exited.is_some(),
        "the VM did not power off in time (killed)"
    );
    assert!(complete, "the in-VM script did not finish (rc {rc:?})");
    assert!(failed.is_empty(), "checks failed:\n{}", failed.join("\n"));
    assert!(missing.is_empty(), "checks not reported: {missing:?}");
}
