//! tapmanager's DHCP server and IPv6 router side: one small server per VM interface,
//! answering only that interface's MAC with the one lease the daemon decided on (DESIGN.md
//! section 4): DHCPv4, and where the network has IPv6, router advertisements and DHCPv6 on
//! the same socket.
//!
//! - [`binding`]: what to hand out ([`Binding`]), plain data the daemon journals.
//! - [`reply`](mod@reply): the decisions, a pure function on dhcproto messages.
//! - [`frame`]: Ethernet/IPv4/UDP framing by hand, shared with the integration tests' fake VM;
//!   [`frame6`] the same for IPv6.
//! - [`router`]: router solicitations and advertisements; [`reply6`](mod@reply6): DHCPv6's
//!   decisions, pure like `reply`.
//! - [`probe`]: finding the link-local address of a router the daemon does not own.
//! - [`server`]: the thin AF_PACKET socket loop around `reply`: one socket per network
//!   namespace, shared by the servers ([`Server`]) of its interfaces.
//!
//! The split follows dora's lesson: the protocol logic is tested without a network, and the
//! privileged socket code is small enough to read in one sitting.

pub mod binding;
pub mod frame;
pub mod frame6;
mod packet;
pub mod probe;
pub mod reply;
pub mod reply6;
pub mod router;
pub mod server;

pub use binding::{Binding, Binding6, BindingError};
pub use reply::reply;
pub use server::{Counters, Error, Server};
