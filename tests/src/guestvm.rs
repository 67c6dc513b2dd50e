//! The real-guest tier's fixture (DESIGN.md §9, tier 4): the Debian 12 image of
//! `tests/vm/build-image.sh` booted as a guest *through vmwrapper*, by an unprivileged user,
//! on a sandbox's networks, with a guest script from `tests/vm/guest/` run by the image's
//! agent. The guest's own DHCP clients (systemd-networkd, ISC dhclient, dhcpcd) or
//! cloud-init configure its NICs; the script prints one `TM-CHECK <name> ok|FAIL <detail>`
//! line per check, which the test requires by name.
//!
//! The image, the `tmio` disk and QEMU's arguments come from [`crate::vm`]; this adds the
//! vmwrapper launch (its `--net`, `--netns`, `--cloud-init`), the script and its inputs on
//! the disk, and reading the checks back. QEMU (vmwrapper execs it, same pid) is killed by
//! its pid when the [`GuestVm`] is dropped or times out; its files go with its [`TestDir`].

use crate::sandbox::{Sandbox, TestDir};
use crate::vm::{qemu_args, BootSpec, Image, TmioDisk, Vm};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What to boot: the caller's vmwrapper options, QEMU extras and guest script with inputs.
#[derive(Debug, Clone, Default)]
pub struct GuestSpec {
    /// vmwrapper's `--id`: the guest's host name (DHCP option 12, cloud-init's meta-data).
    pub vm: String,
    /// One `--net` value per NIC, in guest order.
    pub nets: Vec<String>,
    /// More vmwrapper options before `--` (`--netns P`, `--cloud-init DIR`, ...).
    pub vmwrapper_args: Vec<String>,
    /// More QEMU arguments (a cidata drive, say).
    pub qemu_args: Vec<String>,
    /// Added to the kernel command line.
    pub append: String,
    /// The script under `tests/vm/guest/` that run.sh sources after `lib.sh`.
    pub script: String,
    /// Written to `/tm/env` as shell assignments, in order.
    pub env: Vec<(String, String)>,
}

impl GuestSpec {
    pub fn env(&mut self, key: &str, value: impl ToString) -> &mut GuestSpec {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
}

/// A booted guest: the [`Vm`] (its console), its tmio disk and files.
#[derive(Debug)]
pub struct GuestVm {
    pub vm: Vm,
    pub tmio: TmioDisk,
    pub name: String,
    pub dir: TestDir,
}

/// The guest scripts' directory in the source tree.
pub fn guest_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/guest")
}

/// Single quotes for a shell assignment.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The kernel command line every guest of this tier gets besides `root=` and the console:
/// NICs named eth0, eth1, ... in PCI order (the scripts find them by MAC anyway).
pub const APPEND: &str = "net.ifnames=0";

impl GuestVm {
    /// Boots `spec` through vmwrapper as `uid` (supplementary group `group`, the sandbox's)
    /// against `sb`'s daemon. The tmio disk and the console live in a [`TestDir`] named
    /// after `spec.vm`, which `uid` can use.
    pub fn boot(sb: &Sandbox, image: &Image, uid: u32, group: u32, spec: &GuestSpec) -> GuestVm {
        let dir = TestDir::new(&format!("guest-{}", spec.vm));
        let io = dir.join("io");
        std::fs::create_dir_all(&io).unwrap();
        let scripts = guest_scripts();
        for f in ["lib.sh", spec.script.as_str()] {
            std::fs::copy(scripts.join(f), io.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
        }
        let env: String = spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}\n", sh_quote(v)))
            .collect();
        std::fs::write(io.join("env"), env).unwrap();
        std::fs::write(
            io.join("run.sh"),
            format!("set -u\n. /tm/env\n. /tm/lib.sh\n. /tm/{}\n", spec.script),
        )
        .unwrap();
        let tmio = TmioDisk::build(&io, &dir.join("tmio.img"), 32);
        // QEMU runs as `uid`: it opens the tmio disk read-write, and writes its console
        // through the fd the test gives it.
        chown(&tmio.path, uid);
        chown(&dir.0, uid);
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();

        let boot = BootSpec {
            mem_mb: 768,
            cpus: 1,
            append: format!("{APPEND} {}", spec.append),
        };
        let mut args = qemu_args(image, Some(&tmio.path), &boot);
        // No option ROM for the NICs vmwrapper adds: the kernel is booted directly, and
        // Debian's ipxe-qemu (efi-virtio.rom) is not installed. QEMU 10 starts without it;
        // older ones exit with "failed to find romfile".
        args.extend(["-global".into(), "virtio-net-pci.romfile=".into()]);
        args.extend(spec.qemu_args.iter().cloned());
        let mut cmd = sb.vmwrapper_as(uid, &group.to_string());
        cmd.args(["--id", &spec.vm]);
        for n in &spec.nets {
            cmd.args(["--net", n]);
        }
        cmd.args(&spec.vmwrapper_args)
            .arg("--")
            .arg("qemu-system-x86_64")
            .args(&args);
        let vm = Vm::boot(cmd, &dir.join("console.log"));
        GuestVm {
            vm,
            tmio,
            name: spec.vm.clone(),
            dir,
        }
    }

