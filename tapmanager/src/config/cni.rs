//! A CNI network's settings (the kind: `kinds/cni/`).

use super::checks;
use super::raw::{OneOrMany, RawCni};
use super::VethBinding;
use std::path::PathBuf;

/// Virtlet's way: per guest a namespace the CNI plugins of `cni_network` set up; the address
/// they give the namespace's interface is handed to the guest by DHCP, with its MAC, and the
/// interface is joined to the guest's TAP by `binding`. The list is read at each attach, so a
/// conf dir written after the daemon started (by a cluster's network agent) is picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniNet {
    pub cni_network: String,
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub binding: VethBinding,
    pub lease_secs: u32,
    /// Whether start-up runs CNI GC with this daemon's attachments as the valid ones: safe
    /// only when nothing else (a kubelet, a container runtime) ADDs into this network.
    pub gc: bool,
}

pub(super) fn validate(c: RawCni) -> Result<CniNet, String> {
    if c.cni_network.is_empty() {
        return Err("cni_network is empty".into());
    }
    let binding = match c.binding.as_deref() {
        None => VethBinding::TcRedirect,
        Some("routed") => {
            return Err(
                "binding \"routed\" does not apply to a CNI network: the plugin's \
                        address is the guest's, so the veth is joined to the TAP \
                        (tc-redirect or bridge)"
                    .into(),
            )
        }
        other => VethBinding::parse(other)?.expect("routed handled above"),
    };
    checks::lease_secs(c.lease_secs)?;
    let bin_dirs = match c.cni_bin_dir {
        OneOrMany::One(d) => vec![d],
        OneOrMany::Many(v) if !v.is_empty() => v,
        OneOrMany::Many(_) => return Err("cni_bin_dir is an empty list".into()),
    };
    for d in bin_dirs.iter().chain([&c.cni_conf_dir]) {
        if !d.is_absolute() {
            return Err(format!("{} is not an absolute path", d.display()));
        }
    }
    Ok(CniNet {
        cni_network: c.cni_network,
        conf_dir: c.cni_conf_dir,
        bin_dirs,
        binding,
        lease_secs: c.lease_secs,
        gc: c.gc,
    })
}
