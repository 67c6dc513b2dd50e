//! Release and exit: what was built goes, then the journal entry.

use super::Cx;
use crate::kinds;
use crate::state::Record;

/// Removes everything of a record: each link (so no frame passes unguarded), its guards, and
/// last the journal entry. Idempotent; continues past errors. Returns whether it all went.
pub(crate) async fn teardown(cx: &Cx<'_>, record: &Record) -> bool {
    crate::failpoint::hit("teardown:begin");
    let mut complete = true;
    for nic in record.nics.iter().rev() {
        let iface = &nic.iface;
        if let Err(e) = cx.reaper.delete(iface.ifname.as_str()).await {
            tracing::error!(ifname = %iface.ifname, error = %e, "cannot delete link");
            // The port may still carry frames: it keeps its guards and namespace; the entry
            // stays in the journal, so a restart tries again.
            complete = false;
            continue;
        }
        crate::failpoint::hit("teardown:link");
        // What was built, by what the journal says was built.
        complete &= kinds::teardown(&cx.kit, nic).await;
    }
    crate::failpoint::hit("teardown:port");
    if complete {
        crate::failpoint::hit("teardown:done");
        if let Err(e) = cx.journal.remove(record.uid, &record.vm) {
            tracing::error!(vm = %record.vm, error = %crate::error_chain(&e), "cannot remove journal entry");
            complete = false;
        }
    }
    complete
}
