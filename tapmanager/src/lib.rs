//! tapmanager: the root daemon that wires virtual machines into networks and hands their TAP
//! file descriptors to unprivileged callers. The binary (`main.rs`) only wires this library.
//!
//! Where things are: [`config`] (the TOML file), [`daemon`] (accept, authorize, dispatch),
//! [`lifecycle`] (what runs on attach, on exit, on start-up), [`tap`] (the only ioctl code),
//! [`link`] (rtnetlink), [`firewall`] (per-port guards), [`ipam`], [`names`], [`netns`],
//! [`isolated`] (the isolated kind), [`state`] (the
//! journal), [`peer`] (who is calling), [`privileges`] (capabilities), [`cli`] (list output).

pub mod cli;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod failpoint;
pub mod firewall;
pub mod hostfail;
pub mod init;
pub mod ipam;
pub mod isolated;
pub mod join;
pub mod lifecycle;
pub mod link;
pub mod macvtap;
pub mod names;
pub mod netns;
pub mod nfnetlink;
pub mod peer;
pub mod pod;
pub mod privileges;
pub mod reaper;
pub mod state;
pub mod systemd;
pub mod tap;

pub use protocol::error_chain;

/// An error of a step that may fail in several ways, until each layer has its own type
/// (issue 13); [`hostfail::explain`] finds the errno in its chain.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
