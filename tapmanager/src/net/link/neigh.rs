//! Neighbour entries: `ip neigh`.

use super::{LinkError, Links};
use netlink_packet_route::neighbour::NeighbourState;
use protocol::MacAddr;
use std::net::{IpAddr, Ipv4Addr};

impl Links {
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
}
