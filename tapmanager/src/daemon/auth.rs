//! Who may do what: the networks a caller may attach to, the attachments it may see, and the
//! pod namespaces it may hand over.

use super::registry::Entry;
use super::{err, Daemon, Key, MAX_NICS, MAX_QUEUES};
use crate::peer::Peer;
use protocol::{AttachRequest, Error, ErrorCode, VmId};

impl Daemon {
    /// An attach's shape and the caller's right to each network it names: 1 to [`MAX_NICS`]
    /// NICs of 1 to [`MAX_QUEUES`] queues, each on a network that exists and that the caller
    /// may use (root; the daemon's group where the network allows it; its allow lists).
    pub(super) fn authorize(&self, peer: &Peer, req: &AttachRequest) -> Result<(), Error> {
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
        Ok(())
    }

    /// The key of the caller's attachment `vm`. Root may name another uid's VM when the id is
    /// unique across uids.
    pub(super) fn find(&self, peer: &Peer, vm: &VmId) -> Result<Key, Error> {
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
    pub(super) fn admit_pod_netns(
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
}

pub(super) fn not_found(vm: &VmId) -> Error {
    err(
        ErrorCode::NotFound,
        format!("no attachment {vm} for this user"),
    )
}
