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
//! accepts the versions it can speak ([`OLDEST_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`])
//! and otherwise answers
//! `HelloReply::Rejected` with [`ErrorCode::VersionMismatch`] naming the versions it speaks.
//! The `Hello`/`HelloReply` pair itself never changes, so that answer is always readable.
//!
//! # The shim path: taking over a pod's interface
//!
//! A container runtime shim whose pod already has a network (set up by the kubelet's CNI)
//! hands that network to its VM instead of having one built:
//!
//! ```text
//!  shim (uid U)                                       tapmanager (root)
//!    open("/proc/<pod pid>/ns/net")  (the kernel checks U may)
//!    Request{id, Attach{vm, networks: [           ---->  the frame's one fd is the namespace:
//!      {network: "pods", take_over: "eth0"}]}}           a network namespace? not the daemon's
//!    + the namespace fd (SCM_RIGHTS, same frame)         or the host's? owned by U (its user
//!                                                        namespace's owner), or U may adopt any?
//!                                                        save eth0 (MAC, MTU, addresses, routes);
//!                                                        eth0's addresses off, a TAP for U joined
//!                                                        to eth0 (tc-redirect or bridge), DHCP
//!                                                        on the TAP hands out eth0's address
//!                                             <----  Attached{interfaces: [{mac: eth0's old MAC,
//!                                                    address: eth0's, gateway, ...}]} + TAP fd
//!    exec the hypervisor with the fd; when it exits (or on Release) eth0 gets everything back
//! ```
//!
//! A path string is never accepted: only the fd, opened by the shim with its own rights.
//! `examples/shim.rs` is the whole exchange as a program
//! (`cargo run -p tapmanager-protocol --example shim -- SOCKET NETNS NETWORK IFNAME`).
//!
//! # TAPs by name, and guests without DHCP
//!
//! A hypervisor that opens TAPs by name only (Firecracker) asks with
//! [`NetworkRequest::by_name`]: the daemon makes the TAP persistent and owned by the caller's
//! uid and group (the kernel refuses anyone else's `TUNSETIFF`), sends no fd for it, and
//! deletes it when the attachment ends; the caller opens [`Interface::ifname`] in the
//! daemon's network namespace. Each [`Interface`] also carries the lease its DHCP server hands
//! out (`address`, `gateway`, `mtu`, `dns`, `search`, `routes`), for a guest configured
//! without DHCP (vmwrapper writes cloud-init network-config from it).
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

/// The version this crate speaks. 2: `NetworkRequest::take_over` and the request's netns fd
/// (the shim path), `Check`/`Checked`, `Status`. 3: `NetworkRequest::by_name` (Firecracker)
/// and the lease in `Interface` (`dns`, `search`, `routes`: cloud-init). 4:
/// `ErrorCode::HostSetup`. 5: `Interface::ipv6`. 6: `ErrorCode::CapacityExceeded`.
pub const PROTOCOL_VERSION: u32 = 6;

/// The oldest version the daemon still serves: 3's and 4's messages are 5's without
/// `Interface::ipv6` (the daemon encodes [`legacy::Response`] for them), 5's are 6's without
/// one error code; an error code newer than a client's version reaches it as the nearest older
/// one (`CapacityExceeded` as `HostSetup`, `HostSetup` as `Internal`).
pub const OLDEST_PROTOCOL_VERSION: u32 = 3;

/// Where the daemon listens by default.
pub const DEFAULT_SOCKET: &str = "/run/tapmanager/tapmanager.sock";

/// How long a client waits for one reply, and the daemon for one request frame.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
