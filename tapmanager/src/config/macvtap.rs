//! A macvtap network's settings (the kind: `kinds/macvtap.rs`).

use super::checks;
use super::raw::RawMacvtap;
use protocol::{IfName, MacAddr};

/// Slicer's macvtap mode: the guest sits directly on `lower`'s LAN and takes its address from
/// the LAN's own DHCP; the fd handed out is the macvtap's character device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvtapNet {
    pub lower: IfName,
    pub mode: MacvtapMode,
    pub mtu: u32,
    /// Which MACs a caller may ask for: a macvtap guest's MAC is on the LAN itself, so one
    /// that took a LAN host's (its router's) would have the switch send it that host's
    /// traffic.
    pub allowed_macs: MacPolicy,
    /// The guard holds the guest's IPv6 sources to its MAC's modified EUI-64 identifier
    /// (`ipv6_sources = "eui64"`, the default); `false` with `"any"` (guests with privacy or
    /// stable-privacy addresses; then a guest can claim another LAN host's IPv6 address).
    pub ipv6_eui64_only: bool,
}

/// The MACs a caller may ask for on a macvtap network, beside the derived one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacPolicy {
    /// None: only the MAC derived from the caller's uid, VM id and NIC (locally administered,
    /// so never a real device's).
    DerivedOnly,
    /// Those starting with one of these byte prefixes (1 to 6 bytes each).
    Prefixes(Vec<Vec<u8>>),
    /// Any unicast MAC (`allowed_macs = ["any"]`).
    Any,
}

impl MacPolicy {
    /// Whether a caller may ask for `mac`.
    pub fn allows(&self, mac: MacAddr) -> bool {
        match self {
            MacPolicy::DerivedOnly => false,
            MacPolicy::Prefixes(p) => p.iter().any(|p| mac.0.starts_with(p)),
            MacPolicy::Any => true,
        }
    }

    fn parse(list: &[String]) -> Result<MacPolicy, String> {
        if list.is_empty() {
            return Ok(MacPolicy::DerivedOnly);
        }
        if list.iter().any(|x| x == "any") {
            return match list.len() {
                1 => Ok(MacPolicy::Any),
                _ => Err("allowed_macs: \"any\" stands alone".to_owned()),
            };
        }
        list.iter()
            .map(|x| {
                let bytes: Result<Vec<u8>, _> =
                    x.split(':').map(|b| u8::from_str_radix(b, 16)).collect();
                match bytes {
                    Ok(b) if (1..=6).contains(&b.len()) && x.split(':').all(|p| p.len() == 2) => {
                        Ok(b)
                    }
                    _ => Err(format!(
                        "allowed_macs: {x:?} is not a MAC prefix like \"52:54:00\" (1 to 6 \
                         bytes in hex, colon-separated) or \"any\""
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(MacPolicy::Prefixes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvtapMode {
    Bridge,
    Vepa,
    Private,
    Passthru,
}

pub(super) fn validate(m: RawMacvtap) -> Result<MacvtapNet, String> {
    let mode = match m.mode.as_str() {
        "bridge" => MacvtapMode::Bridge,
        "vepa" => MacvtapMode::Vepa,
        "private" => MacvtapMode::Private,
        "passthru" => MacvtapMode::Passthru,
        other => {
            return Err(format!(
                "mode {other:?}: expected bridge, vepa, private or passthru"
            ))
        }
    };
    checks::mtu(m.mtu)?;
    let lower = IfName::try_from(m.lower).map_err(|e| e.to_string())?;
    let allowed_macs = MacPolicy::parse(&m.allowed_macs)?;
    let ipv6_eui64_only = match m.ipv6_sources.as_deref() {
        None | Some("eui64") => true,
        Some("any") => false,
        Some(other) => {
            return Err(format!(
                "ipv6_sources {other:?}: expected \"eui64\" (the default) or \"any\""
            ))
        }
    };
    Ok(MacvtapNet {
        lower,
        mode,
        mtu: m.mtu,
        allowed_macs,
        ipv6_eui64_only,
    })
}
