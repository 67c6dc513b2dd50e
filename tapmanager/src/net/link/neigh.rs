//! Neighbour entries: `ip neigh`.

use super::{LinkError, Links};
use netlink_packet_route::neighbour::NeighbourState;
use protocol::MacAddr;
use std::net::IpAddr;

impl Links {
    /// A permanent neighbour entry: `ip` is at `mac` on link `index`, no ARP needed.
    pub async fn add_neighbour(
        &self,
        index: u32,
        ip: impl Into<IpAddr>,
        mac: MacAddr,
    ) -> Result<(), LinkError> {
        let ip = ip.into();
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| LinkError::Neighbour(index, ip, e))
    }
}
