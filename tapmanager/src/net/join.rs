//! A network's binding: how a veth meets a TAP inside a guest's namespace at layer 2
//! (DESIGN.md §2). Either a bridge whose two ports learn nothing, or an ingress mirred
//! redirect each way (Kata's and tc-redirect-tap's way), with no bridge at all.
//!
//! The TAP-to-veth direction is guarded on the tc-redirect binding: only IPv4 from the guest's
//! MAC and address, and ARP whose frame and sender fields name them, leave by the veth.
//! Everything else (DHCP from 0.0.0.0, IPv6, spoofed frames) goes on into the TAP's own stack
//! in the guest's namespace, which holds no address and forwards nothing, and ends there; the
//! DHCP server's packet socket sees the guest's frames before tc does, so it still answers.
//! On the bridge binding the guard is [`bridge_guard_script`] where nothing beyond the veth
//! checks (CNI), and the host side's rules where they do (isolated.rs).

use crate::config::VethBinding;
use crate::net::link::{u32_keys, LinkError, Links};
use protocol::MacAddr;
use std::net::Ipv4Addr;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
/// Offsets from the network header: the Ethernet source, an IPv4 source, ARP's sender fields.
const ETH_SRC: i32 = -8;
const IP_SRC: i32 = 12;
const ARP_SHA: i32 = 8;
const ARP_SPA: i32 = 14;
/// The bridge of the bridge binding, inside a namespace of the daemon's own.
pub const NS_BRIDGE: &str = "br0";

/// One end of the join: a link's index and name, both in the namespace `links` talks to.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    pub index: u32,
    pub name: &'a str,
}

/// Joins `tap` and `veth` (both up) by `binding`; the bridge binding's bridge is named
/// `bridge`. `guest` is the only source (MAC, IPv4) the guest may use.
pub async fn join(
    links: &Links,
    binding: VethBinding,
    tap: End<'_>,
    veth: End<'_>,
    mtu: u32,
    guest: (MacAddr, Ipv4Addr),
    bridge: &str,
) -> Result<(), LinkError> {
    match binding {
        VethBinding::Bridge => {
            let br = links.add_bridge(bridge, mtu).await?;
            for end in [veth, tap] {
                links
                    .enslave_without_learning(end.index, end.name, br, bridge)
                    .await?;
            }
        }
        VethBinding::TcRedirect => {
            let (mac, ip) = (guest.0 .0, guest.1.octets());
            for end in [veth, tap] {
                links.add_ingress_qdisc(end.index).await?;
            }
            links
                .redirect_ingress(veth.index, tap.index, 1, ETH_P_ALL, Vec::new())
                .await?;
            let ipv4 = u32_keys(&[(ETH_SRC, &mac), (IP_SRC, &ip)]);
            links
                .redirect_ingress(tap.index, veth.index, 1, ETH_P_IP, ipv4)
                .await?;
            let arp = u32_keys(&[(ETH_SRC, &mac), (ARP_SHA, &mac), (ARP_SPA, &ip)]);
            links
                .redirect_ingress(tap.index, veth.index, 2, ETH_P_ARP, arp)
                .await?;
        }
    }
    Ok(())
}

/// The bridge binding's guard, for one `nft -f` in the namespace: table `netdev {table}`
/// hooks the TAP's ingress, where every frame of the guest passes (a bridge's own hooks are
/// skipped by frames to link-local group MACs, DESIGN.md §6), and lets it send only IPv4 and
/// ARP from the guest's MAC and address, no DHCP server answers; table `bridge {table}` keeps
/// DHCP from crossing the bridge the other way (the guest's own server answers on the TAP's
/// packet socket, which sees the guest's frames before the ingress hook).
pub fn bridge_guard_script(table: &str, tap: &str, mac: MacAddr, ip: Ipv4Addr) -> String {
    format!(
        "table bridge {table} {{\n  chain forward {{ type filter hook forward priority 0; policy accept;\n    \
         udp dport {{ 67, 68 }} counter drop\n  }}\n}}\n\
         table netdev {table} {{\n  chain ingress {{ type filter hook ingress device \"{tap}\" priority -500; policy accept;\n    \
         ether saddr != {mac} counter drop\n    \
         ether type ip ip saddr != {ip} counter drop\n    \
         ether type ip udp sport 67 counter drop\n    \
         ether type arp arp saddr ether != {mac} counter drop\n    \
         ether type arp arp saddr ip != {ip} counter drop\n    \
         ether type != {{ ip, arp }} counter drop\n  }}\n}}\n"
    )
}

/// Removes what [`bridge_guard_script`] made (and a table of the bridge family alone, as
/// daemons before the netdev guard made it). Converges: either may be absent.
pub fn bridge_guard_removal(table: &str) -> String {
    format!(
        "add table bridge {table}\ndelete table bridge {table}\n\
         add table netdev {table}\ndelete table netdev {table}\n"
    )
}
