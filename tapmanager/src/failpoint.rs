//! Crash points for the crash-at-every-step tests: with the `failpoints` feature (which only
//! the test crate turns on) and `TAPMANAGER_CRASH_AT=NAME` in the daemon's environment, the
//! daemon SIGKILLs itself when it reaches the point `NAME`. Without the feature [`hit`] is an
//! empty inline function: a release build has no such code, whatever its environment says.
//!
//! Names are `attach:STEP` and `teardown:STEP`, and `start:reconcile:STEP` for start-up;
//! [`POINTS`] lists them.

/// Every crash point, as the tests iterate them.
pub const POINTS: &[&str] = &[
    "start:reconcile:rebuilt",
    "attach:planned",
    "attach:bridge:tap",
    "attach:bridge:guards",
    "attach:bridge:enslaved",
    "attach:routed:tap",
    "attach:routed:guards",
    "attach:isolated:netns",
    "attach:isolated:rules",
    "attach:isolated:veth",
    "attach:isolated:inside",
    "attach:cni:cached",
    "attach:cni:added",
    "attach:cni:rewired",
    "attach:macvtap:link",
    "attach:macvtap:guard",
    "attach:macvtap:opened",
    "attach:pod:pinned",
    "attach:pod:saved",
    "attach:pod:stripped",
    "attach:pod:joined",
    "attach:built",
    "attach:journaled",
    "teardown:begin",
    "teardown:link",
    "teardown:port",
    "teardown:done",
];

#[cfg(feature = "failpoints")]
pub fn hit(point: &str) {
    if std::env::var("TAPMANAGER_CRASH_AT").is_ok_and(|p| p == point) {
        tracing::warn!(point, "crash point reached: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; should it not have arrived yet, end as abruptly.
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_point: &str) {}
