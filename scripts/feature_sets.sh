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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Each list is written to a file first, so that a failing cargo tree stops the script (set -e)
# instead of leaving an empty list that would compare as clean.
list --workspace -e normal,dev,no-proc-macro >"$tmp/ws_target"
list --workspace -e normal,build,dev >"$tmp/ws_all"
status=0
for pkg in facenet-cli facenet-py; do
  list -p "$pkg" -e normal,no-proc-macro >"$tmp/target"
  list -p "$pkg" -e normal,build >"$tmp/all"
  # workspace-hack itself differs by its feature `serve` (the CLI's, not the wheel's): it has
  # no code, and nothing else is built again for it.
  out=$( { grep -vxF -f "$tmp/ws_target" "$tmp/target" | grep -v '^workspace-hack ' || true; } | sed 's/$/  (target)/'
    { grep -vxF -f "$tmp/ws_all" "$tmp/all" | grep -v '^workspace-hack ' || true; } | sed 's/$/  (host)/')
  if [ -n "$out" ]; then
    echo "$pkg builds these with other features than cargo test --workspace:"
    echo "$out" | sed 's/^/  /'
    status=1
  fi
done
exit $status
