//! The command line: `vmwrapper [--socket PATH] [--id VM_ID] [--hypervisor KIND]
//! [--netns PATH] [--cloud-init DIR [--cloud-init-version 1|2]]
//! --net NAME[,mac=MAC][,queues=N][,take=IFNAME] [--net ...] -- HYPERVISOR [ARGS...]`.

use crate::hypervisor::Kind;
use protocol::{MacAddr, NetworkName, NetworkRequest, VmId};
use std::path::PathBuf;

pub const USAGE: &str = "usage: vmwrapper [--socket PATH] [--id VM_ID] \
[--hypervisor qemu|qemu-nic|cloud-hypervisor|crosvm|firecracker] [--netns PATH] \
[--cloud-init DIR [--cloud-init-version 1|2]] \
--net NAME[,mac=MAC][,queues=N][,take=IFNAME] [--net ...] -- HYPERVISOR [ARGS...]

Asks tapmanager for the VM's network, then execs HYPERVISOR with it: the TAP fds at 3, 4, ... \
and the hypervisor's network arguments appended to ARGS (Firecracker: its --config-file gets \
network-interfaces with the TAPs' names).

--socket PATH: the daemon's socket (default /run/tapmanager/tapmanager.sock).
--id VM_ID: the attachment's name (default: a fresh one); the same id gets the same MACs.
--hypervisor KIND: when the program's name does not tell (qemu-system-*, cloud-hypervisor, \
crosvm, firecracker are recognized).
--net NAME[,mac=MAC][,queues=N][,take=IFNAME]: one NIC on network NAME, in guest order.
--netns PATH: a network namespace (e.g. /proc/PID/ns/net) whose interfaces the --net entries \
with take=IFNAME take over (a network of kind pod); opened by vmwrapper, passed as an fd.
--cloud-init DIR: write a NoCloud seed there (meta-data, network-config, user-data if absent) \
with each NIC's address, gateway, routes and DNS, for guests without a DHCP client. DIR is \
created 0700 if absent; an existing DIR must be yours, not a symlink, and writable by you only.
--cloud-init-version 1|2: the network-config format (default 2).";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: PathBuf,
    pub id: Option<VmId>,
    pub hypervisor: Option<Kind>,
    pub nets: Vec<NetworkRequest>,
    /// The namespace whose interfaces `take=` NICs take over.
    pub netns: Option<PathBuf>,
    /// Where to write a NoCloud seed, and in which network-config version.
    pub cloud_init: Option<(PathBuf, crate::cloudinit::Version)>,
    pub command: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unknown option {0}")]
    UnknownOption(String),
    #[error("invalid --net {0:?}: {1}")]
    Net(String, String),
    #[error("invalid --id: {0}")]
    Id(String),
    #[error("unknown --hypervisor {0:?} (known: {names})", names = crate::hypervisor::NAMES)]
    Hypervisor(String),
    #[error("no --net given")]
    NoNet,
    #[error("no hypervisor command after --")]
    NoCommand,
    #[error("take= needs --netns (the namespace whose interface is taken over)")]
    TakeWithoutNetns,
    #[error("--cloud-init-version is 1 or 2, not {0:?}")]
    CloudInitVersion(String),
    #[error("--cloud-init-version needs --cloud-init DIR")]
    VersionWithoutCloudInit,
}

/// Parses `NAME[,mac=MAC][,queues=N]`.
pub fn parse_net(spec: &str) -> Result<NetworkRequest, ArgsError> {
    let bad = |why: String| ArgsError::Net(spec.to_owned(), why);
    let mut parts = spec.split(',');
    let name: NetworkName = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e: protocol::InvalidValue| bad(e.to_string()))?;
    let mut req = NetworkRequest::new(name);
    for p in parts {
        match p.split_once('=') {
            Some(("mac", v)) => {
                let mac: MacAddr = v
                    .parse()
                    .map_err(|e: protocol::InvalidValue| bad(e.to_string()))?;
                req.mac = Some(mac);
            }
            Some(("take", v)) => {
                req.take_over = Some(
                    v.parse()
                        .map_err(|e: protocol::InvalidValue| bad(e.to_string()))?,
                );
            }
            Some(("queues", v)) => {
                req.queues = v
                    .parse()
                    .ok()
                    .filter(|q| *q >= 1)
                    .ok_or_else(|| bad(format!("queues must be a number from 1, not {v:?}")))?;
            }
            _ => {
                return Err(bad(format!(
                    "unknown part {p:?} (expected mac=..., queues=... or take=...)"
                )))
            }
        }
    }
    Ok(req)
}

