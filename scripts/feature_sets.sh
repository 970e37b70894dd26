#!/usr/bin/env bash
# Lists every crate that `cargo run` (facenet-cli) or `maturin build` (facenet-py) would build
# with other features than `cargo test --workspace` does: each one is a second release build of
# itself and of everything above it. crates/workspace-hack asks for the union; this prints
# nothing while it is complete. Exits 1 when it lists something.
# Crates built for the target (normal dependencies, proc-macros left out) and crates built for
# the host (build scripts' dependencies, proc-macros) have separate feature sets: each side is
# compared on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
list() { cargo tree -q "$@" -f '{p} [{f}]' --prefix none | sed 's/ (\*)$//' | sort -u; }
ws_target=$(mktemp)
ws_all=$(mktemp)
trap 'rm -f "$ws_target" "$ws_all"' EXIT
list --workspace -e normal,dev,no-proc-macro >"$ws_target"
list --workspace -e normal,build,dev >"$ws_all"
status=0
for pkg in facenet-cli facenet-py; do
  out=$( {
    list -p "$pkg" -e normal,no-proc-macro | grep -vxF -f "$ws_target" | sed 's/$/  (target)/'
    list -p "$pkg" -e normal,build | grep -vxF -f "$ws_all" | sed 's/$/  (host)/'
  } || true)
  if [ -n "$out" ]; then
    echo "$pkg builds these with other features than cargo test --workspace:"
    echo "$out" | sed 's/^/  /'
    status=1
  fi
done
exit $status
