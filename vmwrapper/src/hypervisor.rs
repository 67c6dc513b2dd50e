//! Per-hypervisor network arguments. An enum, so Cloud Hypervisor, crosvm and Firecracker
//! slot in beside QEMU with their own syntax. Firecracker takes no fds and no network
//! arguments: it opens its TAPs by name from its config file ([`crate::firecracker`]).

use protocol::Interface;
use std::os::fd::RawFd;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-netdev tap,fd=` + `-device virtio-net-pci`.
    Qemu,
    /// QEMU's `-nic` shorthand (one queue a NIC).
    QemuNic,
    /// `--net fd=[a,b],mac=M,num_queues=2N`.
    CloudHypervisor,
    /// `--net tap-fd=N,mac=M` (one fd a NIC; the TAP must have vnet_hdr, which ours do).
    Crosvm,
    /// `network-interfaces` with `host_dev_name` in its `--config-file` (TAPs by name).
    Firecracker,
}

/// The names `--hypervisor` takes.
pub const NAMES: &str = "qemu, qemu-nic, cloud-hypervisor, crosvm, firecracker";

impl Kind {
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "qemu" => Some(Kind::Qemu),
            "qemu-nic" => Some(Kind::QemuNic),
            "cloud-hypervisor" | "ch" => Some(Kind::CloudHypervisor),
            "crosvm" => Some(Kind::Crosvm),
            "firecracker" => Some(Kind::Firecracker),
            _ => None,
        }
    }

    /// Whether it opens its TAPs by name (so the daemon keeps them persistent, hands no fd).
    pub fn by_name(self) -> bool {
        self == Kind::Firecracker
    }

    /// Guesses the hypervisor from the command's file name.
    pub fn detect(command: &str) -> Option<Kind> {
        let base = Path::new(command).file_name()?.to_str()?;
        if base.starts_with("qemu-system-") || base == "qemu-kvm" || base == "kvm" {
            Some(Kind::Qemu)
        } else if base == "cloud-hypervisor" {
            Some(Kind::CloudHypervisor)
        } else if base == "crosvm" {
            Some(Kind::Crosvm)
        } else if base == "firecracker" {
            Some(Kind::Firecracker)
        } else {
            None
        }
    }

    /// What this hypervisor cannot take, said before anything is attached: `queues[i]` is
    /// NIC `i`'s queue count.
    pub fn check(self, queues: &[u16]) -> Result<(), String> {
        let multi = queues.iter().any(|q| *q > 1);
        match self {
            Kind::Crosvm if multi => {
                Err("crosvm takes one TAP fd a NIC (tap-fd=N): ask for queues=1".into())
            }
            Kind::QemuNic if multi => Err(
                "QEMU's -nic form has no multi-queue device options: use --hypervisor qemu".into(),
            ),
            Kind::Firecracker if multi => {
                Err("Firecracker opens one queue a TAP: ask for queues=1".into())
            }
            _ => Ok(()),
        }
    }

    /// The arguments that give the guest its NICs. `fds[i]` are interface `i`'s fd numbers
    /// (one per queue) as the hypervisor will see them.
    pub fn net_args(self, interfaces: &[Interface], fds: &[Vec<RawFd>]) -> Vec<String> {
        match self {
            Kind::Qemu => qemu_args(interfaces, fds),
            Kind::QemuNic => interfaces
                .iter()
                .zip(fds)
                .flat_map(|(iface, fds)| {
                    [
                        "-nic".to_owned(),
                        format!("tap,fd={},model=virtio-net-pci,mac={}", fds[0], iface.mac),
                    ]
                })
                .collect(),
            Kind::CloudHypervisor => {
                // One --net with a value per NIC; no mtu= (the TAP has its MTU already).
                let mut out = vec!["--net".to_owned()];
                for (iface, fds) in interfaces.iter().zip(fds) {
                    let list: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
                    let fd = if list.len() == 1 {
                        list[0].clone()
                    } else {
                        format!("[{}]", list.join(","))
                    };
                    out.push(format!(
                        "fd={fd},mac={},num_queues={}",
                        iface.mac,
                        2 * list.len()
                    ));
                }
                out
            }
            Kind::Crosvm => interfaces
                .iter()
                .zip(fds)
                .flat_map(|(iface, fds)| {
                    [
                        "--net".to_owned(),
                        format!("tap-fd={},mac={}", fds[0], iface.mac),
                    ]
                })
                .collect(),
            // Its NICs are in its config file.
            Kind::Firecracker => Vec::new(),
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
            by_name: false,
            dns: Vec::new(),
            search: Vec::new(),
            routes: Vec::new(),
            ipv6: None,
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
    fn cloud_hypervisor_crosvm_and_the_qemu_nic_form() {
        let nics = [iface("02:00:00:00:00:01", 1), iface("02:00:00:00:00:02", 2)];
        assert_eq!(
            Kind::CloudHypervisor.net_args(&nics, &[vec![3], vec![4, 5]]),
            vec![
                "--net",
                "fd=3,mac=02:00:00:00:00:01,num_queues=2",
                "fd=[4,5],mac=02:00:00:00:00:02,num_queues=4",
            ]
        );
        assert_eq!(
            Kind::Crosvm.net_args(&nics[..1], &[vec![3]]),
            vec!["--net", "tap-fd=3,mac=02:00:00:00:00:01"]
        );
        assert_eq!(
            Kind::QemuNic.net_args(&nics[..1], &[vec![3]]),
            vec![
                "-nic",
                "tap,fd=3,model=virtio-net-pci,mac=02:00:00:00:00:01"
            ]
        );
        assert!(Kind::Crosvm.check(&[1, 2]).is_err());
        assert!(Kind::QemuNic.check(&[2]).is_err());
        assert!(Kind::CloudHypervisor.check(&[1, 4]).is_ok());
    }

    #[test]
    fn detection_by_name() {
        assert_eq!(
            Kind::detect("/usr/bin/qemu-system-x86_64"),
            Some(Kind::Qemu)
        );
        assert_eq!(Kind::detect("qemu-system-aarch64"), Some(Kind::Qemu));
        assert_eq!(Kind::detect("/usr/bin/firefox"), None);
        assert_eq!(
            Kind::detect("/opt/ch/cloud-hypervisor"),
            Some(Kind::CloudHypervisor)
        );
        assert_eq!(Kind::detect("crosvm"), Some(Kind::Crosvm));
        assert_eq!(Kind::from_name("ch"), Some(Kind::CloudHypervisor));
        assert_eq!(Kind::from_name("firecracker"), Some(Kind::Firecracker));
        assert_eq!(
            Kind::detect("/usr/local/bin/firecracker"),
            Some(Kind::Firecracker)
        );
        assert!(Kind::Firecracker.check(&[1, 2]).is_err());
    }
}
