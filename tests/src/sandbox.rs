//! The sandbox fixture: a network namespace made for one test, a tapmanager daemon running
//! inside it with its own state dir, socket and config, and cleanup in `Drop` (daemon killed
//! by pid, namespace deleted by exact name, temp dir removed), also when the test fails.
//! Nothing here touches the machine's own network.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when root; otherwise prints why the test is skipped.
pub fn is_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIP {test}: needs root (network namespaces, TAP devices)");
        false
    }
}

/// A workspace binary built by cargo: next to the running executable (a benchmark binary in
/// `target/release`) or one level up (a test in `target/debug/deps`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("exe dir");
    let candidates = [here.join(name), here.parent().unwrap_or(here).join(name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} not built next to {}: run `cargo build --workspace --bins` first (scripts/test.sh does)",
                exe.display()
            )
        })
}

/// `program` to be run as `uid` (and gid `uid`) with supplementary `groups` (comma-separated
/// gids; empty clears them), through util-linux's setpriv.
pub fn as_user(uid: u32, groups: &str, program: &std::path::Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={groups}"));
    }
    c.arg(program);
    c
}

/// Returns from the calling test, printing why, when not root: `require_root!();` at a root
/// test's top. The name printed is the test's own (its path, from a function nested in it).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::sandbox::is_root({
            fn here() {}
            let name = std::any::type_name_of_val(&here);
            name.strip_suffix("::here").unwrap_or(name)
        }) {
            return;
        }
    };
}

/// Runs a command, panicking with its output on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of this test's own.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "tmt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).expect("netns file")
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// The link-local address of `link` in this namespace.
    pub fn link_local(&self, link: &str) -> std::net::Ipv6Addr {
        let out = self.ip(&["-6", "-o", "addr", "show", "dev", link, "scope", "link"]);
        let word = out
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .unwrap_or_else(|| panic!("no link-local address on {link}: {out}"));
        word.split('/').next().unwrap().parse().unwrap()
    }

    /// `ip netns exec NAME ARGS`, output and success.
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs `f` on a fresh thread that has entered this namespace; what it returns (sockets,
    /// fds) keeps the namespace.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = self.file();
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip") // best effort: nothing more to do if it fails
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A test's own directory, `tmt-TAG-PID` in the temp dir, made empty and removed when dropped
/// (even when an assertion fails).
#[derive(Debug)]
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("tmt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // an earlier run's with the same pid
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0); // best effort
    }
}

/// A process of a test's that is stopped when dropped, even when an assertion fails: SIGTERM
/// by pid (as systemd stops a service), then reaped.
#[derive(Debug)]
pub struct Running(pub Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            ); // already gone is fine
            let _ = c.wait();
        }
    }
}

/// A daemon in its own namespace with a temporary state dir.
#[derive(Debug)]
pub struct Sandbox {
    pub ns: Netns,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub group: u32,
    daemon: Option<Child>,
    log: PathBuf,
    log_filter: String,
    /// A crash point (tapmanager's `failpoint::POINTS`) the next `start` arms: the daemon
    /// kills itself there.
    pub crash_at: Option<String>,
    /// How the next `start` puts the daemon into the namespace.
    pub launch: Launch,
    /// A file limit (soft and hard) the next `start` gives the daemon, as a unit's
    /// `LimitNOFILE=` does; `None`: the test's own.
    pub nofile: Option<u64>,
}

/// How a sandbox's daemon enters its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `setns` between fork and exec: the daemon keeps the test's mount namespace, where no
    /// sysfs of its network namespace is mounted (no host is like that).
    Setns,
    /// `ip netns exec`, as an operator starts it: a mount namespace of its own with that
    /// network namespace's sysfs mounted read-write, as a host's `/sys` is.
    IpNetnsExec,
}

