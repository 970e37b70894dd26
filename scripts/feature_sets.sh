#!/usr/bin/env bash
# Lists every crate that `cargo run` (facenet-cli) or `maturin build` (facenet-py) would build
# with other features than `cargo test --workspace` does: each one is a second release build of
# itself and of everything above it. crates/workspace-hack asks for the union; this prints
# nothing while it is complete. Exits 1 when it lists something.
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree -q "$@" -e normal,build -f '{p} [{f}]' --prefix none | sed 's/ (\*)$//' | sort -u; }
ws=$(mktemp); trap 'rm -f "$ws"' EXIT
cargo tree -q --workspace -e normal,build,dev -f '{p} [{f}]' --prefix none | sed 's/ (\*)$//' | sort -u >"$ws"
status=0
for pkg in facenet-cli facenet-py; do
  if ! out=$(tree -p "$pkg" | grep -vxF -f "$ws"); then continue; fi
  echo "$pkg builds these with other features than cargo test --workspace:"
  echo "$out" | sed 's/^/  /'
  status=1
done
exit $status
