//! vmwrapper: ask tapmanager for a VM's network, put the TAP fds at fixed numbers, and exec
//! the hypervisor with the matching network arguments. Synchronous and small: parse
//! ([`args`]), ask (the protocol crate's blocking client), build argv ([`hypervisor`]), place
//! fds ([`fds`]), exec; optionally a cloud-init seed ([`cloudinit`] for its text, [`seed`] for
//! the directory). The exec keeps the pid, so the daemon's pidfd watch follows the
//! hypervisor and tears the network down when it exits.

pub mod args;
pub mod cloudinit;
pub mod fds;
pub mod firecracker;
pub mod hypervisor;
pub mod seed;
