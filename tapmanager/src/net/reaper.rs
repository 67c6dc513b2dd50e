//! Link deletion for teardown, in batches. Deleting a link waits for an RCU grace period in
//! the kernel (~16-30 ms here) with RTNL held; deleting many one by one serializes those waits
//! and holds RTNL against every attach. Teardowns queue their links here; one task deletes
//! whatever has queued up in one kernel batch ([`Links::delete_batch`]), so a burst of
//! teardowns costs about one grace period, not one each. A failed batch falls back to
//! deleting its links one by one, so one bad link does not fail the others.

use crate::net::link::Links;
use tokio::sync::{mpsc, oneshot};

/// The link group batches use; nothing else in the daemon's namespace may use it.
const GROUP: u32 = 0x7461_706d; // "tapm"
/// Most links in one batch.
const MAX_BATCH: usize = 128;

type Job = (String, oneshot::Sender<Result<(), String>>);

/// The queue of links to delete.
#[derive(Debug)]
pub struct Reaper {
    tx: mpsc::UnboundedSender<Job>,
}

impl Reaper {
    /// Starts the batching task on the current runtime; it deletes through `links`.
    pub fn start(links: Links) -> Reaper {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Whatever queued while the previous batch was in the kernel goes together.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
                match links.delete_batch(&names, GROUP).await {
                    Ok(()) => {
                        for (_, done) in batch {
                            let _ = done.send(Ok(())); // the teardown may have been dropped
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error_chain(&e), links = names.len(), "batch delete failed; deleting one by one");
                        for (name, done) in batch {
                            let r = links
                                .delete_if_exists(&name)
                                .await
                                .map_err(|e| crate::error_chain(&e));
                            let _ = done.send(r); // the teardown may have been dropped
                        }
                    }
                }
            }
        });
        Reaper { tx }
    }

    /// Deletes link `name` (gone already is success), with whatever else is being torn down.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((name.to_owned(), done))
            .map_err(|_| "link reaper stopped".to_owned())?;
        wait.await.map_err(|_| "link reaper stopped".to_owned())?
    }
}
