//! An attach's way through the daemon: authorized, reserved in the registry under its lock
//! (where the plan is made), built and journaled by the lifecycle outside it, then marked
//! ready and its caller watched.

use super::registry::{Entry, State};
use super::{err, Daemon, SETTLE_TIMEOUT};
use crate::lifecycle;
use crate::peer::Peer;
use protocol::{AttachRequest, Attachment, Error, ErrorCode};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Daemon {
    pub(super) async fn attach(
        self: &Arc<Self>,
        peer: &Peer,
        req: AttachRequest,
        passed: Vec<OwnedFd>,
    ) -> Result<(Attachment, Vec<OwnedFd>), Error> {
        self.authorize(peer, &req)?;

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
        // Which of the names the plan may pick exist on the host: asked now, so that no
        // syscall runs under the registry lock (the plan itself is pure).
        let on_host: std::collections::HashSet<protocol::IfName> =
            lifecycle::candidate_names(&self.config.interface_prefix, peer.uid, &req)
                .filter(|name| crate::net::link::index_of(name).is_some())
                .collect();
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
                link_exists: &|name| on_host.contains(name),
            };
            let attached = |f: &mut dyn FnMut(&crate::state::Record)| reg.records().for_each(f);
            let record = lifecycle::plan(&cx, &reg.taken, &attached, peer, &req, pod_netns)?;
            crate::failpoint::hit("attach:planned");
            reg.insert(
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
                self.registry.lock().unwrap().remove(&key);
                self.settled.notify_waiters();
                // Out of fds is a limit, with its fix (hostfail.rs), not a bug.
                use crate::hostfail::Step;
                let named = Err::<(), _>(e)
                    .step(|| "duplicate the caller's pidfd to watch it".into())
                    .unwrap_err();
                let (code, message) = crate::hostfail::explain(&named);
                return Err(err(code, message));
            }
        };
        let started = std::time::Instant::now();
        let attached = lifecycle::attach(
            &self.cx(),
            &mut record,
            pod_fd.as_ref().map(|f| f.as_fd()),
            peer.gid,
            &cancel,
        )
        .await;
        let fds = match attached {
            Ok(fds) => fds,
            Err(e) => {
                self.registry.lock().unwrap().remove(&key);
                self.settled.notify_waiters();
                return Err(e);
            }
        };
        {
            let mut reg = self.registry.lock().unwrap();
            reg.set_record(&key, record.clone());
            if let Some(e) = reg.entries.get_mut(&key) {
                e.state = State::Ready;
            }
        }
        self.settled.notify_waiters();
        // Before the fds go out: the guest cannot reach the forwarder any earlier.
        self.tell_dns_owners(&record, true);
        self.watch(key, pidfd, cancel);
        tracing::info!(vm = %req.vm, uid = peer.uid, pid = peer.pid, nics = record.nics.len(),
            micros = started.elapsed().as_micros() as u64, "attached");
        Ok((record.attachment(), fds))
    }
}
