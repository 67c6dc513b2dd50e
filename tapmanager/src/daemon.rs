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

use crate::config::Config;
use crate::kinds::Bridges;
use crate::lifecycle::{self, Built};
use crate::net::firewall::Firewall;
use crate::net::link::Links;
use crate::peer::{self, Peer};
use crate::state::{Journal, Record};
use protocol::fdpass::{read_frame_async, write_frame_async};
use protocol::{
    AttachRequest, Attachment, Error, ErrorCode, Hello, HelloReply, Request, RequestBody, Response,
    ResponseBody, VmId, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
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

type Key = (u32, VmId);

/// An attachment the daemon holds: its record and what keeps it running.
#[derive(Debug)]
struct Entry {
    record: Record,
    /// Cancels the DHCP servers and the exit watcher.
    cancel: CancellationToken,
    state: State,
}

/// Where an attachment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reserved; the kernel side is being built. Invisible to List/Info/Release.
    Building,
    /// Handed out; its caller may use, list, show and release it.
    Ready,
    /// Being torn down (in the background after a Release).
    Releasing,
    /// A teardown did not complete (the error was logged). Listed, and Release (or the
    /// caller's exit, or a restart) tries again.
    Failed,
}

impl Entry {
    /// Whether the caller sees it (List, Info, Release).
    fn visible(&self) -> bool {
        matches!(self.state, State::Ready | State::Failed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: HashMap<Key, Entry>,
    connections: HashMap<u32, usize>,
}

impl Registry {
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        self.entries.values().map(|e| &e.record)
    }
}

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
    #[error("cannot enable IPv4 forwarding for routed networks")]
    Host(#[source] std::io::Error),
    #[error(transparent)]
    NetnsLock(#[from] crate::net::netns::LockError),
    #[error("the daemon ran in another network namespace ({0}; this is {1}): its guests, bridges and tables are there; run this there (ip netns exec NAME ...)")]
    OtherNetns(String, String),
    #[error("bridge")]
    Bridge(#[source] Box<crate::kinds::bridge::BridgeError>),
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

/// An error as a client of protocol `version` can read it: codes newer than its version
/// become `Internal`, with the same message.
fn for_version(mut e: Error, version: u32) -> Error {
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
        let routed = config
            .networks
            .values()
            .filter_map(|n| match &n.kind {
                crate::config::NetworkKind::Isolated(i) => Some(i),
                _ => None,
            })
            .enumerate()
            .map(|(index, i)| crate::net::firewall::RoutedNet {
                index,
                range: i.range,
                uplink: i.uplink.clone(),
                drop: i.drop.clone(),
                allow: i.allow.clone(),
                forwards: i.masquerade.as_ref().is_some_and(|m| !m.ports.is_empty()),
            })
            .collect();
        let nat_bridges: Vec<_> = config
            .networks
            .values()
            .filter_map(|n| match &n.kind {
                crate::config::NetworkKind::Bridge(b) => {
                    b.nat
                        .as_ref()
                        .map(|uplink| crate::net::firewall::NatBridge {
                            bridge: b.bridge.clone(),
                            subnet: b.gateway.trunc(),
                            uplink: uplink.clone(),
                        })
                }
                _ => None,
            })
            .collect();
        let firewall = Firewall::start(routed, &nat_bridges).await?;
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
                    forwarders.push(crate::dns::Forwarder::bind(b.gateway, f, owners.clone())?);
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
        lifecycle::reconcile(&daemon).await?;
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
        let found = std::fs::read_dir(&marks).map_err(|e| DownError::Remove(marks.clone(), e))?;
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

    /// Whether this caller may talk to the daemon at all.
    fn may_connect(&self, p: &Peer) -> bool {
        p.is_root()
            || p.in_group(self.config.group)
            || self.config.networks.values().any(|n| {
                n.access.users.contains(&p.uid) || n.access.groups.iter().any(|g| p.in_group(*g))
            })
    }

    async fn connection(self: Arc<Self>, stream: UnixStream) {
        let peer = match peer::identify(stream.as_fd()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot identify caller; connection dropped");
                return;
            }
        };
        let uid = peer.uid;
        let admitted = {
            let mut reg = self.registry.lock().unwrap();
            let n = reg.connections.entry(uid).or_default();
            if *n >= MAX_CONNECTIONS_PER_UID && uid != 0 {
                false
            } else {
                *n += 1;
                true
            }
        };
        let reply = if !self.may_connect(&peer) {
            HelloReply::Rejected(err(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {uid} is not root and not a member of group {} (gid {})",
                    group_name(self.config.group),
                    self.config.group
                ),
            ))
        } else if !admitted {
            HelloReply::Rejected(err(
                ErrorCode::QuotaExceeded,
                format!("uid {uid} already holds {MAX_CONNECTIONS_PER_UID} connections"),
            ))
        } else {
            HelloReply::Accepted(Hello {
                version: PROTOCOL_VERSION,
            })
        };
        self.converse(&stream, &peer, reply).await;
        if admitted {
            let mut reg = self.registry.lock().unwrap();
            if let Some(n) = reg.connections.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    reg.connections.remove(&uid);
                }
            }
        }
    }

