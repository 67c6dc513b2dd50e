//! `tapmanager`: parse the command line, then hand over to the library.

use clap::{Parser, Subcommand};
use protocol::{Client, VmId};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    #[error(transparent)]
    Admin(Box<tapmanager::admin::AdminError>),
    #[error(transparent)]
    Client(#[from] protocol::ClientError),
    #[error("network {0} is not ready")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {}", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
}

impl From<tapmanager::admin::AdminError> for MainError {
    fn from(e: tapmanager::admin::AdminError) -> MainError {
        MainError::Admin(Box::new(e))
    }
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
        Cmd::Serve { config } => Ok(tapmanager::admin::serve::serve(&config)?),
        Cmd::Down { config, force } => Ok(tapmanager::admin::serve::down(&config, force)?),
        Cmd::CheckConfig { file } => Ok(tapmanager::admin::serve::check_config(&file)?),
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
                ula: tapmanager::admin::init::random_ula().ok(),
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
                    std::fs::write(&path, text).map_err(|e| MainError::Write(path.clone(), e))?;
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
