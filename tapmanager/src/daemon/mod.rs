//! The daemon: accept connections, identify and authorize callers, dispatch requests.
//!
//! # Theory of operation
//!
//! One tokio runtime; one task per connection. A connection is identified once
//! ([`crate::peer`]): uid, groups and a pidfd pinning the caller's process. Only root and
//! members of the configured group (or of a network's allow lists) get past the handshake.
//!
//! Attachments live in a [`Registry`] keyed by (uid, VM id), mirrored by the journal on disk.
//! An attach first *reserves* its entry under the registry lock (so a second attach of the same
//! id, a MAC clash or an exhausted pool is refused before anything is created), then builds the
//! network ([`crate::lifecycle`]) outside the lock, journals it, and only then replies with the
//! fds. A watcher task per attachment waits on the caller's pidfd and tears everything down when
//! the caller exits; Release does the same on request. Teardown removes the journal entry last,
//! so a daemon killed halfway finds the rest at start-up, where [`Daemon::start`] reconciles:
//! live callers' attachments are adopted again, dead ones torn down, unknown links removed.
//!
//! Where: `server.rs` (the socket, the handshake, dispatch), `auth.rs` (who may do what,
//! including which pod namespaces a caller may hand over), `attach.rs` (an attach's way
//! through the registry), `registry.rs` (the attachments, their exit watchers, release).

mod attach;
mod auth;
mod registry;
mod server;

pub(crate) use registry::Key;
use registry::Registry;

