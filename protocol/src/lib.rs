//! The contract between `tapmanager` (the root daemon) and its clients (`vmwrapper`, container
//! runtime shims), and the client library they link. No netlink, no daemon logic here.
//!
//! # The exchange
//!
//! ```text
//!  client (uid U, in group `tapmanager`)             tapmanager (root)
//!    connect(/run/tapmanager/tapmanager.sock) ---->  accept; SO_PEERCRED -> (pid, uid, gid);
//!                                                    pidfd_open(pid) pins the caller
//!    Hello{version}                           ---->
//!                                             <----  HelloReply::Accepted{version} | Rejected(err)
//!    Request{id, Attach{vm, networks}}        ---->  authorize; build TAP(s), firewall, DHCP;
//!                                                    journal it
//!                                             <----  Response{id, Ok(Attached{interfaces})}
//!                                                    + the TAP fds (SCM_RIGHTS, same frame)
//!    ... execve(hypervisor) keeps the pid: when it exits, the daemon tears everything down
//! ```
//!
//! Every frame is a `u32` little-endian body length, then a bincode 2 body
//! `(fd_count: u16, message)`; fds travel on the first `sendmsg` of their frame and the
//! receiver checks their number ([`frame`], [`fdpass`]). Limits: [`frame::MAX_FRAME`] bytes a
//! body, [`frame::MAX_FDS`] fds a frame, [`REQUEST_TIMEOUT`] a request. A malformed frame
//! closes that connection and nothing else.
//!
//! # Versioning rule
//!
//! bincode is not self-describing, so *any* change to a message type (a field, a variant, an
//! order) is a new [`PROTOCOL_VERSION`]. The client sends its version in [`Hello`]; the daemon
//! accepts only versions it can speak (today exactly one) and otherwise answers
//! `HelloReply::Rejected` with [`ErrorCode::VersionMismatch`] naming the versions it speaks.
//! The `Hello`/`HelloReply` pair itself never changes, so that answer is always readable.
//!
//! # Example: a shim attaching a VM
//!
//! ```no_run
//! use protocol::{AttachRequest, Client, NetworkRequest};
//! let mut client = Client::connect(protocol::DEFAULT_SOCKET)?;
//! let (attachment, fds) = client.attach(AttachRequest {
//!     vm: "vm1".parse()?,
//!     networks: vec![NetworkRequest::new("default".parse()?)],
//! })?;
//! // fds[0] is the TAP for attachment.interfaces[0]; give it to the hypervisor.
//! println!("{} gets {:?}", attachment.interfaces[0].mac, attachment.interfaces[0].address);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod client;
pub mod fdpass;
pub mod frame;
pub mod messages;
pub mod types;

#[cfg(feature = "tokio")]
pub use client::AsyncClient;
pub use client::{Client, ClientError};
pub use frame::FrameError;
pub use messages::*;
pub use types::{IfName, InvalidValue, MacAddr, NetworkName, VmId};

use std::time::Duration;

/// An error and its causes on one line ("cannot connect to ...: Permission denied"), for
/// printing once at a program's edge.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the daemon listens by default.
pub const DEFAULT_SOCKET: &str = "/run/tapmanager/tapmanager.sock";

/// How long a client waits for one reply, and the daemon for one request frame.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
