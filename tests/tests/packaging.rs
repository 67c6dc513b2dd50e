//! The Debian package built by `scripts/deb.sh` (scripts/test.sh builds it first): what it
//! installs where, its conffile, its dependencies, and that its daemon has no crash points.

use std::path::PathBuf;
use std::process::Command;
use tapmanager_tests::sandbox::{bin, run, TestDir};

/// Asserts that `text` (what `what` printed) names each of `items`.
fn mentions(text: &str, what: &str, items: &[&str]) {
    for item in items {
        assert!(text.contains(item), "{item} missing from {what}:\n{text}");
    }
}

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
    // postinst's addgroup fallback is adduser's.
    assert!(conffiles.contains("adduser"), "{conffiles}");
    // The maintainer scripts are in, and the socket is enabled on first install only.
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(dir.join("DEBIAN").join(script)));
    }
    let postinst = std::fs::read_to_string(dir.join("DEBIAN/postinst")).unwrap();
    assert!(postinst.contains("if [ -z \"$2\" ] && command -v deb-systemd-helper"));
    // The shipped config is the desktop default network, and the daemon accepts it (its
    // group need not exist on this machine: a gid stands in for the name).
    let shipped = std::fs::read_to_string(dir.join("etc/tapmanager/tapmanager.toml")).unwrap();
    assert!(shipped.contains("nat = true") && shipped.contains("dns_forward = true"));
    let checked = dir.join("checked.toml");
    std::fs::write(
        &checked,
        shipped.replace("group = \"tapmanager\"", "group = \"0\""),
    )
    .unwrap();
    run(Command::new(dir.join("usr/bin/tapmanager"))
        .arg("check-config")
        .arg(&checked));
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
    mentions(
        &help,
        "--help",
        &[
            "serve",
            "list",
            "show",
            "release",
            "check",
            "status",
            "init",
            "doctor",
            "check-config",
        ],
    );
    // The units as installed: `systemd-analyze verify` with the package's files as the root
    // (beside the host's stock units, for the targets they name) finds nothing wrong.
    let units = dir.join("usr/lib/systemd/system");
    run(Command::new("cp")
        .args(["-rn", "/lib/systemd/system/."])
        .arg(&units));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", dir.display()))
        .args(["tapmanager.service", "tapmanager.socket"])
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--root={}", dir.display()))
        .arg("tapmanager.service")
        .output()
        .unwrap();
    let score = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "packaging: systemd-analyze verify clean; {}",
        score.lines().last().unwrap_or("no security score").trim()
    );
    // In place of man pages, the long help has what a man page would add.
    mentions(
        &help,
        "--help",
        &["Files:", "Environment:", "Exit status:", "Signals:"],
    );
    let help = Command::new(dir.join("usr/bin/vmwrapper"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    mentions(
        &help,
        "vmwrapper --help",
        &[
            "--socket",
            "--id",
            "--hypervisor",
            "--net",
            "--netns",
            "--cloud-init",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Kubernetes manifest (`packaging/kubernetes/tapmanager.yaml`): YAML that parses, a
/// DaemonSet that shares the host's network, pids and the state directory (with bidirectional
/// propagation, for the namespace pins), and a ConfigMap whose config the daemon's own parser
/// accepts, at the path the container's command names. Not applied to a cluster (none here).
#[test]
fn the_kubernetes_manifest_parses_and_its_config_is_the_daemons() {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/kubernetes/tapmanager.yaml"
    );
    // Debian's python3 with python3-yaml (scripts/install-test-deps.sh installs it).
    let parsed = run(Command::new("/usr/bin/python3").args([
        "-c",
        "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        manifest,
    ]));
    let docs: Vec<serde_json::Value> = serde_json::from_str(&parsed).unwrap();
    let of_kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in the manifest"))
    };
    let ds = of_kind("DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(
        spec["hostPID"], true,
        "the daemon watches its callers' pids"
    );
    let container = &spec["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&command[1..3], &["serve", "--config"], "{command:?}");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    };
    assert_eq!(
        mount("/run/tapmanager")["mountPropagation"],
        "Bidirectional"
    );
    mount("/dev/net/tun");
    mount("/etc/cni/net.d");
    // The config the container reads is the ConfigMap's, and the daemon accepts it.
    let config_path = std::path::Path::new(command[3]);
    let config_dir = config_path.parent().unwrap().to_str().unwrap();
    let config_volume = mount(config_dir)["name"].as_str().unwrap();
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == config_volume)
        .unwrap();
    let cm_name = volume["configMap"]["name"].as_str().unwrap();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name)
        .unwrap();
    let file = config_path.file_name().unwrap().to_str().unwrap();
    let text = cm["data"][file].as_str().unwrap();
    let tmp = TestDir::new("k8s");
    let toml = tmp.join("tapmanager.toml");
    std::fs::write(&toml, text).unwrap();
    let said = run(Command::new(bin("tapmanager"))
        .arg("check-config")
        .arg(&toml));
    assert!(
        said.contains("network pod-network: cni") && said.contains("network pods: pod"),
        "{said}"
    );
}

/// The README's two commands are `scripts/demo.sh` and `scripts/test.sh`, with no `sudo` in
/// front: a fresh Debian has none, and as root the first command a newcomer typed failed.
/// Each script goes through sudo itself when it is not root and sudo exists: checked here as
/// an unprivileged user, with a stand-in `sudo` that records what it was asked to run.
#[test]
fn the_readme_commands_need_no_sudo_as_root_and_use_it_otherwise() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for cmd in ["scripts/demo.sh", "scripts/test.sh"] {
        assert!(
            readme.lines().any(|l| l.trim_start().starts_with(cmd)),
            "README does not show `{cmd}` as a command of its own"
        );
        assert!(
            !readme.contains(&format!("sudo {cmd}")),
            "README still puts sudo before {cmd}"
        );
        let script = std::fs::read_to_string(root.join(cmd)).unwrap();
        assert!(
            script.contains(". scripts/as-root.sh")
                && script.contains(&format!("as_root {cmd} \"$@\"")),
            "{cmd} does not go through as_root with its path from the top"
        );
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP the sudo half: needs root to become another user");
        return;
    }
    let dir = TestDir::new("asroot");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let lib = root.join("scripts/as-root.sh");
    let probe = format!(
        ". {}; as_root /x/demo.sh one two; echo returned=$?",
        lib.display()
    );
    // Root, with no sudo anywhere on PATH: returns at once.
    let out = run(Command::new("bash")
        .args(["-c", &probe])
        .env("PATH", "/usr/bin:/bin"));
    assert_eq!(out.trim(), "returned=0");
    // A user with no sudo: returns 1 (demo.sh then says to run it as root).
    let bare = dir.join("bare");
    std::fs::create_dir(&bare).unwrap();
    for tool in ["id", "basename"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{tool}"), bare.join(tool)).unwrap();
    }
    let user = |path: String| {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/bash",
            "-c",
        ])
        .arg(&probe)
        .env("PATH", path)
        .env("HOME", &dir.0);
        c
    };
    let out = run(&mut user(bare.display().to_string()));
    assert_eq!(out.trim(), "returned=1", "{out}");
    // A user with sudo: the script runs again through it, with the caller's PATH kept.
    let withsudo = dir.join("withsudo");
    std::fs::create_dir(&withsudo).unwrap();
    let record = dir.join("sudo-args");
    std::fs::write(
        withsudo.join("sudo"),
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        withsudo.join("sudo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", withsudo.display(), bare.display());
    let out = run(&mut user(path.clone()));
    assert!(
        !out.contains("returned="),
        "as_root did not exec sudo: {out}"
    );
    let args = std::fs::read_to_string(&record).expect("sudo not run");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "env",
            &format!("PATH={path}"),
            "bash",
            "/x/demo.sh",
            "one",
            "two"
        ],
    );
}
