//! The daemon's process: `serve` (the socket, systemd's or our own; the file limit; what must
//! be learned before capabilities drop; the runtime; the signals), `down`, and
//! `check-config`. `main.rs` parses the command line and calls these.

use super::AdminError;
use crate::config::Config;
use crate::daemon::Daemon;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

pub fn check_config(file: &Path) -> Result<(), AdminError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| crate::config::ConfigError::Read(file.to_owned(), e))?;
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
            Err(AdminError::Invalid(format!(
                "{}{at}: {}",
                file.display(),
                crate::error_chain(&e)
            )))
        }
    }
}

/// Binds the listening socket: 0660 root:group, refusing to steal a live daemon's socket.
fn bind_socket(path: &Path, group: u32) -> Result<std::os::unix::net::UnixListener, AdminError> {
    let err = |e| AdminError::Socket(path.to_owned(), e);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(AdminError::SocketInUse(path.to_owned()));
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
fn learn_host(config: &Config) -> Result<crate::net::netns::HostNetns, AdminError> {
    let host_netns = crate::net::netns::HostNetns::learn();
    let mut needs = crate::privileges::Needs::of(config);
    if needs.namespaces {
        let place = crate::net::netns::PinPlace::learn(existing_ancestor(&config.state_dir));
        needs.foreign_pins = place.needs_chroot();
        place.install();
    }
    if nix::unistd::geteuid().is_root() {
        crate::privileges::reduce(needs)?;
    } else {
        tracing::warn!("not running as root: capabilities left as they are");
    }
    Ok(host_netns)
}

fn runtime() -> Result<tokio::runtime::Runtime, AdminError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AdminError::Runtime)
}

/// `tapmanager down`: with the daemon stopped, takes its state as a start would (live guests
/// adopted, dead ones reaped), releases what is left, deletes the bridges it made and its
/// tables, then its state directory and lock directory, if nothing else is in them.
pub fn down(config_path: &Path, force: bool) -> Result<(), AdminError> {
    let config = Config::load(config_path)?;
    let state_dir = config.state_dir.clone();
    // As the daemon runs: its children (nft, CNI plugins) get their capabilities that way.
    let host_netns = learn_host(&config)?;
    runtime()?.block_on(async move {
        let daemon = match Daemon::start_for_down(config, host_netns).await {
            Err(crate::daemon::DaemonError::NetnsLock(
                crate::net::netns::LockError::Taken,
            ))
            | Err(crate::daemon::DaemonError::State(
                crate::state::StateError::Locked(_),
            )) => {
                return Err(AdminError::Invalid(
                    "the daemon is running: stop it first (systemctl stop tapmanager.socket tapmanager.service)".into(),
                ))
            }
            r => r?,
        };
        daemon.down(force).await.map_err(AdminError::Down)
    })?;
    // The daemon is gone (its locks with it): what it kept on disk, if only that is left.
    let mut left = Vec::new();
    let lock = state_dir.join("lock");
    let _ = std::fs::remove_file(&lock); // absent is fine
                                         // The lock directory stays: daemons of other network namespaces share it, and one may be
                                         // starting (the package's postrm removes it on purge).
    let dirs = crate::state::PRIVATE_SUBDIRS
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
        Err(AdminError::Invalid(format!(
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

pub fn serve(config_path: &Path) -> Result<(), AdminError> {
    let config = Config::load(config_path)?;
    // Socket activation: systemd's socket if it passed one, else our own.
    let listener = match crate::systemd::listener()
        .map_err(|e| AdminError::Socket(config.socket.clone(), e))?
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
            .map_err(|e| AdminError::Socket(daemon.config_socket(), e))?;
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
        crate::systemd::notify("READY=1");
        daemon.serve(listener, shutdown).await?;
        // Attachments stay: their VMs keep running, and the next start adopts them.
        tracing::info!("stopping; attachments stay in place for the next start");
        Ok(())
    })
}
