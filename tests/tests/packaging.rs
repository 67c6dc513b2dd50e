//! The Debian package built by `scripts/deb.sh` (scripts/test.sh builds it first): what it
//! installs where, its conffile, its dependencies, and that its daemon has no crash points.

use std::path::PathBuf;
use std::process::Command;

fn deb() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
        rd.flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
    });
    found.unwrap_or_else(|| {
        panic!(
            "no .deb in {}: run scripts/deb.sh (scripts/test.sh does)",
            dir.display()
        )
    })
}

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_installs_binaries_units_config_and_snippets() {
    let files = dpkg_deb(&["-c"]);
    for path in [
        "./usr/bin/tapmanager",
        "./usr/bin/vmwrapper",
        "./etc/tapmanager/tapmanager.toml",
        "./usr/lib/systemd/system/tapmanager.service",
        "./usr/lib/systemd/system/tapmanager.socket",
        "./usr/lib/sysusers.d/tapmanager.conf",
        "./usr/lib/tmpfiles.d/tapmanager.conf",
        "./usr/lib/systemd/network/10-tapmanager.network",
        "./usr/lib/NetworkManager/conf.d/tapmanager.conf",
        "./usr/share/doc/tapmanager/README.md",
    ] {
        assert!(files.contains(path), "{path} missing:\n{files}");
    }
    let conffiles = dpkg_deb(&["-f"]);
    assert!(
        conffiles.contains("Depends:") && conffiles.contains("nftables"),
        "{conffiles}"
    );
    let dir = std::env::temp_dir().join(format!("tmt-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb())
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let conf = std::fs::read_to_string(dir.join("DEBIAN/conffiles")).unwrap();
    assert_eq!(conf.trim(), "/etc/tapmanager/tapmanager.toml");
    // The packaged daemon is built without the test-only crash points.
    let daemon = std::fs::read(dir.join("usr/bin/tapmanager")).unwrap();
    let needle = b"TAPMANAGER_CRASH_AT";
    assert!(
        !daemon.windows(needle.len()).any(|w| w == needle),
        "the packaged daemon has crash points"
    );
    // Its --help is complete enough to use it: every command is listed.
    let help = Command::new(dir.join("usr/bin/tapmanager"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "serve",
        "list",
        "show",
        "release",
        "check",
        "status",
        "init",
        "doctor",
        "check-config",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
