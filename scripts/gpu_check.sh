#!/usr/bin/env bash
# The GPU checks of the `gpu` feature (burn's wgpu backend), as one script for a GPU machine.
#
# Build here (the GPU machine may have no registry access), then copy `gpu-bin/` there and run:
#   scripts/gpu_check.sh --build     # cargo build + the test binary into gpu-bin/
#   scripts/gpu_check.sh             # on the GPU machine: parity, bench embed, a training step
#
# Parity: the network with random weights on the GPU against the CPU (crates/facenet/tests/
# gpu.rs); bench embed at batch 1, 32 and 128 with random weights (nothing to fetch); bench
# train: triplet steps of the small network and of keras-128. Every check runs; the exit status
# is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${GPU_BIN:-gpu-bin}

if [ "${1:-}" = "--build" ]; then
  mkdir -p "$OUT"
  cargo build --release -p facenet-cli --features facenet-cli/gpu
  cp target/release/facenet "$OUT/facenet"
  test_bin=$(cargo test --release -p facenet --features gpu --test gpu --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
  cp "$test_bin" "$OUT/gpu-test"
  strip "$OUT/facenet" "$OUT/gpu-test" 2>/dev/null || true # a quarter smaller to copy
  ls -l "$OUT"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || echo "no Vulkan ICD files found (wgpu needs the driver's Vulkan support)"
# Every check runs, also after one fails (a GPU machine is often had for minutes only); the exit
# status says whether any failed.
failed=()
check() {
  local name=$1
  shift
  echo "== $name"
  if ! "$@"; then
    echo "!! $name failed"
    failed+=("$name")
  fi
}
check "parity (GPU against CPU, random weights)" "$OUT/gpu-test" --ignored --nocapture
check "bench embed --gpu" "$OUT/facenet" --gpu bench embed --batch 1,32,128 --runs 3
check "bench train --gpu (triplet steps)" "$OUT/facenet" --gpu bench train --models small,keras-128 --steps 3
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "all GPU checks passed"