impl Launch {
    /// The launch a run asks for with `TM_LAUNCH` (`setns`, the default, or `ip-netns-exec`):
    /// scripts/test.sh runs every kind's tests once each way.
    pub fn from_env() -> Launch {
        match std::env::var("TM_LAUNCH").as_deref() {
            Ok("ip-netns-exec") => Launch::IpNetnsExec,
            Ok("setns") | Ok("") | Err(_) => Launch::Setns,
            Ok(other) => panic!("TM_LAUNCH={other}: expected setns or ip-netns-exec"),
        }
    }
}

/// The default network of the sandbox config.
pub const GATEWAY: &str = "10.88.0.1";
pub const BRIDGE: &str = "tmbr0";

pub fn default_networks() -> String {
    format!(
        r#"
[networks.default]
kind = "bridge"
bridge = "{BRIDGE}"
gateway = "{GATEWAY}/24"
dns = ["10.88.0.1", "10.88.0.53"]
mtu = 1400
search = ["example.test"]
"#
    )
}

/// The `default` network as [`default_networks`] has it, but a /16 with the gateway as its DNS:
/// room for thousands of guests (the 1,100-guest test, the benchmarks).
pub fn wide_networks() -> String {
    format!(
        r#"
[networks.default]
kind = "bridge"
bridge = "{BRIDGE}"
gateway = "{GATEWAY}/16"
dns = ["{GATEWAY}"]
mtu = 1400
"#
    )
}

/// Where a sandbox keeps its files and how its daemon logs. The default is what the tests use:
/// the system temp dir and `RUST_LOG=debug`.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Parent of the sandbox's own directory (state dir, socket, config, log). A benchmark
    /// puts it on tmpfs (`/dev/shm`), as `/run/tapmanager` is in production.
    pub base_dir: PathBuf,
    /// The daemon's `RUST_LOG`.
    pub log_filter: String,
}

impl Default for SandboxOptions {
    fn default() -> SandboxOptions {
        SandboxOptions {
            base_dir: std::env::temp_dir(),
            log_filter: "debug".to_owned(),
        }
    }
}

impl Sandbox {
    /// A sandbox whose daemon serves `networks` (TOML `[networks.*]` tables) to group `group`.
    pub fn new(tag: &str, group: u32, networks: &str) -> Sandbox {
        Sandbox::with_options(tag, group, networks, SandboxOptions::default())
    }

