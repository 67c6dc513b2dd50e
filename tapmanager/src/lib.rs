//! tapmanager: the root daemon that wires virtual machines into networks and hands their TAP
//! file descriptors to unprivileged callers. The binary (`main.rs`) only wires this library.
//!
//! Where things are: [`config`] (the TOML file), [`daemon`] (accept, authorize, dispatch),
//! [`lifecycle`] (what runs on attach, on exit, on start-up), [`tap`] (the only ioctl code),
//! [`link`] (rtnetlink), [`firewall`] (per-port guards), [`ipam`], [`names`], [`state`] (the
//! journal), [`peer`] (who is calling), [`privileges`] (capabilities), [`cli`] (list output).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod firewall;
pub mod ipam;
pub mod lifecycle;
pub mod link;
pub mod names;
pub mod peer;
pub mod privileges;
pub mod state;
pub mod tap;

/// An error and its causes on one line: "attach failed: cannot create TAP: EBUSY".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
