#!/usr/bin/env bash
# The GPU checks of the `gpu` feature (burn's wgpu backend), as one script for a GPU machine.
#
# Build here (the GPU machine may have no registry access), then copy `gpu-bin/` there and run:
#   scripts/gpu_check.sh --build     # cargo build + the test binary into gpu-bin/
#   scripts/gpu_check.sh             # on the GPU machine: parity, bench embed, a training step
#
# Parity: the network with random weights on the GPU against the CPU (crates/facenet/tests/
# gpu.rs); bench embed at batch 1, 32 and 128 with random weights (nothing to fetch); bench
# train: triplet steps of the small network. Prints everything; exits non-zero on a failure.
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
  ls -l "$OUT"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || echo "no Vulkan ICD files found (wgpu needs the driver's Vulkan support)"
echo "== parity (GPU against CPU, random weights)"
"$OUT/gpu-test" --ignored --nocapture
echo "== bench embed --gpu"
"$OUT/facenet" --gpu bench embed --batch 1,32,128 --runs 3
echo "== bench train --gpu (small network, triplet steps)"
"$OUT/facenet" --gpu bench train --models small --steps 3