    /// The handshake, then requests until the caller closes, errs or idles out.
    async fn converse(self: &Arc<Self>, stream: &UnixStream, peer: &Peer, mut reply: HelloReply) {
        let hello =
            tokio::time::timeout(protocol::REQUEST_TIMEOUT, read_frame_async::<Hello>(stream))
                .await;
        let hello = match hello {
            Ok(Ok((h, _fds))) => h,
            Ok(Err(e)) => {
                tracing::debug!(uid = peer.uid, error = %e, "bad hello; connection dropped");
                return;
            }
            Err(_) => {
                tracing::debug!(uid = peer.uid, "no hello in time; connection dropped");
                return;
            }
        };
        let speaks = protocol::OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION;
        if !speaks.contains(&hello.version) && matches!(reply, HelloReply::Accepted(_)) {
            reply = HelloReply::Rejected(err(
                ErrorCode::VersionMismatch,
                format!(
                    "client speaks protocol version {}, this daemon speaks {} to {}",
                    hello.version,
                    speaks.start(),
                    speaks.end()
                ),
            ));
        }
        // The version both speak: the client's, when it is an older one.
        if let HelloReply::Accepted(h) = &mut reply {
            h.version = hello.version;
        }
        let accepted = matches!(reply, HelloReply::Accepted(_));
        if write_frame_async(stream, &reply, &[]).await.is_err() || !accepted {
            return;
        }
        loop {
            let req = tokio::time::timeout(IDLE_TIMEOUT, read_frame_async::<Request>(stream)).await;
            let req = match req {
                // Only an attach that takes over a pod's interface carries an fd; fds nobody
                // asked for are closed as soon as `handle` is done with them.
                Ok(Ok((req, fds))) => (req, fds),
                Ok(Err(protocol::FrameError::Closed)) => return,
                Ok(Err(e)) => {
                    tracing::debug!(uid = peer.uid, error = %e, "malformed frame; connection closed");
                    // A frame that arrived whole but does not decode (a name that is too long,
                    // empty or has odd bytes, an unknown variant, fds it did not announce) or
                    // announces too much gets a typed answer before the connection closes.
                    // Its id is unknown: 0.
                    if matches!(
                        e,
                        protocol::FrameError::Decode(_)
                            | protocol::FrameError::TrailingBytes(_)
                            | protocol::FrameError::FdCountMismatch { .. }
                            | protocol::FrameError::TooManyFds(_)
                            | protocol::FrameError::TooLarge(_)
                    ) {
                        let response = Response {
                            id: 0,
                            body: Err(err(
                                ErrorCode::InvalidRequest,
                                format!("malformed request: {}", crate::error_chain(&e)),
                            )),
                        };
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            write_frame_async(stream, &response, &[]),
                        )
                        .await; // best effort: the connection closes either way
                    }
                    return;
                }
                Err(_) => return,
            };
            let (req, passed) = req;
            let id = req.id;
            let (body, fds) = match self.handle(peer, req.body, passed).await {
                Ok((body, fds)) => (Ok(body), fds),
                Err(e) => (Err(e), Vec::new()),
            };
            let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            let body = body.map_err(|e| for_version(e, hello.version));
            let response = Response { id, body };
            if let Err(e) = write_frame_async(stream, &response, &borrowed).await {
                // The caller never got its fds (it gave up or went away): an attachment it
                // cannot use must not outlive the reply, or its retry would be refused.
                if let Ok(ResponseBody::Attached(a)) = &response.body {
                    self.release(&(a.uid, a.vm.clone())).await;
                }
                tracing::debug!(uid = peer.uid, error = %e, "reply not delivered");
                return;
            }
        }
    }

    async fn handle(
        self: &Arc<Self>,
        peer: &Peer,
        body: RequestBody,
        passed: Vec<OwnedFd>,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), Error> {
        match body {
            RequestBody::Attach(req) => {
                let (a, fds) = self.attach(peer, req, passed).await?;
                Ok((ResponseBody::Attached(a), fds))
            }
            // Any fds that came with these are dropped (closed) here.
            RequestBody::Release { vm } => {
                let key = self.find(peer, &vm)?;
                // The reply does not wait for the kernel: deleting links and namespaces takes
                // tens of ms. The entry stays (releasing) until teardown is complete, so the
                // id, addresses and names are not reused before then.
                if let Some(job) = self.begin_release(&key) {
                    let d = Arc::clone(self);
                    tokio::spawn(async move { d.finish_release(&key, job).await });
                }
                Ok((ResponseBody::Released, Vec::new()))
            }
            RequestBody::List => {
                let reg = self.registry.lock().unwrap();
                let mut list: Vec<Attachment> = reg
                    .entries
                    .values()
                    .filter(|e| e.visible() && (peer.is_root() || e.record.uid == peer.uid))
                    .map(|e| e.record.attachment())
                    .collect();
                list.sort_by(|a, b| (a.uid, &a.vm).cmp(&(b.uid, &b.vm)));
                Ok((ResponseBody::List(list), Vec::new()))
            }
            RequestBody::Info { vm } => {
                let key = self.find(peer, &vm)?;
                let reg = self.registry.lock().unwrap();
                let e = reg.entries.get(&key).ok_or_else(|| not_found(&vm))?;
                Ok((ResponseBody::Info(e.record.attachment()), Vec::new()))
            }
            RequestBody::Check { vm } => {
                let key = self.find(peer, &vm)?;
                let record = {
                    let reg = self.registry.lock().unwrap();
                    reg.entries
                        .get(&key)
                        .ok_or_else(|| not_found(&vm))?
                        .record
                        .clone()
                };
                for nic in &record.nics {
                    let iface = &nic.iface;
                    if let crate::state::NicState::Cni { .. } = nic.built {
                        crate::kinds::cni::port::check(&self.kit(), iface)
                            .await
                            .map_err(|e| {
                                err(
                                    ErrorCode::Internal,
                                    format!(
                                        "{} ({}): {}",
                                        iface.ifname,
                                        iface.network,
                                        crate::error_chain(&*e)
                                    ),
                                )
                            })?;
                    }
                }
                Ok((ResponseBody::Checked, Vec::new()))
            }
            RequestBody::Status => Ok((ResponseBody::Status(self.status().await), Vec::new())),
        }
    }

    /// Every network's readiness: a CNI network asks its plugins (STATUS, spec 1.1) once its
    /// list is found; the daemon's own kinds are ready while it serves.
    async fn status(&self) -> Vec<protocol::NetworkStatus> {
        use crate::config::NetworkKind;
        let mut out = Vec::new();
        for (name, net) in &self.config.networks {
            let (ready, message) = match &net.kind {
                NetworkKind::Cni(c) => crate::kinds::cni::port::status(c).await,
                // The daemon's own kinds are ready while it serves.
                _ => (true, String::new()),
            };
            let kind = net.kind.name();
            out.push(protocol::NetworkStatus {
                network: name.clone(),
                kind: kind.to_owned(),
                ready,
                message,
            });
        }
        out
    }

    /// The key of the caller's attachment `vm`. Root may name another uid's VM when the id is
    /// unique across uids.
    fn find(&self, peer: &Peer, vm: &VmId) -> Result<Key, Error> {
        let reg = self.registry.lock().unwrap();
        let own = (peer.uid, vm.clone());
        if reg.entries.get(&own).is_some_and(Entry::visible) {
            return Ok(own);
        }
        if peer.is_root() {
            let mut matches = reg
                .entries
                .iter()
                .filter(|(k, e)| k.1 == *vm && e.visible());
            if let (Some((k, _)), None) = (matches.next(), matches.next()) {
                return Ok(k.clone());
            }
        }
        Err(not_found(vm))
    }

    /// The shim path's gate: the namespace fd a caller passed must be a network namespace,
    /// neither the daemon's nor the host's, and owned by the caller (its user namespace
    /// belongs to the caller's uid) unless the caller is root or each pod network it names
    /// lets it adopt any. Returns the namespace's identity.
    fn admit_pod_netns(
        &self,
        peer: &Peer,
        req: &AttachRequest,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(u64, u64), Error> {
        let bad = |m: String| err(ErrorCode::InvalidRequest, m);
        let owner = crate::net::netns::owner_of_netns(fd)
            .map_err(|e| bad(format!("the fd passed with the take-over: {e}")))?;
        let id = crate::net::netns::identity(fd).map_err(|e| bad(e.to_string()))?;
        let own = std::fs::File::open("/proc/self/ns/net")
            .and_then(|f| crate::net::netns::identity(std::os::fd::AsFd::as_fd(&f)));
        let what = match (own.is_ok_and(|o| o == id), self.host_netns.is_host(id)) {
            (true, _) => Some(
                "that is the daemon's own network namespace: its interfaces are never taken over",
            ),
            (false, Some(true)) => {
                Some("that is the host's network namespace: its interfaces are never taken over")
            }
            (false, Some(false)) => None,
            (false, None) => Some(
                "the host's network namespace cannot be told apart on this machine (pid 1's \
                 was unreadable when the daemon started, and the kernel is older than 6.18), \
                 so no namespace is taken over",
            ),
        };
        if let Some(what) = what {
            return Err(err(ErrorCode::PermissionDenied, what));
        }
        if peer.is_root() || owner == peer.uid {
            return Ok(id);
        }
        for n in req.networks.iter().filter(|n| n.take_over.is_some()) {
            let Some(crate::config::NetworkKind::Pod(p)) =
                self.config.network(&n.network).map(|x| &x.kind)
            else {
                continue; // plan() refuses it with a clearer message
            };
            let a = &p.adopt_any;
            if !(a.users.contains(&peer.uid) || a.groups.iter().any(|g| peer.in_group(*g))) {
                return Err(err(
                    ErrorCode::PermissionDenied,
                    format!(
                        "uid {} does not own that network namespace (its user namespace \
                         belongs to uid {owner}), and network {} does not let it adopt others",
                        peer.uid, n.network
                    ),
                ));
            }
        }
        Ok(id)
    }

    async fn attach(
        self: &Arc<Self>,
        peer: &Peer,
        req: AttachRequest,
        passed: Vec<OwnedFd>,
    ) -> Result<(Attachment, Vec<OwnedFd>), Error> {
        if req.networks.is_empty() || req.networks.len() > MAX_NICS {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("ask for 1 to {MAX_NICS} networks"),
            ));
        }
        for n in &req.networks {
            if n.queues == 0 || n.queues > MAX_QUEUES {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    format!("queues must be 1 to {MAX_QUEUES}, not {}", n.queues),
                ));
            }
            let net = self.config.network(&n.network).ok_or_else(|| {
                let known: Vec<&str> = self.config.networks.keys().map(|k| k.as_str()).collect();
                err(
                    ErrorCode::UnknownNetwork,
                    format!(
                        "no network {:?}; these exist: {}",
                        n.network.as_str(),
                        known.join(", ")
                    ),
                )
            })?;
            let a = &net.access;
            let allowed = peer.is_root()
                || (a.daemon_group && peer.in_group(self.config.group))
                || a.users.contains(&peer.uid)
                || a.groups.iter().any(|g| peer.in_group(*g));
            if !allowed {
                return Err(err(
                    ErrorCode::PermissionDenied,
                    format!("uid {} may not use network {}", peer.uid, n.network),
                ));
            }
        }

        // The shim path: the one fd of the frame is the pod's namespace; other fds are closed.
        let pod_fd = if req.networks.iter().any(|n| n.take_over.is_some()) {
            Some(passed.into_iter().next().ok_or_else(|| {
                err(
                    ErrorCode::InvalidRequest,
                    "a take-over needs the pod's network namespace as the request's fd".to_owned(),
                )
            })?)
        } else {
            None
        };
        let pod_netns = match &pod_fd {
            Some(fd) => Some(self.admit_pod_netns(peer, &req, fd.as_fd())?),
            None => None,
        };
        let key = (peer.uid, req.vm.clone());
        let cancel = CancellationToken::new();
        // The same id again while its release finishes in the background (or while another
        // attach of it is being built) waits for the outcome rather than failing at once.
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            // Registered before the look, so a change right after it still wakes us.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let busy = self
                .registry
                .lock()
                .unwrap()
                .entries
                .get(&key)
                .map(|e| e.state);
            if !matches!(busy, Some(State::Building | State::Releasing)) {
                break;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                break;
            }
        }
        let mut record = {
            let mut reg = self.registry.lock().unwrap();
            if reg.entries.contains_key(&key) {
                return Err(err(
                    ErrorCode::AlreadyAttached,
                    format!("VM {} is already attached for uid {}", req.vm, peer.uid),
                ));
            }
            let cx = lifecycle::PlanContext {
                config: &self.config,
                bridge_macs: self.bridges.values().map(|b| b.mac).collect(),
                link_exists: &|name| crate::net::link::index_of(name).is_some(),
            };
            let attached: Vec<&crate::state::Record> = reg.records().collect();
            let record = lifecycle::plan(&cx, &attached, peer, &req, pod_netns)?;
            crate::failpoint::hit("attach:planned");
            reg.entries.insert(
                key.clone(),
                Entry {
                    record: record.clone(),
                    cancel: cancel.clone(),
                    state: State::Building,
                },
            );
            record
        };

        let pidfd = match peer.pidfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                self.registry.lock().unwrap().entries.remove(&key);
                self.settled.notify_waiters();
                return Err(err(
                    ErrorCode::Internal,
                    format!("cannot duplicate pidfd: {e}"),
                ));
            }
        };
        let started = std::time::Instant::now();
        let built = lifecycle::build(
            self,
            &mut record,
            pod_fd.as_ref().map(|f| f.as_fd()),
            peer.gid,
            &cancel,
        )
        .await;
        let Built { fds } = match built {
            Ok(b) => b,
            Err(e) => {
                cancel.cancel();
                lifecycle::teardown(self, &record).await;
                self.registry.lock().unwrap().entries.remove(&key);
                self.settled.notify_waiters();
                tracing::warn!(vm = %req.vm, uid = peer.uid, error = %crate::error_chain(&*e), "attach failed");
                // A plugin's own error code reaches the caller as a code, not only as text; a
                // step the kernel refused, as that step, its reason and the fix.
                if let Some(code) = e
                    .downcast_ref::<crate::kinds::cni::CniError>()
                    .and_then(crate::kinds::cni::CniError::code)
                {
                    return Err(err(ErrorCode::CniPlugin(code), crate::error_chain(&*e)));
                }
                let (code, message) = crate::hostfail::explain(&*e);
                return Err(err(code, message));
            }
        };
        crate::failpoint::hit("attach:built");
        lifecycle::fill_leases(self, &mut record);
        if let Err(e) = self.journal.write(&record) {
            cancel.cancel();
            lifecycle::teardown(self, &record).await;
            self.registry.lock().unwrap().entries.remove(&key);
            self.settled.notify_waiters();
            let (code, message) = crate::hostfail::explain(&e);
            return Err(err(code, message));
        }
        crate::failpoint::hit("attach:journaled");
        if let Some(e) = self.registry.lock().unwrap().entries.get_mut(&key) {
            e.state = State::Ready;
            e.record = record.clone();
        }
        self.settled.notify_waiters();
        // Before the fds go out: the guest cannot reach the forwarder any earlier.
        self.tell_dns_owners(&record, true);
        self.watch(key, pidfd, cancel);
        tracing::info!(vm = %req.vm, uid = peer.uid, pid = peer.pid, nics = record.nics.len(),
            micros = started.elapsed().as_micros() as u64, "attached");
        Ok((record.attachment(), fds))
    }

    /// Tells the DNS forwarders that `record`'s guest addresses are now attached by its uid,
    /// or no longer.
    fn tell_dns_owners(&self, record: &Record, attached: bool) {
        for iface in record.interfaces() {
            let (Some(owners), Some((ip, _))) =
                (self.dns_owners.get(&iface.network), iface.address)
            else {
                continue; // no forwarder on that network, or no address of ours
            };
            if attached {
                owners.insert(ip, record.uid);
            } else {
                owners.remove(ip, record.uid);
            }
        }
    }

    /// Arms the exit watcher: when the caller's process exits, its attachment is torn down.
    pub(crate) fn watch(self: &Arc<Self>, key: Key, pidfd: OwnedFd, cancel: CancellationToken) {
        // The watcher holds only a weak link to the daemon; it is the daemon's task through
        // `cancel`, which teardown fires.
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            // SAFETY: the OwnedFd moved into the AsyncFd keeps the pidfd open, and refers to
            // the same description, for the AsyncFd's whole lifetime.
            let fd = match unsafe { tokio::io::unix::AsyncFd::register(pidfd) } {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::error!(vm = %key.1, uid = key.0, error = %e, "cannot watch caller; releasing now");
                    if let Some(d) = me.upgrade() {
                        d.release(&key).await;
                    }
                    return;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = peer::exited(&fd) => {
                    if let Some(d) = me.upgrade() {
                        tracing::info!(vm = %key.1, uid = key.0, "caller exited; tearing down");
                        d.release(&key).await;
                    }
                }
            }
        });
    }

    /// Tears down an attachment and forgets it. Idempotent.
    pub(crate) async fn release(&self, key: &Key) {
        if let Some(job) = self.begin_release(key) {
            self.finish_release(key, job).await;
        }
    }

    /// Takes an attachment and marks it as going away in one step, so concurrent releases
    /// (the exit watcher and a Release request) tear it down once; stops its DHCP servers and
    /// exit watcher. `None` when it is not there or already going.
    fn begin_release(&self, key: &Key) -> Option<Record> {
        let taken = {
            let mut reg = self.registry.lock().unwrap();
            reg.entries.get_mut(key).filter(|e| e.visible()).map(|e| {
                e.state = State::Releasing;
                (e.record.clone(), e.cancel.clone())
            })
        };
        let (record, cancel) = taken?;
        cancel.cancel();
        Some(record)
    }

    /// The kernel side of a release; the entry is forgotten once everything is gone, and
    /// kept as [`State::Failed`] (listed, releasable again) when something could not be.
    async fn finish_release(&self, key: &Key, record: Record) {
        let complete = lifecycle::teardown(self, &record).await;
        let mut reg = self.registry.lock().unwrap();
        if complete {
            // Its addresses may be handed out again from here on.
            self.tell_dns_owners(&record, false);
            reg.entries.remove(key);
            tracing::info!(vm = %key.1, uid = key.0, "released");
        } else if let Some(e) = reg.entries.get_mut(key) {
            e.state = State::Failed;
            tracing::warn!(vm = %key.1, uid = key.0, "teardown incomplete; release it again to retry");
        }
        drop(reg);
        self.settled.notify_waiters();
    }

    pub(crate) fn adopt(
        self: &Arc<Self>,
        record: Record,
        pidfd: OwnedFd,
        cancel: CancellationToken,
    ) {
        let key = (record.uid, record.vm.clone());
        self.tell_dns_owners(&record, true);
        self.registry.lock().unwrap().entries.insert(
            key.clone(),
            Entry {
                record,
                cancel: cancel.clone(),
                state: State::Ready,
            },
        );
        self.watch(key, pidfd, cancel);
    }
}

fn not_found(vm: &VmId) -> Error {
    err(
        ErrorCode::NotFound,
        format!("no attachment {vm} for this user"),
    )
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

impl Daemon {
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
