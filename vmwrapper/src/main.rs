//! `vmwrapper`: wires the library's steps together and execs the hypervisor.

use protocol::{AttachRequest, Client};
use std::ffi::CString;
use std::process::ExitCode;
use vmwrapper::args::{self, USAGE};
use vmwrapper::fds;
use vmwrapper::hypervisor::Kind;
use vmwrapper::seed::SeedDir;

fn fresh_id() -> protocol::VmId {
    let mut b = [0u8; 6];
    // Without /dev/urandom fall back to pid and time: an id only has to be unique per user.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0) as u64
            ^ u64::from(std::process::id());
        b.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("vm-{hex}").parse().expect("valid id")
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vmwrapper: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") && !argv.iter().any(|a| a == "--") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let a = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => return fail(format!("{e}\n{USAGE}")),
    };
    let kind = match a.hypervisor.or_else(|| Kind::detect(&a.command[0])) {
        Some(k) => k,
        None => {
            return fail(format!(
                "cannot tell which hypervisor {:?} is; pass --hypervisor ({})",
                a.command[0],
                vmwrapper::hypervisor::NAMES
            ))
        }
    };
    let queues: Vec<u16> = a.nets.iter().map(|n| n.queues).collect();
    if let Err(e) = kind.check(&queues) {
        return fail(e);
    }
    // Firecracker's config is read (and checked) before anything is attached.
    let firecracker = if kind.by_name() {
        let Some((at, inline, path)) = vmwrapper::firecracker::config_file(&a.command) else {
            return fail(
                "Firecracker opens its TAPs by name from its config: pass --config-file FILE \
                 (vmwrapper fills in its network-interfaces)",
            );
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return fail(format!(
                    "cannot read Firecracker's --config-file {path}: {e}"
                ))
            }
        };
        if let Err(e) = vmwrapper::firecracker::fill(&text, &[]) {
            return fail(format!("Firecracker's --config-file {path}: {e}"));
        }
        Some((at, inline, path, text))
    } else {
        None
    };
    let mut nets = a.nets.clone();
    for n in &mut nets {
        n.by_name = kind.by_name();
    }
    let vm = a.id.clone().unwrap_or_else(fresh_id);
    // The seed directory is made or checked before anything is attached: a refused one costs
    // no network. Checked against the real uid: the user who ran us.
    let seed = match &a.cloud_init {
        Some((dir, version)) => match SeedDir::open(dir, nix::unistd::getuid()) {
            Ok(s) => Some((s, dir, *version)),
            Err(e) => {
                return fail(format!(
                    "--cloud-init {}: {}",
                    dir.display(),
                    protocol::error_chain(&e)
                ))
            }
        },
        None => None,
    };
    let mut client = match Client::connect(&a.socket) {
        Ok(c) => c,
        Err(e) => {
            let mut msg = protocol::error_chain(&e);
            if let Some(h) = e.hint() {
                msg.push_str(&format!("\nhint: {h}"));
            }
            return fail(msg);
        }
    };
    let req = AttachRequest {
        vm: vm.clone(),
        networks: nets,
    };
    let attached = match &a.netns {
        // Opened as the caller: the kernel's permission check is the first gate, the
        // daemon's ownership check the second.
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => client.attach_pod(req, std::os::fd::AsFd::as_fd(&f)),
            Err(e) => return fail(format!("cannot open --netns {}: {e}", path.display())),
        },
        None => client.attach(req),
    };
    let (attachment, received) = match attached {
        Ok(x) => x,
        Err(e) => return fail(protocol::error_chain(&e)),
    };
    // The connection is not needed any more; the daemon watches our pid, not the socket.
    drop(client);
    // Written before the fds are placed: placing closes every other fd, the seed's among them.
    if let Some((seed, dir, version)) = seed {
        if let Err(e) = seed.write(&vm, &attachment.interfaces, version) {
            return fail(format!(
                "--cloud-init {}: {}",
                dir.display(),
                protocol::error_chain(&e)
            ));
        }
    }
    // Interface i owns `queues` consecutive fds.
    let placed = match fds::place(received) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot place TAP fds: {e}")),
    };
    let mut per_iface = Vec::new();
    let mut rest = placed.as_slice();
    for iface in &attachment.interfaces {
        let count = if iface.by_name { 0 } else { iface.queues };
        let (mine, more) = rest.split_at(usize::from(count).min(rest.len()));
        per_iface.push(mine.to_vec());
        rest = more;
    }
    let mut full = a.command.clone();
    full.extend(kind.net_args(&attachment.interfaces, &per_iface));
    if let Some((at, inline, path, text)) = firecracker {
        // Opened by name in our namespace: it must be there (the daemon's namespace).
        for i in &attachment.interfaces {
            if nix::net::if_::if_nametoindex(i.ifname.as_str()).is_err() {
                return fail(format!(
                    "TAP {} is not in this network namespace: Firecracker opens TAPs by name, \
                     so run vmwrapper in the daemon's network namespace",
                    i.ifname
                ));
            }
        }
        let filled = match vmwrapper::firecracker::fill(&text, &attachment.interfaces) {
            Ok(t) => t,
            Err(e) => return fail(format!("Firecracker's --config-file {path}: {e}")),
        };
        let memfd = match vmwrapper::firecracker::memfd_path(&filled) {
            Ok(p) => p,
            Err(e) => return fail(format!("cannot hold Firecracker's config: {e}")),
        };
        full[at] = if inline {
            format!("--config-file={memfd}")
        } else {
            memfd
        };
    }
    for i in &attachment.interfaces {
        let addr = i
            .address
            .map(|(a, p)| format!("{a}/{p}"))
            .unwrap_or_else(|| "-".into());
        eprintln!(
            "vmwrapper: {vm}: {} on {} ({}), mac {}, address {addr}",
            i.ifname, i.network, i.queues, i.mac
        );
    }
    exec(&full)
}

/// Replaces this process with the hypervisor (same pid, so the daemon's watch follows it).
fn exec(argv: &[String]) -> ExitCode {
    let c: Result<Vec<CString>, _> = argv.iter().map(|s| CString::new(s.as_bytes())).collect();
    let Ok(c) = c else {
        return fail("an argument contains a NUL byte");
    };
    // Rust ignores SIGPIPE; the hypervisor should get the default disposition back.
    // SAFETY: resetting a signal disposition to SIG_DFL has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let err = nix::unistd::execvp(&c[0], &c).unwrap_err();
    fail(format!("cannot run {}: {err}", argv[0]))
}
