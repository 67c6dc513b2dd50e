//! The socket: accepting, the handshake, one task per connection, dispatch of requests.

use super::auth::not_found;
use super::{err, for_version, Daemon, IDLE_TIMEOUT, MAX_CONNECTIONS_PER_UID};
use crate::peer::{self, Peer};
use protocol::fdpass::{read_frame_async, write_frame_async};
use protocol::{
    Attachment, Error, ErrorCode, Hello, HelloReply, Request, RequestBody, Response, ResponseBody,
    PROTOCOL_VERSION,
};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;

impl Daemon {
    /// Whether this caller may talk to the daemon at all.
    pub(super) fn may_connect(&self, p: &Peer) -> bool {
        p.is_root()
            || p.in_group(self.config.group)
            || self.config.networks.values().any(|n| {
                n.access.users.contains(&p.uid) || n.access.groups.iter().any(|g| p.in_group(*g))
            })
    }

    pub(super) async fn connection(self: Arc<Self>, stream: UnixStream) {
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
    pub(super) async fn converse(
        self: &Arc<Self>,
        stream: &UnixStream,
        peer: &Peer,
        mut reply: HelloReply,
    ) {
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
            let sent = if hello.version < 5 {
                let old = protocol::legacy::response(response.clone());
                write_frame_async(stream, &old, &borrowed).await
            } else {
                write_frame_async(stream, &response, &borrowed).await
            };
            if let Err(e) = sent {
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

    pub(super) async fn handle(
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
                if let Some(mut job) = self.begin_release(&key) {
                    // On disk before the answer: a crash mid-teardown must not let the next
                    // start adopt what the caller, still alive, gave back.
                    job.releasing = true;
                    if let Err(e) = self.journal.write(&job) {
                        tracing::error!(vm = %job.vm, error = %crate::error_chain(&e),
                            "cannot mark the journal entry as released; a crash before the teardown ends would adopt it again");
                    }
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
                                        crate::error_chain(&e)
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
    pub(super) async fn status(&self) -> Vec<protocol::NetworkStatus> {
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
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}