    /// [`Sandbox::new`] with its directory and log level chosen by the caller.
    pub fn with_options(tag: &str, group: u32, networks: &str, opts: SandboxOptions) -> Sandbox {
        let ns = Netns::new(tag);
        let dir = opts.base_dir.join(&ns.name);
        let _ = std::fs::remove_dir_all(&dir); // leftover of an earlier run with the same pid
        std::fs::create_dir_all(&dir).unwrap();
        // Unprivileged test users must reach the socket through this directory.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let socket = dir.join("tapmanager.sock");
        let config = dir.join("tapmanager.toml");
        std::fs::write(
            &config,
            format!(
                "socket = \"{}\"\nstate_dir = \"{}\"\ngroup = \"{group}\"\n{networks}",
                socket.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let log = dir.join("daemon.log");
        let mut sb = Sandbox {
            ns,
            dir,
            socket,
            config,
            group,
            daemon: None,
            log,
            log_filter: opts.log_filter,
            crash_at: None,
            launch: Launch::from_env(),
            nofile: None,
        };
        sb.start();
        sb
    }

    pub fn with_defaults(tag: &str, group: u32) -> Sandbox {
        Sandbox::new(tag, group, &default_networks())
    }

    /// Starts the daemon inside the namespace (setns before exec; no mount namespace) and
    /// waits until its socket answers.
    pub fn start(&mut self) {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if protocol::Client::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon inside the namespace without waiting for it: for a crash point
    /// reached before it serves ([`Sandbox::died_within`] then tells).
    pub fn spawn(&mut self) {
        assert!(self.daemon.is_none());
        let nsfile: OwnedFd = self.ns.file().into();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match self.launch {
            Launch::Setns => Command::new(bin("tapmanager")),
            Launch::IpNetnsExec => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns.name])
                    .arg(bin("tapmanager"));
                c
            }
        };
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", &self.log_filter)
            .env(
                "TAPMANAGER_CRASH_AT",
                self.crash_at.as_deref().unwrap_or(""),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let raw = nsfile.as_raw_fd();
        if let Some(n) = self.nofile {
            // SAFETY: between fork and exec only async-signal-safe calls: setrlimit is a syscall.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.launch == Launch::Setns {
            // SAFETY: between fork and exec only async-signal-safe calls: setns is a syscall.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn tapmanager");
        drop(nsfile);
        self.daemon = Some(child);
    }

    /// `tapmanager down --config CONFIG ARGS` on this sandbox's config, in its namespace (by `ip
    /// netns exec`, as an operator runs it): whether it succeeded, and its output.
    pub fn down(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(bin("tapmanager"))
            .args(["down", "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run tapmanager down");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Runs another `tapmanager serve --config CONFIG` in this sandbox's namespace and returns
    /// its stderr once it exits (killed after 10 s: a test expecting a refusal then fails).
    pub fn serve_other(&self, config: &std::path::Path) -> (bool, String) {
        let nsfile: OwnedFd = self.ns.file().into();
        let raw = nsfile.as_raw_fd();
        let mut cmd = Command::new(bin("tapmanager"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls: setns is a syscall.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn tapmanager");
        drop(nsfile);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill(); // already exited is fine
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Kills the daemon with SIGKILL (no cleanup of its own).
    /// Whether the daemon died by itself within `secs` (a crash point), reaping it if so.
    pub fn died_within(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(c) = self.daemon.as_mut() {
                if c.try_wait().unwrap().is_some() {
                    self.daemon = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill(); // already dead is fine
            let _ = c.wait();
        }
    }

    /// The running daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// vmwrapper run as `uid` with `groups` (see [`as_user`]), pointed at this daemon.
    pub fn vmwrapper_as(&self, uid: u32, groups: &str) -> Command {
        let mut c = as_user(uid, groups, &bin("vmwrapper"));
        c.arg("--socket").arg(&self.socket);
        c
    }

    pub fn client(&self) -> protocol::Client {
        protocol::Client::connect(&self.socket).expect("connect")
    }

    /// A client of this process connected as `uid` (gid `uid`, in the sandbox's group), so
    /// that the attachments it makes belong to `uid` and their fds come to the test. The
    /// daemon knows a caller by the credentials it had at `connect()`: a short-lived thread
    /// takes them with the raw syscalls, which change the calling thread's only (libc's
    /// wrappers would change every thread's), and connects.
    pub fn client_as(&self, uid: u32) -> protocol::Client {
        let (socket, group) = (self.socket.clone(), self.group);
        std::thread::spawn(move || {
            let groups: [libc::gid_t; 1] = [group];
            // SAFETY: plain syscalls on this thread's credentials; `groups` outlives the call.
            let rc = unsafe {
                [
                    libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()),
                    libc::syscall(libc::SYS_setresgid, uid, uid, uid),
                    libc::syscall(libc::SYS_setresuid, uid, uid, uid),
                ]
            };
            assert_eq!(rc, [0; 3], "{}", std::io::Error::last_os_error());
            protocol::Client::connect(&socket).expect("connect")
        })
        .join()
        .expect("connecting thread")
    }

    /// Journal entries on disk: renamed into place, so complete (an entry being written is a
    /// hidden temporary file, which a restart discards, and is not one).
    pub fn journal_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.join("state/attachments"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| !name.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Links named like the daemon's TAPs.
    /// The guard chain's counters (`table netdev tapmanager`, chain `guard`), as (rule text
    /// as nft lists it, packets).
    pub fn guard_counters(&self) -> Vec<(String, u64)> {
        self.nft_counters("netdev", "tapmanager", "guard")
    }

    /// The counters of one chain of the daemon's namespace, as (rule text, packets).
    pub fn nft_counters(&self, family: &str, table: &str, chain: &str) -> Vec<(String, u64)> {
        let (_, out) = self
            .ns
            .exec(&["nft", "list", "chain", family, table, chain]);
        out.lines()
            .filter_map(|l| {
                let (rule, rest) = l.trim().split_once("counter packets ")?;
                let n = rest.split_whitespace().next()?.parse().ok()?;
                Some((rule.trim().to_owned(), n))
            })
            .collect()
    }

    pub fn taps(&self) -> Vec<String> {
        let out = self.ns.ip(&["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("tm") && n.len() == 12)
            .collect()
    }

    /// Waits up to `secs` until no TAP (or host veth) and no journal entry is left.
    pub fn all_gone(&self, secs: u64) -> bool {
        self.wait_for(secs, || {
            self.taps().is_empty() && self.journal_entries().is_empty()
        })
    }

    /// A sandbox whose routed networks' uplink leads to a [`lan`]: the daemon is restarted
    /// once the uplink exists. Keep the returned LAN alive as long as the sandbox.
    pub fn with_lan(tag: &str, group: u32, networks: &str) -> (Sandbox, Netns) {
        let mut sb = Sandbox::new(tag, group, networks);
        let lan = lan(&sb);
        sb.kill();
        sb.start();
        (sb, lan)
    }

    /// Waits until `cond` holds, up to `secs`.
    pub fn wait_for(&self, secs: u64, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SIGTERM first so it exits cleanly; the namespace deletion removes its links.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill(); // already exited is fine
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ({}) ---\n{}", self.ns.name, self.log());
        }
        // Guests' namespaces the daemon pinned (isolated kind) outlive it: unpin them.
        if let Ok(entries) = std::fs::read_dir(self.dir.join("state/netns")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                // not mounted is fine
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir); // best effort
    }
}

/// The uplink of routed networks in tests: a veth from the sandbox to the LAN namespace.
pub const UPLINK: &str = "tmup0";

/// A stand-in LAN for routed networks: a namespace joined to the sandbox's by the veth
/// [`UPLINK`] (192.168.77.1 on the sandbox side), answering on 192.168.77.2 and 192.168.78.1.
/// The LAN has no route back to the guests: only NAT makes replies possible. Start the daemon
/// again after this (its uplink must exist when it starts).
pub fn lan(sb: &Sandbox) -> Netns {
    let lan = Netns::new("lan");
    run(Command::new("ip").args([
        "-n",
        &sb.ns.name,
        "link",
        "add",
        UPLINK,
        "type",
        "veth",
        "peer",
        "name",
        "lan0",
        "netns",
        &lan.name,
    ]));
    sb.ns.ip(&["addr", "add", "192.168.77.1/24", "dev", UPLINK]);
    sb.ns.ip(&["link", "set", UPLINK, "up"]);
    lan.ip(&["addr", "add", "192.168.77.2/24", "dev", "lan0"]);
    lan.ip(&["addr", "add", "192.168.78.1/24", "dev", "lan0"]);
    lan.ip(&["link", "set", "lan0", "up"]);
    sb.ns
        .ip(&["route", "add", "192.168.78.0/24", "via", "192.168.77.2"]);
    lan
}

/// The packets counted by the guard rules whose text contains `needle`.
pub fn count_of(counters: &[(String, u64)], needle: &str) -> u64 {
    counters
        .iter()
        .filter(|(r, _)| r.contains(needle))
        .map(|(_, n)| n)
        .sum()
}

/// Adds the stand-in LAN's IPv6: fd77:77::1 on the daemon's uplink, fd77:77::2 on the LAN
/// (the address a guest behind NAT66 or a routed guest pings).
pub fn lan6(sb: &Sandbox, lan: &Netns) {
    sb.ns
        .ip(&["-6", "addr", "add", "fd77:77::1/64", "dev", UPLINK, "nodad"]);
    lan.ip(&["-6", "addr", "add", "fd77:77::2/64", "dev", "lan0", "nodad"]);
}
