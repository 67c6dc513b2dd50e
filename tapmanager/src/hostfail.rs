//! What a caller is told when the kernel refuses a step of building its network: the step
//! (each error on the way names its own: "cannot set up TAP tm…", "cannot create veth …"), the
//! kernel's reason, and what would fix it, under [`ErrorCode::HostSetup`], not `Internal`.
//! `Internal` is left for what only a bug explains.

use protocol::ErrorCode;
use std::error::Error;

/// What a named step's source may be: an io, nix, netlink or tap error, kept as it came so
/// [`errno`] finds the kernel's reason in it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A step that failed, named where the error that ended it (a bare `io::Error`) does not say.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step}")]
pub struct StepError {
    step: String,
    #[source]
    source: BoxError,
}

/// Names the step a fallible call is: `.step(|| format!("open macvtap {name}'s device"))`.
pub trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, StepError>;

    /// [`Step::step`] inside code that returns `io::Result` (a namespace thread's closure).
    fn io_step(self, what: impl FnOnce() -> String) -> std::io::Result<T>
    where
        Self: Sized,
    {
        self.step(what).map_err(std::io::Error::other)
    }
}

impl<T, E: Into<BoxError>> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, StepError> {
        self.map_err(|e| StepError {
            step: what(),
            source: e.into(),
        })
    }
}

/// The errno the kernel gave for the innermost call of `e`'s chain, if one did.
pub fn errno(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut found = None;
    let mut cur = Some(e);
    while let Some(c) = cur {
        let here = if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io.raw_os_error()
        } else if let Some(n) = c.downcast_ref::<nix::errno::Errno>() {
            Some(*n as i32)
        } else if let Some(rtnetlink::Error::NetlinkError(m)) = c.downcast_ref::<rtnetlink::Error>()
        {
            Some(-m.raw_code())
        } else {
            None
        };
        found = here.filter(|n| *n > 0).or(found);
        cur = c.source();
    }
    found
}

/// What would fix a step the kernel refused with `errno`.
pub fn fix(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => {
            "the daemon lacks a privilege this step needs: run it as root with the capabilities \
             of the shipped unit (packaging/tapmanager.service), not inside a user namespace or \
             a container without CAP_NET_ADMIN; `tapmanager doctor` checks"
        }
        libc::EXFULL => {
            "the bridge already has 1,023 ports, the most the kernel allows on one bridge (the \
             daemon puts 128 guests on a bridge and joins more bridges to it, so the other \
             ports are not its guests'): remove ports that are not the daemon's, or put \
             further guests on another network"
        }
        libc::ENODEV | libc::ENXIO => {
            "a device the step needs is not there: the link it names was deleted meanwhile, or \
             its driver is not loaded (modprobe tun, veth, macvtap or bridge); `tapmanager \
             doctor` checks"
        }
        libc::EOPNOTSUPP | libc::EAFNOSUPPORT => {
            "the kernel lacks what this step needs: load its module (tun, veth, macvtap, \
             bridge, nf_tables, sch_ingress, act_mirred); `tapmanager doctor` lists what is \
             missing"
        }
        libc::EMFILE => {
            "the daemon is out of file descriptors: raise its limit (LimitNOFILE= in the unit; \
             it needs one per queue of each NIC and one per attachment); `tapmanager doctor` \
             says the value"
        }
        libc::ENFILE => {
            "the host is out of file descriptors (fs.file-max): raise it with sysctl, or run \
             fewer guests"
        }
        libc::ENOMEM | libc::ENOBUFS => {
            "the kernel is short of memory for this step: free memory, or raise the limit the \
             step names (net.core.rmem_max, the neighbour table's gc_thresh3)"
        }
        libc::ENOSPC => {
            "no space left: on the filesystem of the daemon's state_dir (/run), or in the \
             kernel table the step names (neighbour table, routes, nftables sets)"
        }
        libc::EEXIST => {
            "something not made by this daemon already has that name: remove it \
             (`ip link del NAME`, or the file the step names)"
        }
        libc::EBUSY => "something else holds the device or mount the step names: find and stop it",
        libc::EADDRINUSE => {
            "the address is taken: another program binds this port on the host (DHCP's 67, \
             DNS's 53 on the gateway), or, for a macvtap, another device on the same lower \
             link already has this MAC"
        }
        libc::EROFS => {
            "a filesystem the daemon must write is read-only (its state_dir, /proc/sys): run it \
             without ProtectSystem=/ProtectKernelTunables= or a read-only /run"
        }
        _ => {
            "see the daemon's log for this step (journalctl -t tapmanager), and run \
             `tapmanager doctor`"
        }
    }
}

/// The code and message a caller gets for a failed build step: [`ErrorCode::HostSetup`] with
/// the fix when the kernel refused something, else `Internal`. EINVAL stays `Internal`: the
/// kernel refused a message the daemon built wrong, which no one but us can fix.
pub fn explain(e: &(dyn Error + 'static)) -> (ErrorCode, String) {
    let chain = crate::error_chain(e);
    match errno(e).filter(|n| *n != libc::EINVAL) {
        Some(n) => (
            code(n),
            format!("{chain}. To fix: {}; nothing was left behind", fix(n)),
        ),
        None => (ErrorCode::Internal, chain),
    }
}

/// A limit reached (a bridge's ports, file descriptors) is [`ErrorCode::CapacityExceeded`];
/// any other refusal [`ErrorCode::HostSetup`].
fn code(errno: i32) -> ErrorCode {
    match errno {
        libc::EXFULL | libc::EMFILE | libc::ENFILE => ErrorCode::CapacityExceeded,
        _ => ErrorCode::HostSetup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_errno_of_a_chain_is_found_through_named_steps() {
        let io = std::io::Error::from_raw_os_error(libc::EXFULL);
        let named: Result<(), _> = Err(io);
        let err = named
            .step(|| "add TAP tm0 to bridge tmbr0".into())
            .unwrap_err();
        assert_eq!(errno(&err), Some(libc::EXFULL));
        let (code, msg) = explain(&err);
        assert_eq!(code, ErrorCode::CapacityExceeded);
        assert!(
            msg.starts_with("cannot add TAP tm0 to bridge tmbr0: "),
            "{msg}"
        );
        assert!(msg.contains("1,023 ports"), "{msg}");
        assert_eq!(errno(&nix::errno::Errno::EMFILE), Some(libc::EMFILE));
    }

    #[test]
    fn a_step_inside_an_io_result_keeps_its_name_and_errno() {
        let r: nix::Result<()> = Err(nix::errno::Errno::EBUSY);
        let err = r.io_step(|| "mount a private sysfs".into()).unwrap_err();
        assert_eq!(errno(&err), Some(libc::EBUSY));
        let (code, msg) = explain(&err);
        assert_eq!(code, ErrorCode::HostSetup);
        assert!(
            msg.starts_with("cannot mount a private sysfs: EBUSY"),
            "{msg}"
        );
    }

    #[test]
    fn an_error_with_no_errno_stays_internal() {
        let err: BoxError = "network vanished".into();
        assert_eq!(
            explain(&*err),
            (ErrorCode::Internal, "network vanished".into())
        );
    }
}
