//! tapmanager: the root daemon that wires virtual machines into networks and hands their TAP
//! file descriptors to unprivileged callers. The binary (`main.rs`) only wires this library.
//! `docs/architecture.md` in the repository is the one-page map.
//!
//! Where things are: [`config`] (the TOML file), [`daemon`] (accept, authorize, dispatch),
//! [`lifecycle`] (what runs on attach, on exit, on start-up; [`lifecycle::plan()`] chooses
//! names and addresses), [`kinds`] (one module per network kind, and the contract the
//! lifecycle drives them by), and below them [`net`]: [`net::tap`]
//! (where a TAP is opened), [`net::link`] (rtnetlink), [`net::firewall`] and
//! [`net::nfnetlink`] (per-port guards), [`net::netns`], [`net::join`] (veth to TAP),
//! [`net::reaper`]. Also [`ipam`], [`names`], [`state`] (the journal), [`peer`] (who is
//! calling), [`privileges`] (capabilities), [`hostfail`] (what a caller is told when the
//! kernel refuses a step), [`admin`] (`doctor`, `init`, list output).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod failpoint;
pub mod hostfail;
pub mod ipam;
pub mod kinds;
pub mod lifecycle;
pub mod names;
pub mod net;
pub mod peer;
pub mod privileges;
pub mod state;
pub mod systemd;

pub use protocol::error_chain;

/// An error of a step that may fail in several ways, until each layer has its own type
/// (issue 13); [`hostfail::explain`] finds the errno in its chain.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