use crate::config::Config;
use crate::kinds::Bridges;
use crate::lifecycle;
use crate::net::firewall::Firewall;
use crate::net::link::Links;
use crate::state::Journal;
use protocol::{Error, ErrorCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Most NICs one attach may ask for.
pub const MAX_NICS: usize = 8;
/// Most queues one NIC may ask for (8 NICs × 8 queues = the protocol's fd limit).
pub const MAX_QUEUES: u16 = 8;
/// Most simultaneous connections one uid may hold.
pub const MAX_CONNECTIONS_PER_UID: usize = 64;
/// How long an attach waits for a release (or attach) of the same id still in progress.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub(crate) config: Config,
    pub(crate) journal: Journal,
    /// Held for the daemon's life: one daemon per network namespace.
    _netns_lock: crate::net::netns::NetnsLock,
    /// The host's network namespace, learned before capabilities were dropped: a caller's
    /// namespace that is the host's is never taken over.
    host_netns: crate::net::netns::HostNetns,
    pub(crate) links: Links,
    /// Deletes links for teardown in batches, through a netlink connection on a thread of its
    /// own (see [`Links::connect_on_own_thread`]).
    pub(crate) reaper: crate::net::reaper::Reaper,
    pub(crate) firewall: Firewall,
    pub(crate) bridges: Bridges,
    pub(crate) registry: Mutex<Registry>,
    /// Woken whenever an entry leaves `Building` or `Releasing` (ready, failed or gone), for
    /// an attach of the same id waiting for it to settle.
    settled: tokio::sync::Notify,
    /// Which uid attached each guest address, per network with a DNS forwarder (the
    /// forwarder caps a uid's TCP connections): filled in once an attachment is ready or
    /// adopted, emptied once it is gone.
    dns_owners: HashMap<protocol::NetworkName, crate::dns::GuestOwners>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory")]
    State(#[from] crate::state::StateError),
    #[error("netlink")]
    Link(#[from] crate::net::link::LinkError),
    #[error("firewall")]
    Firewall(#[from] crate::net::firewall::FirewallError),
    #[error("cannot enable IP forwarding (IPv4 for routed networks and NAT, IPv6 for NAT66)")]
    Host(#[source] std::io::Error),
    #[error(transparent)]
    NetnsLock(#[from] crate::net::netns::LockError),
    #[error("the daemon ran in another network namespace ({0}; this is {1}): its guests, bridges and tables are there; run this there (ip netns exec NAME ...)")]
    OtherNetns(String, String),
    #[error("bridge")]
    Bridge(#[source] Box<crate::kinds::bridge::BridgeError>),
    #[error("cannot set up a routed network's device")]
    Routed(#[source] Box<crate::kinds::KindError>),
    #[error("reconciling the kernel with the journal")]
    Reconcile(#[source] Box<lifecycle::ReconcileError>),
    #[error("DNS forwarder")]
    Dns(#[from] crate::dns::BindError),
    #[error("accepting a connection failed")]
    Accept(#[source] std::io::Error),
}

/// What a daemon is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Serve,
    Down,
}

/// Why `tapmanager down` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error("guests still hold their networks: {0}; stop their VMs first, or pass --force to cut them off")]
    Running(String),
    #[error("these attachments could not be torn down (see the log): {0}")]
    NotReleased(String),
    #[error("cannot delete a bridge")]
    Link(#[from] crate::net::link::LinkError),
    #[error("cannot remove {}", .0.display())]
    Remove(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot delete the daemon's nftables tables")]
    Tables(#[source] std::io::Error),
}

fn err(code: ErrorCode, msg: impl Into<String>) -> Error {
    Error::new(code, msg)
}

/// An error as a client of protocol `version` can read it: a code newer than its version
/// becomes the nearest older one, with the same message.
fn for_version(mut e: Error, version: u32) -> Error {
    if version < 6 && e.code == ErrorCode::CapacityExceeded {
        e.code = ErrorCode::HostSetup;
    }
    if version < 4 && e.code == ErrorCode::HostSetup {
        e.code = ErrorCode::Internal;
    }
    e
}

impl Daemon {
    /// Opens the journal, prepares the kernel side and reconciles it with the journal.
    /// Must run inside the tokio runtime, on a thread in the daemon's network namespace.
    /// `host_netns` is [`crate::net::netns::HostNetns::learn`], called before capabilities dropped.
    pub async fn start(
        config: Config,
        host_netns: crate::net::netns::HostNetns,
    ) -> Result<Arc<Daemon>, DaemonError> {
        Daemon::start_as(config, host_netns, Purpose::Serve).await
    }

    /// What `tapmanager down` starts from: the journal reconciled as [`Daemon::start`] does,
    /// but nothing new on the host: no forwarding turned on, no bridge made (one that is
    /// there is used), no DNS forwarder. Refused in a network namespace other than the one
    /// the daemon last ran in: its guests and tables are there, not here.
    pub async fn start_for_down(
        config: Config,
        host_netns: crate::net::netns::HostNetns,
    ) -> Result<Arc<Daemon>, DaemonError> {
        Daemon::start_as(config, host_netns, Purpose::Down).await
    }

    async fn start_as(
        config: Config,
        host_netns: crate::net::netns::HostNetns,
        purpose: Purpose,
    ) -> Result<Arc<Daemon>, DaemonError> {
        let journal = Journal::open(&config.state_dir)?;
        let netns_lock =
            crate::net::netns::NetnsLock::take(std::path::Path::new(crate::net::netns::LOCK_DIR))?;
        let ran_in = config.state_dir.join("netns-id");
        let here = crate::net::netns::own_identity().map_err(DaemonError::Host)?;
        if purpose == Purpose::Down {
            match std::fs::read_to_string(&ran_in) {
                Ok(id) if id.trim() != here => {
                    return Err(DaemonError::OtherNetns(id.trim().to_owned(), here))
                }
                _ => {}
            }
        } else {
            std::fs::write(&ran_in, &here).map_err(DaemonError::Host)?;
        }
        let links = Links::connect()?;
        let teardown_links = Links::connect_on_own_thread("tm-teardown")?;
        if purpose == Purpose::Serve {
            crate::kinds::isolated::prepare_host(&config).map_err(DaemonError::Host)?;
        }
        let routed = crate::kinds::isolated::routed_nets(&config);
        let nat_bridges = crate::kinds::bridge::nat_bridges(&config);
        let hairpins = crate::kinds::bridge::hairpins(&config);
        let l3 = crate::kinds::routed::l3_nets(&config);
        let firewall = Firewall::start(routed, l3, &nat_bridges, &hairpins).await?;
        if purpose == Purpose::Serve {
            crate::kinds::routed::ensure_devices(&config, &links)
                .await
                .map_err(|e| DaemonError::Routed(Box::new(e)))?;
        }
        let bridges = match purpose {
            Purpose::Serve => crate::kinds::bridge::ensure_bridges(&config, &links)
                .await
                .map_err(|e| DaemonError::Bridge(Box::new(e)))?,
            Purpose::Down => crate::kinds::bridge::existing_bridges(&config, &links)
                .await
                .map_err(|e| DaemonError::Bridge(Box::new(e)))?,
        };
        // The forwarders listen on the bridges' gateway addresses, there from here on.
        let mut forwarders = Vec::new();
        let mut dns_owners = HashMap::new();
        let serving = config.networks.iter().filter(|_| purpose == Purpose::Serve);
        for (name, n) in serving {
            if let crate::config::NetworkKind::Bridge(b) = &n.kind {
                if let Some(f) = &b.dns_forward {
                    let owners = crate::dns::GuestOwners::default();
                    forwarders.push(crate::dns::Forwarder::bind(
                        b.gateway,
                        b.gateway6,
                        f,
                        owners.clone(),
                    )?);
                    dns_owners.insert(name.clone(), owners);
                }
            }
        }
        for f in forwarders {
            f.spawn();
        }
        let daemon = Arc::new(Daemon {
            config,
            journal,
            _netns_lock: netns_lock,
            host_netns,
            links,
            reaper: crate::net::reaper::Reaper::start(teardown_links),
            firewall,
            bridges,
            registry: Mutex::new(Registry::default()),
            settled: tokio::sync::Notify::new(),
            dns_owners,
        });
        let adopted = lifecycle::reconcile(&daemon.cx())
            .await
            .map_err(|e| DaemonError::Reconcile(Box::new(e)))?;
        for a in adopted {
            daemon.adopt(a.record, a.pidfd, a.cancel);
        }
        Ok(daemon)
    }

    /// `tapmanager down`: releases every attachment (each as its VM's exit would), then
    /// deletes the bridges the daemon made and its tables. Refused, with nothing removed,
    /// while a VM still holds its network, unless `force`.
    pub async fn down(self: &Arc<Self>, force: bool) -> Result<(), DownError> {
        let keys: Vec<Key> = {
            let reg = self.registry.lock().unwrap();
            reg.entries.keys().cloned().collect()
        };
        if !keys.is_empty() && !force {
            let who: Vec<String> = keys
                .iter()
                .map(|(uid, vm)| format!("{vm} (uid {uid})"))
                .collect();
            return Err(DownError::Running(who.join(", ")));
        }
        for key in &keys {
            self.release(key).await;
        }
        let left: Vec<String> = {
            let reg = self.registry.lock().unwrap();
            reg.entries.keys().map(|(_, vm)| vm.to_string()).collect()
        };
        if !left.is_empty() {
            return Err(DownError::NotReleased(left.join(", ")));
        }
        // Every bridge marked as made here, the config's or not (a network removed since),
        // if it is still the one that was made (a mark outlives its bridge: the admin may
        // have made another of that name since).
        let marks = self.config.state_dir.join("bridges");
        let found: Vec<_> = std::fs::read_dir(&marks)
            .map_err(|e| DownError::Remove(marks.clone(), e))?
            .collect();
        // Shard bridges (the bridge kind's) of every bridge the daemon made or the config
        // names, there or not (an admin's bridge deleted meanwhile leaves its shards): always
        // the daemon's own.
        let mut sharded: Vec<String> = self
            .config
            .networks
            .values()
            .filter_map(|n| match &n.kind {
                crate::config::NetworkKind::Bridge(b) => Some(b.bridge.to_string()),
                _ => None,
            })
            .collect();
        sharded.extend(found.iter().filter_map(|e| {
            e.as_ref()
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        }));
        crate::kinds::bridge::remove_shards(&self.links, &self.config.interface_prefix, &sharded)
            .await?;
        for entry in found {
            let mark = entry
                .map_err(|e| DownError::Remove(marks.clone(), e))?
                .path();
            let made = std::fs::read_to_string(&mark).unwrap_or_default();
            let name = mark
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(link) = self.links.get(&name).await? {
                if made.trim() == link.index.to_string() {
                    self.links.delete_if_exists(&name).await?;
                } else {
                    tracing::warn!(bridge = %name, "not the bridge this daemon made (another index): left");
                }
            }
            std::fs::remove_file(&mark).map_err(|e| DownError::Remove(mark, e))?;
        }
        crate::kinds::routed::remove_routes(&self.config, &self.links).await;
        crate::net::firewall::remove_all_tables().map_err(DownError::Tables)?;
        let _ = std::fs::remove_file(self.config.state_dir.join("netns-id")); // absent is fine
        Ok(())
    }

    /// Accepts connections until `shutdown` fires.
    pub async fn serve(
        self: &Arc<Self>,
        listener: UnixListener,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                        tracing::error!(error = %e, "out of file descriptors; pausing accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return Err(DaemonError::Accept(e)),
                },
            };
            let d = Arc::clone(self);
            tokio::spawn(async move { d.connection(stream).await });
        }
    }
}

impl Daemon {
    /// What the lifecycle works with.
    pub(crate) fn cx(&self) -> lifecycle::Cx<'_> {
        lifecycle::Cx {
            kit: self.kit(),
            journal: &self.journal,
            reaper: &self.reaper,
        }
    }

    /// What the kinds work with.
    pub(crate) fn kit(&self) -> crate::kinds::Kit<'_> {
        crate::kinds::Kit {
            config: &self.config,
            links: &self.links,
            firewall: &self.firewall,
            bridges: &self.bridges,
        }
    }

    /// The socket path from the config.
    pub fn config_socket(&self) -> std::path::PathBuf {
        self.config.socket.clone()
    }
}
