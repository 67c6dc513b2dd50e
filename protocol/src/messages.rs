//! The messages of the protocol: what a client may ask and what the daemon answers.
//!
//! Adding a field or a variant changes the wire format (bincode is not self-describing), so
//! every such change bumps [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION); see the crate docs
//! for the versioning rule.

use crate::types::{IfName, MacAddr, NetworkName, VmId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// First frame in each direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub version: u32,
}

/// The daemon's answer to the client's [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted(Hello),
    Rejected(Error),
}

/// One request; `id` is echoed in the matching [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Build the VM's network and hand over its fds. The response frame carries the fds,
    /// interface by interface, in request order (none for a `by_name` interface).
    Attach(AttachRequest),
    /// Tear down a VM's attachment now (it also ends when the caller's process exits).
    Release { vm: VmId },
    /// The caller's attachments (every attachment, for root).
    List,
    /// One attachment.
    Info { vm: VmId },
    /// Ask each NIC's network whether it is still as built (CNI CHECK with the cached result);
    /// an error names what is wrong.
    Check { vm: VmId },
    /// Whether each network can take attaches now (CNI STATUS, spec 1.1).
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub vm: VmId,
    /// One entry per NIC, in the order the guest sees them.
    pub networks: Vec<NetworkRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub network: NetworkName,
    /// The guest's MAC; derived from the VM id and the NIC's position when absent.
    pub mac: Option<MacAddr>,
    /// Queue pairs; above 1 the TAP is multi-queue and one fd per queue is handed over.
    pub queues: u16,
    /// The shim path: the interface of the caller's network namespace this NIC takes over
    /// (on a network of kind `pod`). The namespace itself travels as the one fd of the
    /// request frame ([`crate::Client::attach_pod`]); a path is never accepted.
    pub take_over: Option<IfName>,
    /// For hypervisors that open TAPs by name only (Firecracker): the TAP is made persistent,
    /// owned by the caller's uid and gid, no fd of it is handed over, and the caller opens
    /// it by [`Interface::ifname`] in the daemon's network namespace. One queue; bridge
    /// networks only (their TAPs live in the daemon's namespace). It is deleted like any
    /// other when the attachment ends.
    pub by_name: bool,
}

impl NetworkRequest {
    pub fn new(network: NetworkName) -> Self {
        NetworkRequest {
            network,
            mac: None,
            queues: 1,
            take_over: None,
            by_name: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub body: Result<ResponseBody, Error>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    Attached(Attachment),
    Released,
    List(Vec<Attachment>),
    Info(Attachment),
    Checked,
    Status(Vec<NetworkStatus>),
}

/// One network's readiness, as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub network: NetworkName,
    /// `bridge`, `isolated`, `masquerade`, `macvtap` or `cni`.
    pub kind: String,
    pub ready: bool,
    /// Why not, or what was checked.
    pub message: String,
}

/// A VM's network as the daemon built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub vm: VmId,
    /// The uid that made it; only that uid (and root) may see or release it.
    pub uid: u32,
    /// The process whose exit ends it.
    pub pid: i32,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub interfaces: Vec<Interface>,
}

/// One NIC of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub network: NetworkName,
    /// The host-side device (the TAP).
    pub ifname: IfName,
    /// The guest's MAC: give it to the hypervisor.
    pub mac: MacAddr,
    /// The address the DHCP server hands out, with its prefix length.
    pub address: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    /// Queue pairs; also the number of fds of this interface in an `Attached` frame (none
    /// when `by_name`).
    pub queues: u16,
    /// Whether the fds were opened with `IFF_VNET_HDR` (the hypervisor must use vnet_hdr).
    pub vnet_hdr: bool,
    /// Asked for [`NetworkRequest::by_name`]: no fd of this interface is in the frame.
    #[serde(default)]
    pub by_name: bool,
    /// What the DHCP server hands out besides address and gateway, for guests configured
    /// without DHCP (cloud-init): DNS servers, search domains, and routes as
    /// (destination, prefix length, next hop; 0.0.0.0 for on-link).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// The IPv6 lease, on a network with IPv6 (since version 5): what router advertisements
    /// and DHCPv6 hand the guest.
    #[serde(default)]
    pub ipv6: Option<Lease6>,
}

