# Sourced by the README's two commands (scripts/demo.sh, scripts/test.sh), so
# that each works as written both as root on a fresh Debian (which has no sudo) and as a user
# who has sudo. `as_root scripts/NAME.sh "$@"` (run from the repository's top, where the
# scripts cd first) returns when already root; otherwise it re-runs the script
# through sudo, keeping the caller's toolchain (PATH, and rustup's and cargo's homes, which
# sudo would reset to root's), or returns 1 when there is no sudo.
as_root() {
  [ "$(id -u)" = 0 ] && return 0
  command -v sudo >/dev/null || return 1
  local keep=("PATH=$PATH")
  local rustup=${RUSTUP_HOME:-${HOME:-/nonexistent}/.rustup}
  local cargo=${CARGO_HOME:-${HOME:-/nonexistent}/.cargo}
  [ -d "$rustup" ] && keep+=("RUSTUP_HOME=$rustup")
  [ -d "$cargo" ] && keep+=("CARGO_HOME=$cargo")
  echo "$(basename "$1"): not root: running it again through sudo" >&2
  exec sudo env "${keep[@]}" bash "$@"
}
