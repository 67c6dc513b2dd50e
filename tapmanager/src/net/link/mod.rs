//! Links over rtnetlink, reading like `ip`: `ensure_bridge`, `finish_tap`, `delete_if_exists`,
//! `list_names`. Each converges: "already exists" and "already gone" are success where that is
//! the intent.
//!
//! The [`Links`] handle talks to the network namespace its connection was opened in. Every
//! operation here needs CAP_NET_ADMIN in that namespace. This file holds the links
//! themselves (bridge, veth, macvtap, a TAP's finishing, up, down, delete, list); by object
//! beside it: `addr.rs`, `route.rs`, `neigh.rs`, `tc.rs`.

mod addr;
mod neigh;
mod route;
mod tc;

pub use addr::{SavedAddress, SavedAddress6, SavedIpv6, SavedRoute, SavedRoute6};
pub use tc::u32_keys;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use protocol::{IfName, MacAddr};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    /// A bridge, or a routed network's dummy device.
    #[error("cannot create link {0}")]
    CreateBridge(String, #[source] rtnetlink::Error),
    #[error("cannot configure bridge {0}")]
    ConfigureBridge(String, #[source] rtnetlink::Error),
    #[error("cannot add address {1} to {0}")]
    AddAddress(String, Ipv4Net, #[source] rtnetlink::Error),
    /// "ADDRESS to LINK".
    #[error("cannot add address {0}")]
    AddAddress6(String, #[source] rtnetlink::Error),
    #[error("cannot look up link {0}")]
    Get(String, #[source] rtnetlink::Error),
    #[error("link {0} does not exist")]
    Missing(String),
    #[error("cannot set up TAP {0} (mtu, address, master, up)")]
    FinishTap(String, #[source] rtnetlink::Error),
    #[error("cannot delete link {0}")]
    Delete(String, #[source] rtnetlink::Error),
    #[error("cannot list links")]
    List(#[source] rtnetlink::Error),
    #[error("cannot create veth {0} with its peer in the guest's namespace")]
    AddVeth(String, #[source] rtnetlink::Error),
    #[error("cannot create veth pair {0}")]
    AddVethPair(String, #[source] rtnetlink::Error),
    /// "LINK to MASTER".
    #[error("cannot join {0} (mtu, master, up)")]
    Join(String, #[source] rtnetlink::Error),
    #[error("cannot create macvtap {0}")]
    AddMacvtap(String, #[source] rtnetlink::Error),
    #[error("cannot set up link {0}")]
    Up(String, #[source] rtnetlink::Error),
    #[error("cannot add neighbour {1} on link {0}")]
    Neighbour(u32, std::net::IpAddr, #[source] rtnetlink::Error),
    #[error("cannot add route to {0} via {1}")]
    Route(Ipv4Net, Ipv4Addr, #[source] rtnetlink::Error),
    /// "DEST via VIA".
    #[error("cannot add route {0}")]
    Route6(String, #[source] rtnetlink::Error),
    #[error("cannot join {0} to bridge {1} with learning off")]
    Enslave(String, String, #[source] rtnetlink::Error),
    #[error("cannot add an ingress qdisc to link {0}")]
    Qdisc(u32, #[source] rtnetlink::Error),
    #[error("cannot redirect link {0}'s ingress to link {1}")]
    Redirect(u32, u32, #[source] rtnetlink::Error),
}

pub(super) fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

/// A link as the kernel reports it.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
}

fn info(msg: &LinkMessage) -> LinkInfo {
    let mut out = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Mtu(m) => out.mtu = Some(*m),
            LinkAttribute::Address(a) if a.len() == 6 => {
                out.mac = Some(MacAddr([a[0], a[1], a[2], a[3], a[4], a[5]]))
            }
            _ => {}
        }
    }
    out
}

/// An rtnetlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens a connection in the calling thread's network namespace and spawns its driver on
    /// the current tokio runtime.
    pub fn connect() -> Result<Links, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Links { handle })
    }

    /// Opens a connection in the calling thread's namespace, driven on a thread of its own:
    /// a request that blocks in the kernel (RTM_DELLINK waits ~16 ms for an RCU grace
    /// period here) then blocks that thread, not the runtime's workers serving attaches.
    pub fn connect_on_own_thread(thread_name: &str) -> Result<Links, LinkError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e)); // the receiver reports it
                        return;
                    }
                };
                rt.block_on(async move {
                    match rtnetlink::new_connection() {
                        Ok((conn, handle, _)) => {
                            let _ = tx.send(Ok(handle)); // the receiver is waiting right now
                                                         // Runs until every handle is dropped.
                            conn.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)); // the receiver reports it
                        }
                    }
                });
            })
            .map_err(LinkError::Connect)?;
        let handle = rx
            .recv()
            .map_err(|_| LinkError::Connect(std::io::Error::other("netlink thread died")))?
            .map_err(LinkError::Connect)?;
        Ok(Links { handle })
    }

    pub async fn get(&self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(info(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == libc::ENODEV => Ok(None),
            Err(e) => Err(LinkError::Get(name.to_owned(), e)),
        }
    }

    /// Makes sure bridge `name` exists with `mac`, `mtu`, the gateway address, and is up.
    /// Learning stays on (a plain bridge); forwarding delay 0 so new ports pass traffic at once.
    /// Also says whether it made the bridge (one it found is the admin's).
    pub async fn ensure_bridge(
        &self,
        name: &IfName,
        mac: MacAddr,
        mtu: u32,
        gateway: Ipv4Net,
    ) -> Result<(LinkInfo, bool), LinkError> {
        let n = name.as_str();
        let mut created = false;
        if self.get(n).await?.is_none() {
            let msg = LinkBridge::new(n).mtu(mtu).address(mac.0.to_vec()).build();
            match self.add(msg).await {
                Ok(()) => created = true,
                Err(e) if errno(&e) == libc::EEXIST => {}
                Err(e) => return Err(LinkError::CreateBridge(n.to_owned(), e)),
            }
        }
        let link = self
            .get(n)
            .await?
            .ok_or_else(|| LinkError::Missing(n.to_owned()))?;
        let msg = LinkUnspec::new_with_index(link.index)
            .mtu(mtu)
            .address(mac.0.to_vec())
            .up()
            .build();
        self.set(msg)
            .await
            .map_err(|e| LinkError::ConfigureBridge(n.to_owned(), e))?;
        self.add_address(link.index, n, gateway).await?;
        let info = LinkInfo {
            mac: Some(mac),
            ..link
        };
        Ok((info, created))
    }

    /// A bridge `name` that holds only ports (no address), with a fixed MAC and `mtu`;
    /// created down if missing ("already exists" is success, another daemon's thread may have
    /// made it meanwhile). Returns its index.
    pub async fn ensure_plain_bridge(
        &self,
        name: &str,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<u32, LinkError> {
        if let Some(link) = self.get(name).await? {
            return Ok(link.index);
        }
        let msg = LinkBridge::new(name)
            .mtu(mtu)
            .address(mac.0.to_vec())
            .down()
            .build();
        match self.add(msg).await {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(LinkError::CreateBridge(name.to_owned(), e)),
        }
        Ok(self
            .get(name)
            .await?
            .ok_or_else(|| LinkError::Missing(name.to_owned()))?
            .index)
    }

    /// The link a routed network's gateway address lives on: a bridge with no ports, up,
    /// with a fixed MAC and `mtu` (a dummy device would do, but is not built into every
    /// kernel: the development VMs' lacks it). Created if missing; returns its index and
    /// whether it was made.
    pub async fn ensure_gateway_link(
        &self,
        name: &str,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<(u32, bool), LinkError> {
        let created = self.get(name).await?.is_none();
        let index = self.ensure_plain_bridge(name, mac, mtu).await?;
        self.join(name, mtu, None).await?;
        Ok((index, created))
    }

    /// A veth pair `name`/`peer` here, both down with fixed MACs and `mtu` ("already
    /// exists" is success).
    pub async fn ensure_veth_pair(
        &self,
        (name, mac): (&str, MacAddr),
        (peer, peer_mac): (&str, MacAddr),
        mtu: u32,
    ) -> Result<(), LinkError> {
        if self.get(name).await?.is_some() {
            return Ok(());
        }
        let peer_msg = LinkUnspec::new_with_name(peer)
            .address(peer_mac.0.to_vec())
            .mtu(mtu)
            .build();
        let msg = LinkVeth::new(name, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .address(mac.0.to_vec())
            .mtu(mtu)
            .build();
        match self.add(msg).await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == libc::EEXIST => Ok(()),
            Err(e) => Err(LinkError::AddVethPair(name.to_owned(), e)),
        }
    }

    /// Link `name` onto `master` (`None`: none), with `mtu`, and up, in one message.
    pub async fn join(&self, name: &str, mtu: u32, master: Option<u32>) -> Result<(), LinkError> {
        let index = self
            .get(name)
            .await?
            .ok_or_else(|| LinkError::Missing(name.to_owned()))?
            .index;
        let mut b = LinkUnspec::new_with_index(index).mtu(mtu);
        if let Some(m) = master {
            b = b.controller(m);
        }
        self.set(b.up().build())
            .await
            .map_err(|e| LinkError::Join(name.to_owned(), e))
    }

    /// Sets a new TAP's MTU and MAC, enslaves it to `master` and brings it up, in one message.
    pub async fn finish_tap(
        &self,
        index: u32,
        name: &IfName,
        mtu: u32,
        mac: MacAddr,
        master: u32,
    ) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .mtu(mtu)
            .address(mac.0.to_vec())
            .controller(master)
            .up()
            .build();
        self.set(msg)
            .await
            .map_err(|e| LinkError::FinishTap(name.to_string(), e))
    }

    /// Creates veth `name` here and its peer `peer` directly inside `peer_ns` (never moved:
    /// moving a link holds RTNL across an RCU barrier, DESIGN.md §6). Both get fixed MACs, so
    /// the two sides can use static neighbour entries.
    pub async fn add_veth_into(
        &self,
        name: &IfName,
        mac: MacAddr,
        mtu: u32,
        peer: &str,
        peer_mac: MacAddr,
        peer_ns: BorrowedFd<'_>,
    ) -> Result<(), LinkError> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .address(peer_mac.0.to_vec())
            .mtu(mtu)
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name.as_str(), peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .address(mac.0.to_vec())
            .mtu(mtu)
            .up()
            .build();
        self.add(msg)
            .await
            .map_err(|e| LinkError::AddVeth(name.to_string(), e))
    }

    /// Creates macvtap `name` on `lower` in `mode`, down, with the guest's MAC.
    pub async fn add_macvtap(
        &self,
        name: &IfName,
        lower: u32,
        mode: netlink_packet_route::link::MacVtapMode,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<(), LinkError> {
        let msg = rtnetlink::LinkMacVtap::new(name.as_str(), lower, mode)
            .address(mac.0.to_vec())
            .mtu(mtu)
            .build();
        self.add(msg)
            .await
            .map_err(|e| LinkError::AddMacvtap(name.to_string(), e))
    }

    /// Sets a link's MTU (and MAC, if given) and brings it up.
    pub async fn up(
        &self,
        index: u32,
        name: &str,
        mtu: u32,
        mac: Option<MacAddr>,
    ) -> Result<(), LinkError> {
        let mut b = LinkUnspec::new_with_index(index).mtu(mtu).up();
        if let Some(m) = mac {
            b = b.address(m.0.to_vec());
        }
        self.set(b.build())
            .await
            .map_err(|e| LinkError::Up(name.to_owned(), e))
    }

    /// Sets a link down, with its MAC and MTU (given back after a take-over).
    pub async fn down_with(
        &self,
        index: u32,
        name: &str,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .down()
            .address(mac.0.to_vec())
            .mtu(mtu)
            .build();
        self.set(msg)
            .await
            .map_err(|e| LinkError::Up(name.to_owned(), e))
    }

    /// Creates bridge `name` (no address, up) and returns its index; an existing one is reused.
    pub async fn add_bridge(&self, name: &str, mtu: u32) -> Result<u32, LinkError> {
        match self.add(LinkBridge::new(name).mtu(mtu).up().build()).await {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(LinkError::CreateBridge(name.to_owned(), e)),
        }
        Ok(self
            .get(name)
            .await?
            .ok_or_else(|| LinkError::Missing(name.to_owned()))?
            .index)
    }

    /// Enslaves link `index` to `master`, brings it up, and turns MAC learning off on the new
    /// port (two messages: the kernel reads port options only from a link already enslaved).
    pub async fn enslave_without_learning(
        &self,
        index: u32,
        name: &str,
        master: u32,
        master_name: &str,
    ) -> Result<(), LinkError> {
        let err = |e| LinkError::Enslave(name.to_owned(), master_name.to_owned(), e);
        let msg = LinkUnspec::new_with_index(index)
            .controller(master)
            .up()
            .build();
        self.set(msg).await.map_err(err)?;
        let msg = rtnetlink::LinkBridgePort::new(index)
            .learning(false)
            .build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(err)
    }

    /// One RTM_NEWLINK.
    async fn add(&self, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.handle.link().add(msg).execute().await
    }

    /// One RTM_SETLINK.
    async fn set(&self, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.handle.link().set(msg).execute().await
    }

    /// Deletes a link by name; a link that is already gone is success.
    pub async fn delete_if_exists(&self, name: &str) -> Result<(), LinkError> {
        let Some(link) = self.get(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == libc::ENODEV => Ok(()),
            Err(e) => Err(LinkError::Delete(name.to_owned(), e)),
        }
    }

    /// Deletes these links in one kernel batch: each is moved to `group`, then the group is
    /// deleted with one RTM_DELLINK, so the whole batch waits for one RCU grace period instead
    /// of one each. Links already gone are skipped. `group` must be used by nothing else.
    pub async fn delete_batch(&self, names: &[String], group: u32) -> Result<(), LinkError> {
        let mut any = false;
        for name in names {
            let Some(link) = self.get(name).await? else {
                continue;
            };
            let msg = LinkUnspec::new_with_index(link.index)
                .link_group(group)
                .build();
            match self.set(msg).await {
                Ok(()) => any = true,
                Err(e) if errno(&e) == libc::ENODEV => {}
                Err(e) => return Err(LinkError::Delete(name.clone(), e)),
            }
        }
        if !any {
            return Ok(());
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == libc::ENODEV => Ok(()),
            Err(e) => Err(LinkError::Delete(format!("group {group}"), e)),
        }
    }

    /// The names of every link in the namespace.
    pub async fn list_names(&self) -> Result<Vec<String>, LinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(LinkError::List)?;
        Ok(links.iter().map(|m| info(m).name).collect())
    }
}

/// Keeps a guest's host-side link (a TAP, an isolated guest's host veth, a macvtap) out of the
/// host's own IP configuration: no IPv6 on it at all (no address, no router advertisement,
/// no neighbour discovery; no network hands out IPv6 yet) and strict reverse-path filtering
/// for IPv4, so that a frame the guest addresses to a link-local group MAC, which a bridge
/// hands to the port's own stack (DESIGN.md §6), configures nothing and is answered by
/// nothing. Writes `/proc/sys/net/.../conf/<name>/...`, which is the calling **thread's**
/// network namespace's: call it on a thread in the link's namespace, before the link is up.
/// A host without IPv6 (`ipv6.disable=1`) has nothing to disable. Needs CAP_NET_ADMIN.
pub fn harden_guest_link(name: &str) -> std::io::Result<()> {
    let write = |path: String, value: &str| match std::fs::write(&path, value) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.contains("/ipv6/") => Ok(()),
        r => r.map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}"))),
    };
    write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1")?;
    write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "1")
}

/// Turns a link's IPv6 off or back on (`disable_ipv6`), nothing else: for an interface the
/// daemon takes over and gives back (a pod's), whose other settings are the pod's. Turning
/// it off removes its IPv6 addresses and routes. Same rules as [`harden_guest_link`].
pub fn set_ipv6(name: &str, on: bool) -> std::io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    std::fs::write(&path, if on { "0" } else { "1" })
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Keeps a link the daemon routes for (a bridge with the gateway address) from configuring
/// itself from the guests' frames: no router advertisements accepted, no addresses made from
/// advertised prefixes. With `ipv6` the link's IPv6 is switched on (a namespace may default
/// to off); without it the setting is left as it is. Same rules as [`harden_guest_link`]:
/// the calling thread's namespace, nothing to do on a host without IPv6.
pub fn harden_router_link(name: &str, ipv6: bool) -> std::io::Result<()> {
    let write = |key: &str, value: &str| {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        match std::fs::write(&path, value) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    };
    write("accept_ra", "0")?;
    write("autoconf", "0")?;
    if ipv6 {
        write("disable_ipv6", "0")?;
    }
    Ok(())
}

/// A guest's host-side link that routes IPv6 (an isolated guest's host veth): IPv6 on, but no
/// address of its own (`addr_gen_mode` none), no router advertisements, no
/// autoconfiguration. Call after [`harden_guest_link`]; same rules.
pub fn route_ipv6_on(name: &str) -> std::io::Result<()> {
    for (key, value) in [
        ("addr_gen_mode", "1"),
        ("accept_ra", "0"),
        ("autoconf", "0"),
        ("disable_ipv6", "0"),
    ] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        std::fs::write(&path, value)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(())
}

/// Routes IPv6 in the calling thread's namespace (a guest's namespace with IPv6): forwarding
/// on, and no router advertisement or autoconfiguration taken on any link, existing
/// (`existing`) or to come (`default`).
pub fn route_ipv6_in_namespace(existing: &str) -> std::io::Result<()> {
    for conf in ["default", "all", existing] {
        for (key, value) in [("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "0")] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/{key}");
            std::fs::write(&path, value)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
        }
    }
    let path = "/proc/sys/net/ipv6/conf/all/forwarding";
    std::fs::write(path, "1").map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Turns IPv6 off in the calling thread's whole network namespace (`all` and `default`), for
/// a namespace that holds only a guest's plumbing (an isolated guest's: its veth, TAP and the
/// bridge binding's bridge, which a guest's router advertisement to all nodes would otherwise
/// configure). Like [`harden_guest_link`], nothing to do on a host without IPv6.
pub fn disable_ipv6_in_namespace() -> std::io::Result<()> {
    for conf in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        match std::fs::write(&path, "1") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?,
        }
    }
    Ok(())
}

/// The index of a link in the calling thread's namespace (`if_nametoindex`), without a
/// netlink round trip.
pub fn index_of(name: &IfName) -> Option<u32> {
    nix::net::if_::if_nametoindex(name.as_str()).ok()
}
