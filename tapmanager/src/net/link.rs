//! Links over rtnetlink, reading like `ip`: `ensure_bridge`, `finish_tap`, `delete_if_exists`,
//! `list_names`. Each converges: "already exists" and "already gone" are success where that is
//! the intent.
//!
//! The [`Links`] handle talks to the network namespace its connection was opened in. Every
//! operation here needs CAP_NET_ADMIN in that namespace.

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcFilterU32Option, TcMirror, TcMirrorActionType, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use protocol::{IfName, MacAddr};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    #[error("cannot create bridge {0}")]
    CreateBridge(String, #[source] rtnetlink::Error),
    #[error("cannot configure bridge {0}")]
    ConfigureBridge(String, #[source] rtnetlink::Error),
    #[error("cannot add address {1} to {0}")]
    AddAddress(String, Ipv4Net, #[source] rtnetlink::Error),
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
    #[error("cannot create macvtap {0}")]
    AddMacvtap(String, #[source] rtnetlink::Error),
    #[error("cannot set up link {0}")]
    Up(String, #[source] rtnetlink::Error),
    #[error("cannot add neighbour {1} on link {0}")]
    Neighbour(u32, Ipv4Addr, #[source] rtnetlink::Error),
    #[error("cannot add route to {0} via {1}")]
    Route(Ipv4Net, Ipv4Addr, #[source] rtnetlink::Error),
    #[error("cannot join {0} to bridge {1} with learning off")]
    Enslave(String, String, #[source] rtnetlink::Error),
    #[error("cannot add an ingress qdisc to link {0}")]
    Qdisc(u32, #[source] rtnetlink::Error),
    #[error("cannot redirect link {0}'s ingress to link {1}")]
    Redirect(u32, u32, #[source] rtnetlink::Error),
}

fn errno(e: &rtnetlink::Error) -> i32 {
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

/// An IPv4 address of a link, as it was before the daemon took the link over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedAddress {
    pub net: Ipv4Net,
    pub broadcast: Option<Ipv4Addr>,
}

/// An IPv4 route through one link, as it was before the daemon took the link over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedRoute {
    pub dst: Ipv4Net,
    pub gw: Option<Ipv4Addr>,
    pub onlink: bool,
    /// `rtm_protocol` (static, dhcp, boot, ...): given back as it was.
    #[serde(default)]
    pub protocol: u8,
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

    /// Takes every IPv4 address off a link, then sets it down with a new MAC, which drops
    /// every route through it: what a CNI plugin configured there is the guest's now.
    pub async fn strip(&self, index: u32, name: &str, mac: MacAddr) -> Result<(), LinkError> {
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| LinkError::Get(name.to_owned(), e))?;
        for a in addrs {
            if a.header.family != netlink_packet_route::AddressFamily::Inet {
                continue;
            }
            match self.handle.address().del(a).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == libc::EADDRNOTAVAIL => {}
                Err(e) => return Err(LinkError::Up(name.to_owned(), e)),
            }
        }
        let msg = LinkUnspec::new_with_index(index)
            .down()
            .address(mac.0.to_vec())
            .build();
        self.set(msg)
            .await
            .map_err(|e| LinkError::Up(name.to_owned(), e))
    }

    /// A link's IPv4 addresses and the main table's IPv4 routes through it that the kernel did
    /// not derive from an address (those come back with the address).
    pub async fn ipv4_state(
        &self,
        index: u32,
        name: &str,
    ) -> Result<(Vec<SavedAddress>, Vec<SavedRoute>), LinkError> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        use netlink_packet_route::route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol,
        };
        let get = |e| LinkError::Get(name.to_owned(), e);
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(get)?;
        let mut out = Vec::new();
        for a in &addrs {
            let (mut ip, mut broadcast) = (None, None);
            for attr in &a.attributes {
                match attr {
                    // IFA_ADDRESS; on a point-to-point link IFA_LOCAL would differ.
                    AddressAttribute::Address(IpAddr::V4(v)) => ip = Some(*v),
                    AddressAttribute::Broadcast(b) => broadcast = Some(*b),
                    _ => {}
                }
            }
            if let Some(net) = ip.and_then(|v| Ipv4Net::new(v, a.header.prefix_len).ok()) {
                out.push(SavedAddress { net, broadcast });
            }
        }
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(get)?;
        let mut saved = Vec::new();
        for r in &routes {
            if r.header.table != 254 || r.header.protocol == RouteProtocol::Kernel {
                continue;
            }
            let (mut oif, mut dst, mut gw) = (None, Ipv4Addr::UNSPECIFIED, None);
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    _ => {}
                }
            }
            if oif != Some(index) {
                continue;
            }
            if let Ok(dst) = Ipv4Net::new(dst, r.header.destination_prefix_length) {
                saved.push(SavedRoute {
                    dst,
                    gw,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                    protocol: r.header.protocol.into(),
                });
            }
        }
        Ok((out, saved))
    }

    /// Puts back what [`Links::ipv4_state`] saved: the addresses, then the routes.
    pub async fn restore_ipv4(
        &self,
        index: u32,
        name: &str,
        addrs: &[SavedAddress],
        routes: &[SavedRoute],
    ) -> Result<(), LinkError> {
        use netlink_packet_route::address::AddressAttribute;
        for a in addrs {
            let mut req = self
                .handle
                .address()
                .add(index, IpAddr::V4(a.net.addr()), a.net.prefix_len())
                .replace();
            let attrs = &mut req.message_mut().attributes;
            attrs.retain(|x| !matches!(x, AddressAttribute::Broadcast(_)));
            if let Some(b) = a.broadcast {
                attrs.push(AddressAttribute::Broadcast(b));
            }
            req.execute()
                .await
                .map_err(|e| LinkError::AddAddress(name.to_owned(), a.net, e))?;
        }
        for r in routes {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(r.dst.addr(), r.dst.prefix_len())
                .output_interface(index)
                .protocol(r.protocol.into());
            if let Some(gw) = r.gw {
                b = b.gateway(gw);
            }
            if r.onlink {
                b = b.onlink();
            }
            self.handle
                .route()
                .add(b.build())
                .replace()
                .execute()
                .await
                .map_err(|e| LinkError::Route(r.dst, r.gw.unwrap_or(Ipv4Addr::UNSPECIFIED), e))?;
        }
        Ok(())
    }

    /// `tc qdisc del dev INDEX ingress` (and its filters); none there is success.
    pub async fn del_ingress_qdisc(&self, index: u32) -> Result<(), LinkError> {
        let mut req = self.handle.qdisc().del(index as i32);
        req.message_mut().header.parent = netlink_packet_route::tc::TcHandle::INGRESS;
        req.message_mut().header.handle = 0xffff_0000.into();
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if [libc::ENOENT, libc::EINVAL].contains(&errno(&e)) => Ok(()),
            Err(e) => Err(LinkError::Qdisc(index, e)),
        }
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

    /// Adds an IPv4 address; `replace` converges: it is there afterwards whether it was or not.
    pub async fn add_address(
        &self,
        index: u32,
        name: &str,
        addr: Ipv4Net,
    ) -> Result<(), LinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(|e| LinkError::AddAddress(name.to_owned(), addr, e))
    }

    /// A permanent neighbour entry: `ip` is at `mac` on link `index`, no ARP needed.
    pub async fn add_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), LinkError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| LinkError::Neighbour(index, ip, e))
    }

    /// `ip route replace DEST via VIA dev INDEX onlink`.
    pub async fn add_onlink_route(
        &self,
        dest: Ipv4Net,
        via: Ipv4Addr,
        index: u32,
    ) -> Result<(), LinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .gateway(via)
            .output_interface(index)
            .onlink()
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| LinkError::Route(dest, via, e))
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

    /// `tc qdisc add dev INDEX ingress`; one that is already there is success.
    pub async fn add_ingress_qdisc(&self, index: u32) -> Result<(), LinkError> {
        match self
            .handle
            .qdisc()
            .add(index as i32)
            .ingress()
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == libc::EEXIST => Ok(()),
            Err(e) => Err(LinkError::Qdisc(index, e)),
        }
    }

    /// `tc filter add dev FROM parent ffff: prio PRIO protocol PROTOCOL u32 match KEYS
    /// action mirred egress redirect dev TO`: what the keys match leaves by `to`; the rest
    /// goes on into `from`'s own stack. No keys match every frame. `protocol` is an
    /// ethertype in host order (0x0003 for all).
    pub async fn redirect_ingress(
        &self,
        from: u32,
        to: u32,
        prio: u16,
        protocol: u16,
        keys: Vec<TcU32Key>,
    ) -> Result<(), LinkError> {
        let mut mirred = TcMirror::default();
        mirred.generic.action = TcActionType::Stolen;
        mirred.eaction = TcMirrorActionType::EgressRedir;
        mirred.ifindex = to;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.to_owned()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirred,
            ))]),
        ];
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.keys = if keys.is_empty() {
            vec![TcU32Key::default()] // mask 0: matches everything
        } else {
            keys
        };
        selector.nkeys = u8::try_from(selector.keys.len())
            .map_err(|_| LinkError::Redirect(from, to, rtnetlink::Error::RequestFailed))?;
        self.handle
            .traffic_filter(from as i32)
            .add()
            .parent(0xffff_0000)
            .priority(prio)
            .protocol(protocol.to_be())
            .u32(&[
                TcFilterU32Option::Selector(selector),
                TcFilterU32Option::Action(vec![action]),
            ])
            .map_err(|e| LinkError::Redirect(from, to, e))?
            .execute()
            .await
            .map_err(|e| LinkError::Redirect(from, to, e))
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

