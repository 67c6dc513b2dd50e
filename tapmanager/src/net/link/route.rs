//! Routes: `ip route`.

use super::{LinkError, Links};
use ipnet::Ipv4Net;
use rtnetlink::RouteMessageBuilder;
use std::net::Ipv4Addr;

impl Links {
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
