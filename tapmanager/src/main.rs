//! `tapmanager`: parse the command line, then hand over to the library.

use clap::{Parser, Subcommand};
use protocol::{Client, VmId};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tapmanager::config::Config;
use tapmanager::daemon::Daemon;

/// What a man page would add to the commands' own help.
const MORE_HELP: &str = "\
Files:
  /etc/tapmanager/tapmanager.toml   the config (README.md, \"Configuration\"; every key)
  /run/tapmanager/tapmanager.sock   the socket (0660 root:group); clients speak the protocol
                                    crate's frames (README.md, \"Protocol\")
  /run/tapmanager/                  state_dir: the journal (attachments/), namespace pins
                                    (netns/), CNI cache (cni/), saved pod interfaces (pods/)

Environment:
  RUST_LOG         the daemon's log filter (default info), e.g. tapmanager=debug
  JOURNAL_STREAM   set by systemd: when it names stderr, logs go to journald natively
  LISTEN_FDS, LISTEN_PID, NOTIFY_SOCKET
                   set by systemd: serve takes the socket it passes (tapmanager.socket)
                   and says READY=1 once it has reconciled its journal with the kernel

Exit status: 0 success; 1 failure (the message says what, often with a hint: line).

Signals: SIGTERM and SIGINT stop serve; attachments stay in place and the next start adopts
the live ones (their callers still run) and removes the rest.

Users start VMs with vmwrapper (vmwrapper --help). Documentation: /usr/share/doc/tapmanager/README.md";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Wires VMs into networks and hands their TAP fds to unprivileged launchers",
    after_long_help = MORE_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon.
    ///
    /// As root: it builds the networks of the config, keeps only the capabilities those
    /// networks need, reconciles its journal with the kernel (adopting live callers'
    /// attachments, removing the rest), then serves the socket (its own, or the one systemd
    /// passes). One daemon per network namespace.
    Serve {
        #[arg(long, default_value = "/etc/tapmanager/tapmanager.toml")]
        config: PathBuf,
    },
    /// Remove everything the daemon built, for good (the package's removal runs it): with the
    /// daemon stopped, release every attachment, then delete the bridges it made (not one it
    /// found), its nftables tables and its state directory.
    ///
    /// Refused while the daemon runs, and, with nothing removed, while a guest's VM still
    /// holds its network (unless --force, which cuts those guests off).
    Down {
        #[arg(long, default_value = "/etc/tapmanager/tapmanager.toml")]
        config: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Write a config with one network from a few flags (printed, or to --output).
    ///
    /// The text is checked by the daemon's own parser before it is written.
    Init {
        /// bridge | isolated | masquerade | macvtap | cni
        #[arg(long, default_value = "bridge")]
        kind: String,
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long, default_value = "tapmanager")]
        group: String,
        /// bridge: the gateway and prefix (10.77.0.1/24); isolated: the range of /30s.
        #[arg(long)]
        subnet: Option<String>,
        /// bridge: masquerade the guests out of the host and answer their DNS on the
        /// gateway (the desktop default network); with --uplink, out of that interface only.
        #[arg(long)]
        nat: bool,
        /// isolated, masquerade, bridge with --nat: the interface traffic leaves by; macvtap:
        /// the lower device.
        #[arg(long)]
        uplink: Option<String>,
        /// cni: the network configuration's name.
        #[arg(long)]
        cni_network: Option<String>,
        /// A DNS server for the guests (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Write here instead of printing; an existing file is kept unless --force.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Check what usually goes wrong on this host (the TUN device, forwarding, bridge
    /// netfilter, your group, other network managers, the daemon) and say how to fix each.
    /// Changes nothing. Exits 1 if something fails.
    Doctor {
        #[arg(long, default_value = "/etc/tapmanager/tapmanager.toml")]
        config: PathBuf,
        #[arg(long, default_value = protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Validate a config (networks and policy) without running anything; each error with its
    /// line. Exits 1 if it is not valid.
    CheckConfig {
        #[arg(default_value = "/etc/tapmanager/tapmanager.toml")]
        file: PathBuf,
    },
    /// List attachments (yours; every one for root).
    List {
        #[arg(long, default_value = protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show one attachment.
    Show {
        vm: VmId,
        #[arg(long, default_value = protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Tear down one attachment now.
    Release {
        vm: VmId,
        #[arg(long, default_value = protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Check that an attachment's network is still as built (CNI CHECK); exits 1 if not.
    Check {
        vm: VmId,
        #[arg(long, default_value = protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Whether each network can take attaches now (CNI STATUS); exits 1 if one cannot.
    Status {
        #[arg(long, default_value = protocol::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("config")]
    Config(#[from] tapmanager::config::ConfigError),
    #[error("cannot prepare socket {}", .0.display())]
    Socket(PathBuf, #[source] std::io::Error),
    #[error("another tapmanager is already listening on {}", .0.display())]
    SocketInUse(PathBuf),
    #[error("cannot reduce capabilities")]
    Privileges(#[from] tapmanager::privileges::PrivilegeError),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("daemon")]
    Daemon(#[from] tapmanager::daemon::DaemonError),
    #[error(transparent)]
    Client(#[from] protocol::ClientError),
    #[error("network {0} is not ready")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
    #[error("down")]
    Down(#[source] tapmanager::daemon::DownError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapmanager: {}", tapmanager::error_chain(&e));
            if let MainError::Client(c) = &e {
                if let Some(h) = c.hint() {
                    eprintln!("hint: {h}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to journald, natively (with each field of an event as a journal field), when
/// stderr is the journal's stream (`JOURNAL_STREAM` names its device and inode, as systemd
/// sets it for a service); to stderr otherwise, or if the journal's socket cannot be reached.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let journal = stderr_is_journal().then(|| {
        tracing_journald::layer().map(|l| {
            l.with_syslog_identifier("tapmanager".to_owned())
                .with_field_prefix(None)
        })
    });
    match journal {
        Some(Ok(layer)) => registry.with(layer).init(),
        Some(Err(e)) => {
            registry
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .init();
            tracing::warn!(error = %e, "stderr is the journal's, but its socket is unreachable: logging to stderr");
        }
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}

/// Whether `JOURNAL_STREAM` ("DEV:INODE") is the device and inode of our stderr.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    want.to_str() == Some(format!("{}:{}", meta.dev(), meta.ino()).as_str())
}

fn run(cli: Cli) -> Result<(), MainError> {
    match cli.cmd {
        Cmd::Serve { config } => serve(&config),
        Cmd::Down { config, force } => down(&config, force),
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::Init {
            kind,
            name,
            group,
            subnet,
            nat,
            uplink,
            cni_network,
            dns,
            output,
            force,
        } => {
            let o = tapmanager::admin::init::InitOptions {
                kind,
                name,
                group,
                subnet,
                nat,
                uplink,
                cni_network,
                dns,
            };
            let text = tapmanager::admin::init::render(&o).map_err(MainError::Invalid)?;
            if nix::unistd::Group::from_name(&o.group)
                .ok()
                .flatten()
                .is_none()
                && o.group.parse::<u32>().is_err()
            {
                eprintln!(
                    "tapmanager: note: group {:?} does not exist yet: create it (`groupadd {}`; \
                     the package's sysusers entry does) before `serve`",
                    o.group, o.group
                );
            }
            match output {
                None => {
                    print!("{text}");
                    Ok(())
                }
                Some(path) => {
                    if path.exists() && !force {
                        return Err(MainError::Invalid(format!(
                            "{} exists; pass --force to replace it",
                            path.display()
                        )));
                    }
                    std::fs::write(&path, text).map_err(|e| MainError::Socket(path.clone(), e))?;
                    eprintln!("tapmanager: wrote {}", path.display());
                    Ok(())
                }
            }
        }
        Cmd::Doctor { config, socket } => doctor(&config, &socket),
        Cmd::List { socket, json } => {
            let list = Client::connect(&socket)?.list()?;
            if json {
                println!("{}", tapmanager::admin::cli::json(&list));
            } else {
                print!("{}", tapmanager::admin::cli::table(&list));
            }
            Ok(())
        }
        Cmd::Show { vm, socket, json } => {
            let a = Client::connect(&socket)?.info(&vm)?;
            if json {
                println!("{}", tapmanager::admin::cli::json(std::slice::from_ref(&a)));
            } else {
                print!(
                    "{}",
                    tapmanager::admin::cli::table(std::slice::from_ref(&a))
                );
            }
            Ok(())
        }
        Cmd::Release { vm, socket } => Ok(Client::connect(&socket)?.release(&vm)?),
        Cmd::Check { vm, socket } => {
            Client::connect(&socket)?.check(&vm)?;
            println!("{vm}: ok");
            Ok(())
        }
        Cmd::Status { socket, json } => {
            let list = Client::connect(&socket)?.status()?;
            if json {
                println!("{}", tapmanager::admin::cli::status_json(&list));
            } else {
                print!("{}", tapmanager::admin::cli::status_table(&list));
            }
            match list.iter().find(|n| !n.ready) {
                Some(n) => Err(MainError::NotReady(n.network.to_string())),
                None => Ok(()),
            }
        }
    }
}

fn doctor(config: &Path, socket: &Path) -> Result<(), MainError> {
    use tapmanager::admin::doctor::{self, Level};
    let found = doctor::check_host(config, socket);
    print!("{}", doctor::render(&found));
    match found.iter().filter(|f| f.level == Level::Fail).count() {
        0 => Ok(()),
        n => Err(MainError::Invalid(format!("{n} check(s) failed"))),
    }
}

fn check_config(file: &Path) -> Result<(), MainError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| tapmanager::config::ConfigError::Read(file.to_owned(), e))?;
    match Config::parse(&text) {
        Ok(c) => {
            println!("{}: valid", file.display());
            for (name, n) in &c.networks {
                let kind = n.kind.name();
                println!("  network {name}: {kind}");
            }
            let q = c.policy.default;
            println!(
                "  policy: {} attachments and {} queues a uid, {} override(s)",
                q.max_attachments,
                q.max_queues,
                c.policy.overrides.len()
            );
            Ok(())
        }
        Err(e) => {
            let at = Config::error_line(&text, &e).map_or(String::new(), |l| format!(":{l}"));
            Err(MainError::Invalid(format!(
                "{}{at}: {}",
                file.display(),
                tapmanager::error_chain(&e)
            )))
        }
    }
}

/// Binds the listening socket: 0660 root:group, refusing to steal a live daemon's socket.
fn bind_socket(path: &Path, group: u32) -> Result<std::os::unix::net::UnixListener, MainError> {
    let err = |e| MainError::Socket(path.to_owned(), e);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(MainError::SocketInUse(path.to_owned()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    std::os::unix::fs::chown(path, Some(0), Some(group)).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// What must be learned while every capability is still there: pid 1's network namespace
/// (it does not open without them) and where namespace pins outlive the daemon (it may enter
/// pid 1's mount namespace). Then the capabilities the config needs are all that is kept;
/// before any thread exists, since capabilities are per thread.
fn learn_host(config: &Config) -> Result<tapmanager::net::netns::HostNetns, MainError> {
    let host_netns = tapmanager::net::netns::HostNetns::learn();
    let mut needs = tapmanager::privileges::Needs::of(config);
    if needs.namespaces {
        let place = tapmanager::net::netns::PinPlace::learn(existing_ancestor(&config.state_dir));
        needs.foreign_pins = place.needs_chroot();
        place.install();
    }
    if nix::unistd::geteuid().is_root() {
        tapmanager::privileges::reduce(needs)?;
    } else {
        tracing::warn!("not running as root: capabilities left as they are");
    }
    Ok(host_netns)
}

fn runtime() -> Result<tokio::runtime::Runtime, MainError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(MainError::Runtime)
}

/// `tapmanager down`: with the daemon stopped, takes its state as a start would (live guests
/// adopted, dead ones reaped), releases what is left, deletes the bridges it made and its
/// tables, then its state directory and lock directory, if nothing else is in them.
fn down(config_path: &Path, force: bool) -> Result<(), MainError> {
    let config = Config::load(config_path)?;
    let state_dir = config.state_dir.clone();
    // As the daemon runs: its children (nft, CNI plugins) get their capabilities that way.
    let host_netns = learn_host(&config)?;
    runtime()?.block_on(async move {
        let daemon = match Daemon::start_for_down(config, host_netns).await {
            Err(tapmanager::daemon::DaemonError::NetnsLock(
                tapmanager::net::netns::LockError::Taken,
            ))
            | Err(tapmanager::daemon::DaemonError::State(
                tapmanager::state::StateError::Locked(_),
            )) => {
                return Err(MainError::Invalid(
                    "the daemon is running: stop it first (systemctl stop tapmanager.socket tapmanager.service)".into(),
                ))
            }
            r => r?,
        };
        daemon.down(force).await.map_err(MainError::Down)
    })?;
    // The daemon is gone (its locks with it): what it kept on disk, if only that is left.
    let mut left = Vec::new();
    let lock = state_dir.join("lock");
    let _ = std::fs::remove_file(&lock); // absent is fine
                                         // The lock directory stays: daemons of other network namespaces share it, and one may be
                                         // starting (the package's postrm removes it on purge).
    let dirs = tapmanager::state::PRIVATE_SUBDIRS
        .iter()
        .map(|d| state_dir.join(d))
        .chain([state_dir.clone()]);
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => left.push(format!("{} ({e})", dir.display())),
        }
    }
    if left.is_empty() {
        println!("tapmanager: down: every attachment, bridge, table and state file removed");
        Ok(())
    } else {
        Err(MainError::Invalid(format!(
            "down: everything was torn down, but these are not empty: {}",
            left.join(", ")
        )))
    }
}

/// `path` or its nearest ancestor that exists (the state directory is made later).
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

fn serve(config_path: &Path) -> Result<(), MainError> {
    let config = Config::load(config_path)?;
    // Socket activation: systemd's socket if it passed one, else our own.
    let listener = match tapmanager::systemd::listener()
        .map_err(|e| MainError::Socket(config.socket.clone(), e))?
    {
        Some(l) => {
            tracing::info!("using the socket systemd passed");
            l
        }
        None => bind_socket(&config.socket, config.group)?,
    };
    // Every NIC holds a packet socket and every attachment a pidfd: the default soft limit
    // of 1024 fds would end attaches for everyone at a few hundred NICs.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    let host_netns = learn_host(&config)?;
    runtime()?.block_on(async move {
        let daemon = Daemon::start(config, host_netns).await?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| MainError::Socket(daemon.config_socket(), e))?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            s.cancel();
        });
        tracing::info!(socket = %daemon.config_socket().display(), "serving");
        // Reconciled and listening: a Type=notify unit is started now.
        tapmanager::systemd::notify("READY=1");
        daemon.serve(listener, shutdown).await?;
        // Attachments stay: their VMs keep running, and the next start adopts them.
        tracing::info!("stopping; attachments stay in place for the next start");
        Ok(())
    })
}
