//! What runs when a VM attaches, when it goes away, and when the daemon starts: one straight
//! script each, one step a line, each saying why it happens there. What each step does for
//! a NIC is its kind's ([`crate::kinds`]); these files order the steps, one file a moment:
//! `plan.rs`, `attach.rs`, `teardown.rs` (release, exit), `reconcile.rs` (start). The
//! lifecycle works with a [`Cx`], never the daemon: the registry of attachments and who may
//! do what stay above it, in `daemon/`.
//!
//! - [`plan()`]: pure bookkeeping under the registry lock (names, MACs, addresses, each NIC's
//!   [`NicState`](crate::state::NicState)); nothing in the kernel yet, so a refusal leaves nothing behind.
//! - [`attach()`]: the kernel work for each NIC, then the journal entry. On any failure it runs
//!   [`teardown()`] on the same record: teardown is idempotent, so it undoes exactly the steps
//!   that had finished.
//! - [`teardown()`]: link, then what the kind built, then the journal entry, continuing past
//!   errors; the entry stays when something could not be removed, so a restart tries again.
//! - [`reconcile()`]: start-up. Creation and recovery share the kinds' functions: adopting an
//!   attachment runs [`kinds::converge`](crate::kinds::converge), the build's own steps again.

mod attach;
mod plan;
mod reconcile;
mod taken;
mod teardown;

pub(crate) use attach::attach;
pub use attach::NicError;
pub(crate) use plan::{candidate_names, plan, PlanContext};
pub(crate) use reconcile::reconcile;
pub use reconcile::ReconcileError;
pub(crate) use taken::Taken;
pub(crate) use teardown::teardown;

/// What the lifecycle works with: the kinds' kit, the journal, and the reaper that deletes
/// links in batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub kit: crate::kinds::Kit<'a>,
    pub journal: &'a crate::state::Journal,
    pub reaper: &'a crate::net::reaper::Reaper,
}
