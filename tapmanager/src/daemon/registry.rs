//! The registry of attachments: each one's record and state, the notification an attach of
//! the same id waits on, the exit watcher per caller, release.

use super::Daemon;
use crate::lifecycle;
use crate::peer;
use crate::state::Record;
use protocol::VmId;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// An attachment: its caller's uid and its VM id.
pub(crate) type Key = (u32, VmId);

/// An attachment the daemon holds: its record and what keeps it running.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) record: Record,
    /// Cancels the DHCP servers and the exit watcher.
    pub(super) cancel: CancellationToken,
    pub(super) state: State,
}

/// Where an attachment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
    pub(super) fn visible(&self) -> bool {
        matches!(self.state, State::Ready | State::Failed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Changed only through [`Registry::insert`], [`Registry::remove`] and
    /// [`Registry::set_record`], which keep `taken` in step.
    pub(super) entries: HashMap<Key, Entry>,
    /// What the entries' NICs hold, for plans.
    pub(super) taken: lifecycle::Taken,
    /// Open connections per uid.
    pub(super) connections: HashMap<u32, usize>,
    /// The most attachments seen at a release since memory was last given back.
    pub(super) high: usize,
}

impl Registry {
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        self.entries.values().map(|e| &e.record)
    }

    pub(super) fn insert(&mut self, key: Key, entry: Entry) {
        self.taken.add(&entry.record);
        if let Some(old) = self.entries.insert(key, entry) {
            self.taken.remove(&old.record);
        }
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.taken.remove(&e.record);
        Some(e)
    }

    /// Replaces an entry's record with the built one (a CNI NIC learns its address at build).
    pub(super) fn set_record(&mut self, key: &Key, record: Record) {
        if let Some(e) = self.entries.get_mut(key) {
            self.taken.remove(&e.record);
            self.taken.add(&record);
            e.record = record;
        }
    }
}

impl Daemon {
    /// Tells the DNS forwarders that `record`'s guest addresses are now attached by its uid,
    /// or no longer.
    pub(super) fn tell_dns_owners(&self, record: &Record, attached: bool) {
        for iface in record.interfaces() {
            let Some(owners) = self.dns_owners.get(&iface.network) else {
                continue; // no forwarder on that network
            };
            let v4 = iface.address.map(|(ip, _)| std::net::IpAddr::V4(ip));
            let v6 = iface
                .ipv6
                .as_ref()
                .map(|l| std::net::IpAddr::V6(l.address.0));
            match (attached, v4, v6) {
                (true, Some(ip), alias) => {
                    owners.insert(ip, record.uid);
                    // Its IPv6 address counts against the same share.
                    if let Some(a) = alias {
                        owners.insert_alias(a, ip, record.uid);
                    }
                }
                (true, None, Some(ip)) => owners.insert(ip, record.uid),
                (true, None, None) => {}
                (false, v4, v6) => {
                    for ip in v4.into_iter().chain(v6) {
                        owners.remove(ip, record.uid);
                    }
                }
            }
        }
    }

    /// Arms the exit watcher: when the caller's process exits, its attachment is torn down.
    pub(crate) fn watch(self: &Arc<Self>, key: Key, pidfd: OwnedFd, cancel: CancellationToken) {
        // The watcher holds only a weak link to the daemon; it is the daemon's task through
        // `cancel`, which teardown fires.
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let fd = match peer::ExitWatch::new(pidfd) {
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
                _ = fd.exited() => {
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
    pub(super) fn begin_release(&self, key: &Key) -> Option<Record> {
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
    pub(super) async fn finish_release(&self, key: &Key, record: Record) {
        let complete = lifecycle::teardown(&self.cx(), &record).await;
        let mut reg = self.registry.lock().unwrap();
        if complete {
            // Its addresses may be handed out again from here on.
            self.tell_dns_owners(&record, false);
            reg.high = reg.high.max(reg.entries.len());
            reg.remove(key);
            tracing::info!(vm = %key.1, uid = key.0, "released");
            if reg.entries.len() <= reg.high / 2 {
                reg.high = reg.entries.len();
                // The tables keep the room of their peak (some MiB at 10,000 guests) unless
                // told, and a trim cannot give back what they still hold.
                reg.entries.shrink_to_fit();
                reg.taken.shrink_to_fit();
                crate::heap::give_back();
            }
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
        self.registry.lock().unwrap().insert(
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