/// The IPv6 side of an [`Interface`]: the address DHCPv6 leases (with the on-link prefix
/// length the router advertisement announces), the router and the DNS servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub address: (Ipv6Addr, u8),
    /// The router's global address on the guest's link (what cloud-init's `gateway6` names).
    pub gateway: Ipv6Addr,
    /// The router's link-local address: the source of its advertisements, the guest's
    /// default route as SLAAC and DHCPv6 clients learn it.
    pub router: Ipv6Addr,
    pub dns: Vec<Ipv6Addr>,
}

/// A typed failure: a code a program can match on and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peers speak no common protocol version.
    VersionMismatch,
    /// The caller may not do this (not in the group, not the owner, network not allowed).
    PermissionDenied,
    /// No such network in the daemon's config.
    UnknownNetwork,
    /// This VM id is already attached for this uid.
    AlreadyAttached,
    /// No attachment with this VM id (for this uid).
    NotFound,
    /// The request is malformed or out of limits.
    InvalidRequest,
    /// The network has no free address.
    AddressesExhausted,
    /// The caller holds too many attachments, queues or connections.
    QuotaExceeded,
    /// The daemon is shutting down or not ready.
    Unavailable,
    /// Something failed inside the daemon; the message says what. Nothing was left behind.
    Internal,
    /// A CNI plugin failed; this is the plugin's own error code (the CNI spec's: 1-99 are the
    /// spec's, 100 and up the plugin's), the message has its `msg` and `details`. The plugins'
    /// DEL has run; nothing was left behind.
    CniPlugin(u32),
    /// The kernel refused a step of setting up the network on the host (a bridge full, a
    /// missing module, the daemon short of a privilege or of fds); the message names the step,
    /// the kernel's reason and what would fix it. Nothing was left behind. Since version 4; a
    /// version 3 client gets `Internal` with the same message.
    HostSetup,
    /// A limit of the host or of the network is reached: the network's bridges (a bridge
    /// network holds 114,685 guests), the kernel's 1,023 ports on a bridge, the daemon's or the
    /// host's file descriptors. The message names the network where a NIC hit it (`network
    /// X: ...`), the limit and how to raise it. Nothing of the guest was left behind. Since version 6;
    /// a version 4 or 5 client gets `HostSetup`, a version 3 client `Internal`, with the same
    /// message.
    CapacityExceeded,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The messages as versions 3 and 4 encode them: the same but for [`Interface::ipv6`],
/// which they lack. The daemon answers such a client with [`legacy::response`].
pub mod legacy {
    use super::{Error, NetworkStatus};
    use crate::types::{IfName, MacAddr, NetworkName, VmId};
    use serde::Serialize;
    use std::net::Ipv4Addr;

    /// [`super::Response`] for a client of version 3 or 4.
    #[derive(Debug, Serialize, serde::Deserialize)]
    pub struct Response {
        pub id: u64,
        pub body: Result<ResponseBody, Error>,
    }

    /// [`super::ResponseBody`], variant for variant.
    #[derive(Debug, Serialize, serde::Deserialize)]
    pub enum ResponseBody {
        Attached(Attachment),
        Released,
        List(Vec<Attachment>),
        Info(Attachment),
        Checked,
        Status(Vec<NetworkStatus>),
    }

    /// [`super::Attachment`].
    #[derive(Debug, Serialize, serde::Deserialize)]
    pub struct Attachment {
        pub vm: VmId,
        pub uid: u32,
        pub pid: i32,
        pub created: u64,
        pub interfaces: Vec<Interface>,
    }

    /// [`super::Interface`] without `ipv6`.
    #[derive(Debug, Serialize, serde::Deserialize)]
    pub struct Interface {
        pub network: NetworkName,
        pub ifname: IfName,
        pub mac: MacAddr,
        pub address: Option<(Ipv4Addr, u8)>,
        pub gateway: Option<Ipv4Addr>,
        pub mtu: u32,
        pub queues: u16,
        pub vnet_hdr: bool,
        pub by_name: bool,
        pub dns: Vec<Ipv4Addr>,
        pub search: Vec<String>,
        pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    }

