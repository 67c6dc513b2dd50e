//! A pod network's settings (the kind: `kinds/pod.rs`).

use super::raw::RawPod;
use super::{checks, default_masquerade_cidr, Access, Masquerade, VethBinding};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The shim path (Virtlet, Virtink's pod network, Kata): the caller passes its pod's network
/// namespace as an fd and names the interface the guest takes over; its address, gateway and
/// MAC go to the guest, and come back when the attachment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    pub binding: PodBinding,
    pub dns: Vec<Ipv4Addr>,
    /// For a guest that takes over an interface with IPv6.
    pub dns6: Vec<Ipv6Addr>,
    pub search: Vec<String>,
    pub lease_secs: u32,
    /// Who may pass a namespace they do not own.
    pub adopt_any: Access,
}

/// How a pod NIC meets the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodBinding {
    /// The guest takes the interface over at layer 2: its address, MAC and routes.
    Join(VethBinding),
    /// KubeVirt's and Virtink's masquerade: the interface keeps its address; the guest sits
    /// behind NAT in the pod at `cidr`'s network + 2, inbound only through `ports`.
    Masquerade(Masquerade),
}

/// `adopt_any` is resolved by the caller (it names users and groups).
pub(super) fn validate(pd: RawPod, adopt_any: Access) -> Result<PodNet, String> {
    let binding = match pd.binding.as_deref() {
        Some("masquerade") => {
            let cidr = pd.cidr.unwrap_or_else(default_masquerade_cidr);
            checks::nat_cidr(cidr)?;
            PodBinding::Masquerade(Masquerade {
                cidr,
                ports: checks::forwards(&pd.ports, "port")?,
                cidr6: Some(checks::nat_cidr6(pd.cidr6)?),
            })
        }
        _ if pd.cidr.is_some() || pd.cidr6.is_some() || !pd.ports.is_empty() => {
            return Err("cidr, cidr6 and ports belong to binding = \"masquerade\"".into())
        }
        None => PodBinding::Join(VethBinding::TcRedirect),
        Some("routed") => {
            return Err("binding \"routed\" does not apply to a pod network: the pod's address is the guest's (tc-redirect or bridge), or the guest is NATed behind it (masquerade)".into())
        }
        other => PodBinding::Join(
            VethBinding::parse(other)
                .map_err(|e| format!("{e}, masquerade"))?
                .expect("routed handled above"),
        ),
    };
    checks::lease_secs(pd.lease_secs)?;
    Ok(PodNet {
        binding,
        dns: pd.dns,
        dns6: pd.dns6,
        search: pd.search,
        lease_secs: pd.lease_secs,
        adopt_any,
    })
}
