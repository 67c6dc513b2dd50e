//! The Debian 12 VM of the tiers that need a real distribution (DESIGN.md §9, tier 4): the
//! image `tests/vm/build-image.sh` builds (systemd as pid 1, the guest kernel, the test
//! agent), a `tmio` disk that carries a script in and its results out, and QEMU under TCG.
//!
//! The contract (tests/vm/README.md): the agent in the image mounts the disk labeled `tmio`
//! at `/tm`, runs `/tm/run.sh` as root with its output on the serial console and in
//! `/tm/out/run.log`, writes its exit code to `/tm/out/rc` and powers the VM off. The host
//! never mounts anything: it fills the disk with `mkfs.ext4 -d` and reads it back with
//! `debugfs`. [`qemu_args`] gives a VM with no NIC; a caller that wants one (a TAP handed
//! out by tapmanager) appends its own `-netdev`/`-device`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The built image: `vmlinuz`, `initrd.img`, `rootfs.raw` (ext4, label `tmroot`).
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
}

impl Image {
    /// Where the tests keep it: under the cargo target directory, cached like a build.
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm/debian12")
    }

    /// Builds the image in [`Image::default_dir`] unless its recipe is unchanged (root:
    /// mmdebstrap). Prints what the builder said and how long it took.
    pub fn ensure() -> Image {
        Image::ensure_in(&Image::default_dir())
    }

    pub fn ensure_in(dir: &Path) -> Image {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/build-image.sh");
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir)
            .output()
            .expect("run tests/vm/build-image.sh");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "build-image.sh failed ({}):\n{}\n{}",
            out.status,
            said,
            String::from_utf8_lossy(&out.stderr)
        );
        let last = said.lines().last().unwrap_or("");
        println!(
            "vm image: {last} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        Image {
            dir: dir.to_path_buf(),
        }
    }

    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.raw")
    }
}

/// The disk labeled `tmio`: the script and its inputs in, `out/` back.
#[derive(Debug)]
pub struct TmioDisk {
    pub path: PathBuf,
}

impl TmioDisk {
    /// An ext4 image of `size_mb` MB at `path` holding the tree of `dir` (which should have
    /// `run.sh`), made without mounting anything.
    pub fn build(dir: &Path, path: &Path, size_mb: u64) -> TmioDisk {
        std::fs::create_dir_all(dir.join("out")).unwrap();
        let _ = std::fs::remove_file(path); // mkfs.ext4 -d fills an existing file as is
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-L", "tmio", "-d"])
            .arg(dir)
            .arg(path)
            .arg(format!("{size_mb}M"))
            .output()
            .expect("mkfs.ext4");
        assert!(
            out.status.success(),
            "mkfs.ext4 -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TmioDisk {
            path: path.to_path_buf(),
        }
    }

    /// A file of the disk (`/out/rc`), read with debugfs; None if it is not there.
    pub fn read(&self, file: &str) -> Option<Vec<u8>> {
        let tmp = self
            .path
            .with_extension(format!("read-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let status = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {file} {}", tmp.display()))
            .arg(&self.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("debugfs");
        let data = std::fs::read(&tmp).ok();
        let _ = std::fs::remove_file(&tmp);
        status.success().then_some(data).flatten()
    }

    pub fn read_string(&self, file: &str) -> Option<String> {
        self.read(file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The exit code the agent wrote for `run.sh`.
    pub fn rc(&self) -> Option<i32> {
        self.read_string("/out/rc")?.trim().parse().ok()
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub mem_mb: u32,
    pub cpus: u32,
    /// Added to the kernel command line.
    pub append: String,
}

impl Default for BootSpec {
    fn default() -> BootSpec {
        BootSpec {
            mem_mb: 1024,
            cpus: 2,
            append: String::new(),
        }
    }
}

/// QEMU's arguments (without the program) for the image, with the root disk snapshotted and
/// `tmio` (if any) written through, under TCG, no NIC (`-nic none`: no default user-mode
/// network either), the serial console on stdout. A caller may append `-netdev`/`-device`.
pub fn qemu_args(image: &Image, tmio: Option<&Path>, spec: &BootSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        &spec.mem_mb.to_string(),
        "-smp",
        &spec.cpus.to_string(),
        "-nographic",
        "-no-reboot",
        "-no-user-config",
        "-snapshot",
        "-nic",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-kernel".into());
    args.push(image.kernel().display().to_string());
    args.push("-initrd".into());
    args.push(image.initrd().display().to_string());
    args.push("-append".into());
    args.push(
        format!(
            "root=LABEL=tmroot rw console=ttyS0 panic=-1 {}",
            spec.append
        )
        .trim()
        .to_owned(),
    );
    args.push("-drive".into());
    args.push(format!(
        "file={},format=raw,if=virtio",
        image.rootfs().display()
    ));
    if let Some(t) = tmio {
        args.push("-drive".into());
        args.push(format!(
            "file={},format=raw,if=virtio,snapshot=off",
            t.display()
        ));
    }
    args
}

/// A running QEMU whose console goes to a file; killed (by its pid) when dropped.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    pub console: PathBuf,
    pub started: Instant,
}

impl Vm {
    /// Starts `program` (QEMU, or vmwrapper with QEMU after `--`) with `args`, its stdout and
    /// stderr into `console`, stdin empty.
    pub fn boot(mut cmd: Command, console: &Path) -> Vm {
        let log = std::fs::File::create(console).expect("console file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start QEMU");
        Vm {
            child: Some(child),
            console: console.to_path_buf(),
            started: Instant::now(),
        }
    }

    /// `qemu-system-x86_64` with [`qemu_args`].
    pub fn boot_qemu(args: &[String], console: &Path) -> Vm {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(args);
        Vm::boot(cmd, console)
    }

    /// The console so far, `\r` stripped.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).replace('\r', "")
    }

    /// Waits for a console line starting with `prefix`; returns it, and when it came.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<(String, Duration)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.console_text().lines().find(|l| l.starts_with(prefix)) {
                return Some((l.to_owned(), self.started.elapsed()));
            }
            if Instant::now() > deadline || self.exited() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn exited(&mut self) -> bool {
        let c = self.child.as_mut().unwrap();
        matches!(c.try_wait(), Ok(Some(_)))
    }

    /// Waits for QEMU to exit (the guest powered off); kills it past `timeout` and returns
    /// None.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().unwrap();
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill(); // SIGKILL by pid; already gone is fine
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill(); // SIGKILL by pid; it may have exited meanwhile
            }
            let _ = c.wait();
        }
    }
}
