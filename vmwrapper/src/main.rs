//! `vmwrapper`: wires the library's steps together and execs the hypervisor.

use protocol::{AttachRequest, Client, ClientError};
use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;
use vmwrapper::args::{self, USAGE};
use vmwrapper::fds;
use vmwrapper::hypervisor::Kind;
use vmwrapper::seed::{SeedDir, SeedError};

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

/// Why vmwrapper stopped before the hypervisor ran: each says what to do about it.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error("{0}\n{USAGE}")]
    Usage(#[from] args::ArgsError),
    #[error("cannot tell which hypervisor {0:?} is; pass --hypervisor ({names})", names = vmwrapper::hypervisor::NAMES)]
    UnknownHypervisor(String),
    #[error("{0}")]
    Queues(String),
    #[error(
        "Firecracker opens its TAPs by name from its config: pass --config-file FILE \
         (vmwrapper fills in its network-interfaces)"
    )]
    NoFirecrackerConfig,
    #[error("cannot read Firecracker's --config-file {0}: {1}")]
    FirecrackerRead(String, std::io::Error),
    #[error("Firecracker's --config-file {0}: {1}")]
    FirecrackerConfig(String, String),
    #[error("--cloud-init {}: {}", .0.display(), protocol::error_chain(.1))]
    Seed(PathBuf, SeedError),
    #[error("{}{}", protocol::error_chain(.0), .0.hint().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Connect(ClientError),
    #[error("cannot open --netns {}: {}", .0.display(), .1)]
    Netns(PathBuf, std::io::Error),
    #[error("{}", protocol::error_chain(.0))]
    Attach(ClientError),
    #[error("cannot place TAP fds: {0}")]
    Place(std::io::Error),
    #[error(
        "TAP {0} is not in this network namespace: Firecracker opens TAPs by name, so run \
         vmwrapper in the daemon's network namespace"
    )]
    NotHere(protocol::IfName),
    #[error("cannot hold Firecracker's config: {0}")]
    Memfd(std::io::Error),
    #[error("an argument contains a NUL byte")]
    Nul,
    #[error("cannot run {0}: {1}")]
    Exec(String, nix::Error),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") && !argv.iter().any(|a| a == "--") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    // run() returns only when something failed: on success the hypervisor replaced us.
    let Err(e) = run(&argv);
    eprintln!("vmwrapper: {e}");
    ExitCode::from(2)
}

/// Attaches, places the fds, and execs the hypervisor; returns only the failure.
fn run(argv: &[String]) -> Result<std::convert::Infallible, Fail> {
    let a = args::parse(argv)?;
    let kind = a
        .hypervisor
        .or_else(|| Kind::detect(&a.command[0]))
        .ok_or_else(|| Fail::UnknownHypervisor(a.command[0].clone()))?;
    let queues: Vec<u16> = a.nets.iter().map(|n| n.queues).collect();
    kind.check(&queues).map_err(Fail::Queues)?;
    // Firecracker's config is read (and checked) before anything is attached.
    let firecracker = if kind.by_name() {
        let (at, inline, path) =
            vmwrapper::firecracker::config_file(&a.command).ok_or(Fail::NoFirecrackerConfig)?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| Fail::FirecrackerRead(path.clone(), e))?;
        vmwrapper::firecracker::fill(&text, &[])
            .map_err(|e| Fail::FirecrackerConfig(path.clone(), e))?;
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
        Some((dir, version)) => Some((
            SeedDir::open(dir, nix::unistd::getuid()).map_err(|e| Fail::Seed(dir.clone(), e))?,
            dir,
            *version,
        )),
        None => None,
    };
    let mut client = Client::connect(&a.socket).map_err(Fail::Connect)?;
    let req = AttachRequest {
        vm: vm.clone(),
        networks: nets,
    };
    let (attachment, received) = match &a.netns {
        // Opened as the caller: the kernel's permission check is the first gate, the
        // daemon's ownership check the second.
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|e| Fail::Netns(path.clone(), e))?;
            client.attach_pod(req, std::os::fd::AsFd::as_fd(&f))
        }
        None => client.attach(req),
    }
    .map_err(Fail::Attach)?;
    // The connection is not needed any more; the daemon watches our pid, not the socket.
    drop(client);
    // Written before the fds are placed: placing closes every other fd, the seed's among them.
    if let Some((seed, dir, version)) = seed {
        seed.write(&vm, &attachment.interfaces, version)
            .map_err(|e| Fail::Seed(dir.clone(), e))?;
    }
    // Interface i owns `queues` consecutive fds.
    let placed = fds::place(received).map_err(Fail::Place)?;
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
        if let Some(i) = attachment
            .interfaces
            .iter()
            .find(|i| nix::net::if_::if_nametoindex(i.ifname.as_str()).is_err())
        {
            return Err(Fail::NotHere(i.ifname.clone()));
        }
        let filled = vmwrapper::firecracker::fill(&text, &attachment.interfaces)
            .map_err(|e| Fail::FirecrackerConfig(path.clone(), e))?;
        let memfd = vmwrapper::firecracker::memfd_path(&filled).map_err(Fail::Memfd)?;
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
fn exec(argv: &[String]) -> Result<std::convert::Infallible, Fail> {
    let c: Vec<CString> = argv
        .iter()
        .map(|s| CString::new(s.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Fail::Nul)?;
    // Rust ignores SIGPIPE; the hypervisor should get the default disposition back.
    // SAFETY: resetting a signal disposition to SIG_DFL has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let err = nix::unistd::execvp(&c[0], &c).unwrap_err();
    Err(Fail::Exec(argv[0].clone(), err))
}
