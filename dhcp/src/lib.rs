//! tapmanager's DHCPv4 server: one small server per VM interface, answering only that
//! interface's MAC with the one lease the daemon decided on (DESIGN.md section 4).
//!
//! - [`binding`]: what to hand out ([`Binding`]), plain data the daemon journals.
//! - [`reply`](mod@reply): the decisions, a pure function on dhcproto messages.
//! - [`frame`]: Ethernet/IPv4/UDP framing by hand, shared with the integration tests' fake VM.
//! - [`server`]: the thin AF_PACKET socket loop ([`Server`]) around `reply`.
//!
//! The split follows dora's lesson: the protocol logic is tested without a network, and the
//! privileged socket code is small enough to read in one sitting.

pub mod binding;
pub mod frame;
mod packet;
pub mod reply;
pub mod server;

pub use binding::{Binding, BindingError};
pub use reply::reply;
pub use server::{Counters, Error, Server};
