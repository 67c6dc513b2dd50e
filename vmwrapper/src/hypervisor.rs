//! Per-hypervisor network arguments. An enum, so Cloud Hypervisor, crosvm and Firecracker
//! slot in beside QEMU with their own syntax.

use protocol::Interface;
use std::os::fd::RawFd;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Qemu,
}

impl Kind {
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "qemu" => Some(Kind::Qemu),
            _ => None,
        }
    }

    /// Guesses the hypervisor from the command's file name.
    pub fn detect(command: &str) -> Option<Kind> {
        let base = Path::new(command).file_name()?.to_str()?;
        if base.starts_with("qemu-system-") || base == "qemu-kvm" || base == "kvm" {
            Some(Kind::Qemu)
        } else {
            None
        }
    }

    /// The arguments that give the guest its NICs. `fds[i]` are interface `i`'s fd numbers
    /// (one per queue) as the hypervisor will see them.
    pub fn net_args(self, interfaces: &[Interface], fds: &[Vec<RawFd>]) -> Vec<String> {
        match self {
            Kind::Qemu => qemu_args(interfaces, fds),
        }
    }
}

/// `-netdev tap,id=tmnetI,fd=N` (or `fds=a:b` with `vhost`-less multi-queue) and
/// `-device virtio-net-pci,netdev=tmnetI,mac=M[,mq=on,vectors=2N+2]`. vnet_hdr is negotiated
/// by QEMU from the fd (which was opened with IFF_VNET_HDR).
fn qemu_args(interfaces: &[Interface], fds: &[Vec<RawFd>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (iface, fds)) in interfaces.iter().zip(fds).enumerate() {
        let list: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
        let netdev = if list.len() == 1 {
            format!("tap,id=tmnet{i},fd={}", list[0])
        } else {
            format!("tap,id=tmnet{i},fds={}", list.join(":"))
        };
        let mut device = format!("virtio-net-pci,netdev=tmnet{i},mac={}", iface.mac);
        if list.len() > 1 {
            device.push_str(&format!(",mq=on,vectors={}", 2 * list.len() + 2));
        }
        out.extend(["-netdev".to_owned(), netdev, "-device".to_owned(), device]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(mac: &str, queues: u16) -> Interface {
        Interface {
            network: "default".parse().unwrap(),
            ifname: "tm0123456789".parse().unwrap(),
            mac: mac.parse().unwrap(),
            address: None,
            gateway: None,
            mtu: 1500,
            queues,
            vnet_hdr: true,
        }
    }

    #[test]
    fn qemu_single_and_multi_queue() {
        let args = Kind::Qemu.net_args(
            &[iface("02:00:00:00:00:01", 1), iface("02:00:00:00:00:02", 2)],
            &[vec![3], vec![4, 5]],
        );
        assert_eq!(
            args,
            vec![
                "-netdev",
                "tap,id=tmnet0,fd=3",
                "-device",
                "virtio-net-pci,netdev=tmnet0,mac=02:00:00:00:00:01",
                "-netdev",
                "tap,id=tmnet1,fds=4:5",
                "-device",
                "virtio-net-pci,netdev=tmnet1,mac=02:00:00:00:00:02,mq=on,vectors=6",
            ]
        );
    }

    #[test]
    fn detection_by_name() {
        assert_eq!(
            Kind::detect("/usr/bin/qemu-system-x86_64"),
            Some(Kind::Qemu)
        );
        assert_eq!(Kind::detect("qemu-system-aarch64"), Some(Kind::Qemu));
        assert_eq!(Kind::detect("/usr/bin/firefox"), None);
    }
}
