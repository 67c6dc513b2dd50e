//! Values that cross the wire, parsed once at the edge into types that cannot be wrong.
//!
//! Every string a caller sends (VM id, network name, MAC) is checked here, before the daemon
//! makes a single syscall with it. The serde representation goes through `TryFrom<String>`,
//! so a frame carrying an invalid value fails to decode instead of reaching the daemon.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("VM id must be 1 to {max} bytes of [A-Za-z0-9._-], not starting with '.' or '-': {0:?}", max = VmId::MAX_LEN)]
    VmId(String),
    #[error("network name must be 1 to {max} bytes of [A-Za-z0-9_-]: {0:?}", max = NetworkName::MAX_LEN)]
    NetworkName(String),
    #[error("interface name must be 1 to 15 bytes of [A-Za-z0-9_.-], not '.' or '..': {0:?}")]
    IfName(String),
    #[error("MAC address must be six hex pairs separated by ':' or '-': {0:?}")]
    MacSyntax(String),
    #[error("MAC address {0} is multicast or broadcast; a NIC needs a unicast address")]
    MacMulticast(MacAddr),
    #[error("MAC address {0} is all zeros")]
    MacZero(MacAddr),
}

fn charset_ok(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// A VM's id as the caller names it. Unique per caller uid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VmId(String);

impl VmId {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VmId {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && !s.starts_with(['.', '-'])
            && charset_ok(&s, b"._-");
        if ok {
            Ok(VmId(s))
        } else {
            Err(InvalidValue::VmId(s))
        }
    }
}

/// The name of a `[networks.NAME]` table in the daemon's config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);

impl NetworkName {
    pub const MAX_LEN: usize = 32;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NetworkName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        if !s.is_empty() && s.len() <= Self::MAX_LEN && charset_ok(&s, b"_-") {
            Ok(NetworkName(s))
        } else {
            Err(InvalidValue::NetworkName(s))
        }
    }
}

/// A Linux interface name: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    pub const MAX_LEN: usize = 15;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s != "."
            && s != ".."
            && charset_ok(&s, b"_.-");
        if ok {
            Ok(IfName(s))
        } else {
            Err(InvalidValue::IfName(s))
        }
    }
}

macro_rules! string_newtype_common {
    ($t:ty) => {
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad` honours width and alignment, so tables line up.
                f.pad(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                Self::try_from(s.to_owned())
            }
        }
    };
}
string_newtype_common!(VmId);
string_newtype_common!(NetworkName);
string_newtype_common!(IfName);

/// An Ethernet address. Parses `aa:bb:cc:dd:ee:ff` and `AA-BB-CC-DD-EE-FF`; prints lower case
/// with colons. `FromStr` accepts only addresses a NIC may carry (unicast, non-zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Locally administered, unicast: what a derived MAC must look like.
    pub fn local_unicast(mut bytes: [u8; 6]) -> MacAddr {
        bytes[0] = (bytes[0] & 0xfc) | 0x02;
        MacAddr(bytes)
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Checks that a NIC may carry this address.
    pub fn validate_unicast(self) -> Result<MacAddr, InvalidValue> {
        if self.is_multicast() {
            Err(InvalidValue::MacMulticast(self))
        } else if self.is_zero() {
            Err(InvalidValue::MacZero(self))
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        f.pad(&format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let syntax = || InvalidValue::MacSyntax(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(syntax)?;
            if p.len() != 2 {
                return Err(syntax());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        MacAddr(out).validate_unicast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_accepts_both_spellings() {
        let a: MacAddr = "aa:bb:cc:dd:ee:f0".parse().unwrap();
        let b: MacAddr = "AA-BB-CC-DD-EE-F0".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "aa:bb:cc:dd:ee:f0");
        assert_eq!(format!("{a:<18}|"), "aa:bb:cc:dd:ee:f0 |");
        let vm: VmId = "vm".parse().unwrap();
        assert_eq!(format!("{vm:<4}|"), "vm  |");
    }

    #[test]
    fn mac_refuses_multicast_broadcast_zero_and_junk() {
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(InvalidValue::MacMulticast(_))
        ));
        assert!(matches!(
            "ff:ff:ff:ff:ff:ff".parse::<MacAddr>(),
            Err(InvalidValue::MacMulticast(_))
        ));
        assert!(matches!(
            "00:00:00:00:00:00".parse::<MacAddr>(),
            Err(InvalidValue::MacZero(_))
        ));
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:gg",
            "aabb.ccdd.eeff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn local_unicast_sets_the_right_bits() {
        let m = MacAddr::local_unicast([0xff; 6]);
        assert_eq!(m.0[0], 0xfe);
        assert!(!m.is_multicast());
    }

    #[test]
    fn names_are_checked() {
        assert!(VmId::try_from("vm-1.a_b".to_owned()).is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", "é"] {
            assert!(VmId::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(VmId::try_from("a".repeat(65)).is_err());
        assert!(IfName::try_from("tm0123456789abc".to_owned()).is_ok());
        assert!(IfName::try_from("tm0123456789abcd".to_owned()).is_err());
        assert!(IfName::try_from("..".to_owned()).is_err());
        assert!(NetworkName::try_from("default".to_owned()).is_ok());
        assert!(NetworkName::try_from("de.fault".to_owned()).is_err());
    }
}
