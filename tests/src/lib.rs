//! Shared pieces of the integration tests (DESIGN.md §9): the sandbox fixture that runs the
//! daemon in a network namespace of the test's own, and the fake VM that speaks Ethernet on
//! a TAP fd, and the Debian VM that runs the package under systemd (`vm`). The tests
//! themselves are in `tests/tests/`.

pub mod cnidir;
pub mod fakedns;
pub mod fakevm;
pub mod fakevm6;
pub mod guestvm;
pub mod ids;
pub mod l2attack;
pub mod sandbox;
pub mod vm;