/// u32 keys matching `bytes` at `offset` from the network header (negative offsets reach into
/// the Ethernet header: the source MAC is at -8), merged into the aligned 32-bit words
/// `tc filter ... u32` works on.
pub fn u32_keys(matches: &[(i32, &[u8])]) -> Vec<TcU32Key> {
    let mut words: std::collections::BTreeMap<i32, (u32, u32)> = Default::default();
    for (offset, bytes) in matches {
        for (i, b) in bytes.iter().enumerate() {
            let at = offset + i as i32;
            let word = at.div_euclid(4) * 4;
            let shift = 8 * (3 - at.rem_euclid(4)) as u32;
            let (mask, val) = words.entry(word).or_default();
            *mask |= 0xff << shift;
            *val |= u32::from(*b) << shift;
        }
    }
    words
        .into_iter()
        .map(|(off, (mask, val))| {
            let mut key = TcU32Key::default();
            (key.mask, key.val, key.off) = (mask, val, off);
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_keys_merge_bytes_into_aligned_words() {
        // An ARP sender: the frame's source MAC at -8, the ARP sha at 8 and spa at 14.
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let ip = [10, 0, 0, 2];
        let keys = u32_keys(&[(-8, &mac), (8, &mac), (14, &ip)]);
        let k = |off, mask, val| {
            let mut key = TcU32Key::default();
            (key.mask, key.val, key.off) = (mask, val, off);
            key
        };
        assert_eq!(
            keys,
            vec![
                k(-8, 0xffff_ffff, 0x0211_2233),
                k(-4, 0xffff_0000, 0x4455_0000),
                k(8, 0xffff_ffff, 0x0211_2233),
                k(12, 0xffff_ffff, 0x4455_0a00),
                k(16, 0xffff_0000, 0x0002_0000),
            ]
        );
    }
}