    /// Waits for the guest to power off (QEMU exits) within `timeout`, killing it past that;
    /// then reads the script's log back. Prints how long the boot took.
    pub fn finish(&mut self, timeout: Duration) -> Outcome {
        let status = self.vm.wait(timeout);
        let secs = self.vm.started.elapsed().as_secs_f64();
        println!("guest {}: QEMU ran {secs:.1} s ({status:?})", self.name);
        Outcome {
            name: self.name.clone(),
            timed_out: status.is_none(),
            secs,
            console: self.vm.console_text(),
            run_log: self.tmio.read_string("/out/run.log").unwrap_or_default(),
            rc: self.tmio.rc(),
        }
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// What a guest run left: the console, the script's log and exit code.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub timed_out: bool,
    pub secs: f64,
    pub console: String,
    pub run_log: String,
    pub rc: Option<i32>,
}

/// One `TM-CHECK` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The `TM-CHECK` lines of `text` (a check printed twice counts by its last line).
pub fn checks(text: &str) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("TM-CHECK ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let name = parts.next().unwrap_or("").to_owned();
        let ok = parts.next() == Some("ok");
        let detail = parts.next().unwrap_or("").to_owned();
        out.retain(|c| c.name != name);
        out.push(Check { name, ok, detail });
    }
    out
}

impl Outcome {
    /// The script's checks: from its log on the tmio disk, or the console if the log is
    /// missing (a guest killed before the agent synced).
    pub fn checks(&self) -> Vec<Check> {
        if self.run_log.contains("TM-CHECK ") {
            checks(&self.run_log)
        } else {
            checks(&self.console)
        }
    }

    /// The first line starting with `prefix`, in the log or the console.
    pub fn line(&self, prefix: &str) -> Option<String> {
        self.run_log
            .lines()
            .chain(self.console.lines())
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    }

    /// Prints every check and asserts that each of `expected` (plus `host`, checks the test
    /// judged itself) is there with ok; on failure prints the console and the log.
    pub fn assert_checks(&self, expected: &[&str], host: &[Check]) {
        let mut got = self.checks();
        got.extend(host.iter().cloned());
        for c in &got {
            println!(
                "guest {}: TM-CHECK {} {} {}",
                self.name,
                c.name,
                if c.ok { "ok" } else { "FAIL" },
                c.detail
            );
        }
        let mut bad: Vec<String> = Vec::new();
        if self.timed_out {
            bad.push("QEMU did not finish in time (killed)".into());
        }
        for name in expected {
            match got.iter().find(|c| c.name == *name) {
                None => bad.push(format!("{name}: missing")),
                Some(c) if !c.ok => bad.push(format!("{name}: FAIL {}", c.detail)),
                Some(_) => {}
            }
        }
        for c in got.iter().filter(|c| !c.ok) {
            if !expected.contains(&c.name.as_str()) {
                bad.push(format!("{} (unexpected): FAIL {}", c.name, c.detail));
            }
        }
        assert!(
            bad.is_empty(),
            "guest {} ({:.1} s, rc {:?}):\n  {}\n--- console ---\n{}\n--- run.log ---\n{}",
            self.name,
            self.secs,
            self.rc,
            bad.join("\n  "),
            self.console,
            self.run_log
        );
    }
}

/// A host-side check.
pub fn host_check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        detail: detail.into(),
    }
}

/// Runs `cmd`, returning whether it succeeded and its output.
pub fn output(cmd: &mut Command) -> (bool, String) {
    match cmd.output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lines_parse_and_the_last_one_wins() {
        let c =
            checks("x\nTM-CHECK a ok fine\nTM-CHECK b FAIL no lease here\nTM-CHECK a FAIL later\n");
        assert_eq!(
            c,
            vec![
                Check {
                    name: "b".into(),
                    ok: false,
                    detail: "no lease here".into()
                },
                Check {
                    name: "a".into(),
                    ok: false,
                    detail: "later".into()
                },
            ]
        );
    }
}