pub fn parse(argv: &[String]) -> Result<Args, ArgsError> {
    let mut a = Args {
        socket: protocol::DEFAULT_SOCKET.into(),
        id: None,
        hypervisor: None,
        nets: Vec::new(),
        netns: None,
        cloud_init: None,
        command: Vec::new(),
    };
    let mut version = None;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| ArgsError::MissingValue(flag.to_owned()))
        };
        match flag {
            "--" => {
                a.command = it.by_ref().cloned().collect();
                break;
            }
            "--socket" => a.socket = value()?.into(),
            "--id" => {
                a.id = Some(
                    value()?
                        .parse()
                        .map_err(|e: protocol::InvalidValue| ArgsError::Id(e.to_string()))?,
                )
            }
            "--hypervisor" => {
                let v = value()?;
                a.hypervisor = Some(Kind::from_name(&v).ok_or(ArgsError::Hypervisor(v))?);
            }
            "--net" => a.nets.push(parse_net(&value()?)?),
            "--netns" => a.netns = Some(value()?.into()),
            "--cloud-init" => {
                a.cloud_init = Some((value()?.into(), crate::cloudinit::Version::V2));
            }
            "--cloud-init-version" => {
                version = Some(match value()?.as_str() {
                    "1" => crate::cloudinit::Version::V1,
                    "2" => crate::cloudinit::Version::V2,
                    other => return Err(ArgsError::CloudInitVersion(other.to_owned())),
                });
            }
            other => return Err(ArgsError::UnknownOption(other.to_owned())),
        }
    }
    if a.nets.is_empty() {
        return Err(ArgsError::NoNet);
    }
    if a.command.is_empty() {
        return Err(ArgsError::NoCommand);
    }
    if a.netns.is_none() && a.nets.iter().any(|n| n.take_over.is_some()) {
        return Err(ArgsError::TakeWithoutNetns);
    }
    match (&mut a.cloud_init, version) {
        (Some((_, v)), Some(asked)) => *v = asked,
        (None, Some(_)) => return Err(ArgsError::VersionWithoutCloudInit),
        _ => {}
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn full_command_line() {
        let a = parse(&argv(
            "--socket /tmp/s --id vm1 --net default --net lan,mac=AA-BB-CC-DD-EE-00,queues=4 -- qemu-system-x86_64 -m 512 -- x",
        ))
        .unwrap();
        assert_eq!(a.socket, PathBuf::from("/tmp/s"));
        assert_eq!(a.id.unwrap().as_str(), "vm1");
        assert_eq!(a.nets.len(), 2);
        assert_eq!(a.nets[0].queues, 1);
        assert_eq!(a.nets[1].mac.unwrap().to_string(), "aa:bb:cc:dd:ee:00");
        assert_eq!(a.nets[1].queues, 4);
        assert_eq!(a.command, argv("qemu-system-x86_64 -m 512 -- x"));
    }

    #[test]
    fn a_take_over_names_the_interface_and_needs_the_namespace() {
        let a = parse(&argv(
            "--netns /proc/42/ns/net --net pods,take=eth0 --net pods,take=net1,queues=2 -- qemu",
        ))
        .unwrap();
        assert_eq!(a.netns, Some(PathBuf::from("/proc/42/ns/net")));
        assert_eq!(a.nets[0].take_over.as_ref().unwrap().as_str(), "eth0");
        assert_eq!(a.nets[1].take_over.as_ref().unwrap().as_str(), "net1");
        assert_eq!(
            parse(&argv("--net pods,take=eth0 -- qemu")),
            Err(ArgsError::TakeWithoutNetns)
        );
        assert!(parse(&argv("--netns /x --net pods,take=a/b -- qemu")).is_err());
    }

    #[test]
    fn errors_a_user_can_act_on() {
        assert_eq!(parse(&argv("-- qemu")), Err(ArgsError::NoNet));
        assert_eq!(parse(&argv("--net default")), Err(ArgsError::NoCommand));
        assert!(matches!(
            parse(&argv("--net default,mac=01:00:00:00:00:00 -- q")),
            Err(ArgsError::Net(..))
        ));
        assert!(matches!(
            parse(&argv("--net default,queues=0 -- q")),
            Err(ArgsError::Net(..))
        ));
        assert!(matches!(
            parse(&argv("--net default,speed=9 -- q")),
            Err(ArgsError::Net(..))
        ));
        assert!(matches!(
            parse(&argv("--bogus -- q")),
            Err(ArgsError::UnknownOption(_))
        ));
        assert!(matches!(
            parse(&argv("--net")),
            Err(ArgsError::MissingValue(_))
        ));
        assert!(matches!(
            parse(&argv("--hypervisor vmware --net a -- q")),
            Err(ArgsError::Hypervisor(_))
        ));
        assert!(matches!(
            parse(&argv("--cloud-init /s --cloud-init-version 3 --net a -- q")),
            Err(ArgsError::CloudInitVersion(_))
        ));
        assert_eq!(
            parse(&argv("--cloud-init-version 1 --net a -- q")),
            Err(ArgsError::VersionWithoutCloudInit)
        );
        let a = parse(&argv("--cloud-init-version 1 --cloud-init /s --net a -- q")).unwrap();
        assert_eq!(
            a.cloud_init,
            Some((PathBuf::from("/s"), crate::cloudinit::Version::V1))
        );
    }
}
