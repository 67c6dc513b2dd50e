//! Routes: `ip route`.

use super::{LinkError, Links};
use ipnet::Ipv4Net;
use rtnetlink::RouteMessageBuilder;
use std::net::Ipv4Addr;

/// `blackhole DEST`, for adding and deleting alike.
fn blackhole(dest: Ipv4Net) -> netlink_packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest.addr(), dest.prefix_len())
        .kind(netlink_packet_route::route::RouteType::BlackHole)
        .build()
}

impl Links {
    /// `ip route replace IP/32 dev INDEX scope link src SRC`: a routed guest behind its TAP,
    /// answered from its gateway's address.
    pub async fn add_host_route(
        &self,
        ip: Ipv4Addr,
        index: u32,
        src: Ipv4Addr,
    ) -> Result<(), LinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .output_interface(index)
            .scope(netlink_packet_route::route::RouteScope::Link)
            .pref_source(src)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| LinkError::Route(Ipv4Net::from(ip), src, e))
    }

    /// `ip route replace blackhole DEST`: what of a routed network's subnet no guest holds is
    /// dropped here, and costs no neighbour entry.
    pub async fn add_blackhole_route(&self, dest: Ipv4Net) -> Result<(), LinkError> {
        self.handle
            .route()
            .add(blackhole(dest))
            .replace()
            .execute()
            .await
            .map_err(|e| LinkError::Route(dest, Ipv4Addr::UNSPECIFIED, e))
    }

    /// `ip route del blackhole DEST`; one that is not there is fine.
    pub async fn delete_blackhole_route(&self, dest: Ipv4Net) -> Result<(), LinkError> {
        match self.handle.route().del(blackhole(dest)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if super::errno(&e) == libc::ESRCH => Ok(()),
            Err(e) => Err(LinkError::Route(dest, Ipv4Addr::UNSPECIFIED, e)),
        }
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

    /// `ip -6 route replace DEST via VIA dev INDEX onlink` (VIA link-local, with a permanent
    /// neighbour entry).
    pub async fn add_onlink_route6(
        &self,
        dest: ipnet::Ipv6Net,
        via: std::net::Ipv6Addr,
        index: u32,
    ) -> Result<(), LinkError> {
        let msg = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
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
            .map_err(|e| LinkError::Route6(format!("{dest} via {via}"), e))
    }
}
