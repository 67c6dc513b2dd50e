//! The kernel-facing layer: links, TAPs, namespaces, the firewall. Nothing here knows the
//! daemon, its lifecycle or its kinds (a test in `lib.rs` checks that no file here names them); the
//! layers above use these as `ip`, `nft` and the tun driver would be used.

pub mod firewall;
pub mod join;
pub mod link;
pub mod netns;
pub mod nfnetlink;
pub mod reaper;
pub mod tap;
