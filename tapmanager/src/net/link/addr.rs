//! Addresses: `ip addr` (and what a taken-over interface had, saved and given back).

use super::{errno, LinkError, Links};
use futures::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use protocol::MacAddr;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// A link's IPv6 side as it was before the daemon took the link over: its configured global
/// addresses (the link-local, and what SLAAC or a DHCPv6 client made, come back by
/// themselves) and the main table's routes through it that neither the kernel derived from
/// an address nor a router advertisement taught. Not kept: routes of other tables,
/// multipath routes, their MTU and preferred source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedIpv6 {
    pub addresses: Vec<SavedAddress6>,
    pub routes: Vec<SavedRoute6>,
}

/// A configured IPv6 address of a link, with the flags it was added with that say how it
/// behaves (`nodad`, `noprefixroute`, `optimistic`, `mngtmpaddr`, `home`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedAddress6 {
    pub net: Ipv6Net,
    #[serde(default)]
    pub flags: u32,
}

/// An IPv6 route through one link, as it was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedRoute6 {
    pub dst: Ipv6Net,
    pub gw: Option<Ipv6Addr>,
    /// `rtm_protocol`, and the metric (IPv6 routes are told apart by it).
    pub protocol: u8,
    pub metric: Option<u32>,
    /// `onlink`: the gateway is on the link whatever the addresses say (a /128 pod address).
    #[serde(default)]
    pub onlink: bool,
}