    /// A response as a version 3 or 4 client decodes it.
    pub fn response(r: super::Response) -> Response {
        use super::ResponseBody as B;
        let body = r.body.map(|b| match b {
            B::Attached(a) => ResponseBody::Attached(attachment(a)),
            B::Released => ResponseBody::Released,
            B::List(l) => ResponseBody::List(l.into_iter().map(attachment).collect()),
            B::Info(a) => ResponseBody::Info(attachment(a)),
            B::Checked => ResponseBody::Checked,
            B::Status(s) => ResponseBody::Status(s),
        });
        Response { id: r.id, body }
    }

    fn attachment(a: super::Attachment) -> Attachment {
        Attachment {
            vm: a.vm,
            uid: a.uid,
            pid: a.pid,
            created: a.created,
            interfaces: a.interfaces.into_iter().map(interface).collect(),
        }
    }

    fn interface(i: super::Interface) -> Interface {
        Interface {
            network: i.network,
            ifname: i.ifname,
            mac: i.mac,
            address: i.address,
            gateway: i.gateway,
            mtu: i.mtu,
            queues: i.queues,
            vnet_hdr: i.vnet_hdr,
            by_name: i.by_name,
            dns: i.dns,
            search: i.search,
            routes: i.routes,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{Attachment, Interface, Lease6, Response, ResponseBody};
        use crate::frame;

        /// What a version 4 client's types were, to decode with.
        #[derive(Debug, serde::Deserialize, PartialEq)]
        enum Body4 {
            Attached(Attachment4),
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Response4 {
            id: u64,
            body: Result<Body4, super::Error>,
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Attachment4 {
            vm: crate::VmId,
            uid: u32,
            pid: i32,
            created: u64,
            interfaces: Vec<super::Interface4>,
        }

        #[test]
        fn a_version_4_client_decodes_a_dual_stack_attachment_without_its_ipv6() {
            let iface = Interface {
                network: "default".parse().unwrap(),
                ifname: "tm0".parse().unwrap(),
                mac: "52:54:00:00:00:01".parse().unwrap(),
                address: Some(("10.0.0.5".parse().unwrap(), 24)),
                gateway: Some("10.0.0.1".parse().unwrap()),
                mtu: 1500,
                queues: 1,
                vnet_hdr: true,
                by_name: false,
                dns: vec![],
                search: vec!["lab".into()],
                routes: vec![],
                ipv6: Some(Lease6 {
                    address: ("fd77::5".parse().unwrap(), 64),
                    gateway: "fd77::1".parse().unwrap(),
                    router: "fe80::1".parse().unwrap(),
                    dns: vec![],
                }),
            };
            let r = Response {
                id: 3,
                body: Ok(ResponseBody::Attached(Attachment {
                    vm: "vm1".parse().unwrap(),
                    uid: 1000,
                    pid: 42,
                    created: 7,
                    interfaces: vec![iface.clone(), iface],
                })),
            };
            let old_body = |bytes: Vec<u8>| bytes[frame::HEADER_LEN..].to_vec();
            let new = old_body(frame::encode(&r, 0).unwrap());
            let bytes = old_body(frame::encode(&super::response(r), 0).unwrap());
            let (old, _fds): (Response4, usize) = frame::decode(&bytes).unwrap();
            let Ok(Body4::Attached(a)) = old.body else {
                panic!("{old:?}")
            };
            assert_eq!((old.id, a.pid, a.interfaces.len()), (3, 42, 2));
            assert_eq!(a.interfaces[1].search, ["lab"]);
            // The new encoding is not what a version 4 client can read.
            assert!(frame::decode::<Response4>(&new).is_err());
        }
    }

    /// [`Interface`] as a version 4 client decodes it (tests only).
    #[cfg(test)]
    #[derive(Debug, serde::Deserialize, PartialEq)]
    pub(crate) struct Interface4 {
        pub network: NetworkName,
        pub ifname: IfName,
        pub mac: MacAddr,
        pub address: Option<(Ipv4Addr, u8)>,
        pub gateway: Option<Ipv4Addr>,
        pub mtu: u32,
        pub queues: u16,
        pub vnet_hdr: bool,
        pub by_name: bool,
        pub dns: Vec<Ipv4Addr>,
        pub search: Vec<String>,
        pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    }
}