impl Links {
    /// Every address of link `index` (`ip addr show dev`).
    async fn addresses_on(
        &self,
        index: u32,
        name: &str,
    ) -> Result<Vec<netlink_packet_route::address::AddressMessage>, LinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| LinkError::Get(name.to_owned(), e))
    }

    /// The routes a dump of one family (`ip route show table all`) gives.
    async fn routes(
        &self,
        family: netlink_packet_route::route::RouteMessage,
        name: &str,
    ) -> Result<Vec<netlink_packet_route::route::RouteMessage>, LinkError> {
        self.handle
            .route()
            .get(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| LinkError::Get(name.to_owned(), e))
    }

    /// What a taken-over link `index` had, both families ([`Links::ipv4_state`] and
    /// [`SavedIpv6`]), from one address dump and a route dump per family.
    pub async fn saved_state(
        &self,
        index: u32,
        name: &str,
    ) -> Result<(Vec<SavedAddress>, Vec<SavedRoute>, SavedIpv6), LinkError> {
        let addrs = self.addresses_on(index, name).await?;
        let (addresses, routes) = self.ipv4_state(index, name, &addrs).await?;
        let v6 = self.ipv6_state(index, name, &addrs).await?;
        Ok((addresses, routes, v6))
    }

    /// What [`SavedIpv6`] keeps of link `index`, whose addresses are `addrs`.
    async fn ipv6_state(
        &self,
        index: u32,
        name: &str,
        addrs: &[netlink_packet_route::address::AddressMessage],
    ) -> Result<SavedIpv6, LinkError> {
        use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
        use netlink_packet_route::route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteProtocol,
        };
        let mut saved = SavedIpv6::default();
        for a in addrs {
            // Configured addresses only: SLAAC's and a DHCPv6 client's have lifetimes.
            let configured = a.attributes.iter().any(
                |x| matches!(x, AddressAttribute::Flags(f) if f.contains(AddressFlags::Permanent)),
            );
            if a.header.scope != AddressScope::Universe || !configured {
                continue;
            }
            let kept = AddressFlags::Nodad
                | AddressFlags::Optimistic
                | AddressFlags::Homeaddress
                | AddressFlags::Managetempaddr
                | AddressFlags::Noprefixroute;
            let flags = a
                .attributes
                .iter()
                .find_map(|x| match x {
                    AddressAttribute::Flags(f) => Some((*f & kept).bits()),
                    _ => None,
                })
                .unwrap_or(0);
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V6(v)) = attr {
                    if let Ok(net) = Ipv6Net::new(*v, a.header.prefix_len) {
                        saved.addresses.push(SavedAddress6 { net, flags });
                    }
                }
            }
        }
        let routes = self
            .routes(RouteMessageBuilder::<Ipv6Addr>::new().build(), name)
            .await?;
        for r in &routes {
            if r.header.table != 254
                || [RouteProtocol::Kernel, RouteProtocol::Ra].contains(&r.header.protocol)
            {
                continue;
            }
            let (mut oif, mut dst, mut gw, mut metric) = (None, Ipv6Addr::UNSPECIFIED, None, None);
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gw = Some(*g),
                    RouteAttribute::Priority(p) => metric = Some(*p),
                    _ => {}
                }
            }
            if oif != Some(index) {
                continue;
            }
            if let Ok(dst) = Ipv6Net::new(dst, r.header.destination_prefix_length) {
                saved.routes.push(SavedRoute6 {
                    dst,
                    gw,
                    protocol: r.header.protocol.into(),
                    metric,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                });
            }
        }
        Ok(saved)
    }

    /// Puts back what [`Links::ipv6_state`] saved (the link's IPv6 must be on again): the
    /// addresses, through duplicate address detection as any address, then the routes,
    /// those without a gateway first (a gateway may be reachable only through one).
    pub async fn restore_ipv6(
        &self,
        index: u32,
        name: &str,
        saved: &SavedIpv6,
    ) -> Result<(), LinkError> {
        for a in &saved.addresses {
            use netlink_packet_route::address::{AddressAttribute, AddressFlags};
            let mut req = self
                .handle
                .address()
                .add(index, IpAddr::V6(a.net.addr()), a.net.prefix_len())
                .replace();
            if a.flags != 0 {
                req.message_mut().attributes.push(AddressAttribute::Flags(
                    AddressFlags::from_bits_truncate(a.flags),
                ));
            }
            req.execute()
                .await
                .map_err(|e| LinkError::AddAddress6(format!("{} to {name}", a.net), e))?;
        }
        let mut routes: Vec<&SavedRoute6> = saved.routes.iter().collect();
        routes.sort_by_key(|r| r.gw.is_some());
        for r in routes {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(r.dst.addr(), r.dst.prefix_len())
                .output_interface(index)
                .protocol(r.protocol.into());
            if let Some(gw) = r.gw {
                b = b.gateway(gw);
            }
            if let Some(m) = r.metric {
                b = b.priority(m);
            }
            if r.onlink {
                b = b.onlink();
            }
            let what = match r.gw {
                Some(gw) => format!("{} via {gw} dev {name}", r.dst),
                None => format!("{} dev {name}", r.dst),
            };
            self.handle
                .route()
                .add(b.build())
                .replace()
                .execute()
                .await
                .map_err(|e| LinkError::Route6(what, e))?;
        }
        Ok(())
    }

    /// Takes every IPv4 address off a link, then sets it down with a new MAC, which drops
    /// every route through it: what a CNI plugin configured there is the guest's now.
    pub async fn strip(&self, index: u32, name: &str, mac: MacAddr) -> Result<(), LinkError> {
        for a in self.addresses_on(index, name).await? {
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
    async fn ipv4_state(
        &self,
        index: u32,
        name: &str,
        addrs: &[netlink_packet_route::address::AddressMessage],
    ) -> Result<(Vec<SavedAddress>, Vec<SavedRoute>), LinkError> {
        use netlink_packet_route::address::AddressAttribute;
        use netlink_packet_route::route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteProtocol,
        };
        let mut out = Vec::new();
        for a in addrs {
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
        let routes = self
            .routes(RouteMessageBuilder::<Ipv4Addr>::new().build(), name)
            .await?;
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

    /// Adds an IPv6 address to a link without duplicate address detection (it is usable at
    /// once, also on a bridge with no port yet), replacing it if it is there.
    pub async fn add_address6(
        &self,
        index: u32,
        name: &str,
        addr: ipnet::Ipv6Net,
    ) -> Result<(), LinkError> {
        use rtnetlink::packet_route::address::AddressFlags;
        self.add_address6_with(index, name, addr, AddressFlags::Nodad)
            .await
    }

    /// [`Links::add_address6`] without the prefix's on-link route (`noprefixroute`): the
    /// caller routes the prefix itself.
    pub async fn add_address6_alone(
        &self,
        index: u32,
        name: &str,
        addr: ipnet::Ipv6Net,
    ) -> Result<(), LinkError> {
        use rtnetlink::packet_route::address::AddressFlags;
        let flags = AddressFlags::Nodad | AddressFlags::Noprefixroute;
        self.add_address6_with(index, name, addr, flags).await
    }

    async fn add_address6_with(
        &self,
        index: u32,
        name: &str,
        addr: ipnet::Ipv6Net,
        flags: rtnetlink::packet_route::address::AddressFlags,
    ) -> Result<(), LinkError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V6(addr.addr()), addr.prefix_len())
            .replace();
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(flags));
        req.execute()
            .await
            .map_err(|e| LinkError::AddAddress6(format!("{addr} to {name}"), e))
    }
}
