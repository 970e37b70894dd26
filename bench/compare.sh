#!/usr/bin/env bash
# Embedding speed of facenet against ONNX Runtime on the same machine, back to back.
#
#   bench/compare.sh            # batch 1, 8 and 32 (BATCHES=1,32 to choose)
#   THREADS=1 bench/compare.sh  # both on one thread (default: all the CPUs of the process)
#   PRECISION=f32,bf16 bench/compare.sh   # also facenet's opt-in bf16 mode (Intel AMX), each
#                                         # against the same ORT (FP32) run; default f32
#
# Needs ../shared/bench/ort_facenet.py, the fetched weights (`facenet fetch`) and PyPI access
# for a throwaway virtualenv (onnx, onnxruntime, h5py, numpy, pillow). Prints both tools' lines
# and the ratio facenet img/s / ORT img/s per batch size and precision.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${FACENET_SHARED:-../shared}
HOME_DIR=${FACENET_HOME:-$HOME/.cache/facenet}
H5="$HOME_DIR/facenet_keras.h5"
VENV=${ORT_VENV:-/tmp/ort-venv}
BATCHES=${BATCHES:-1,8,32}
THREADS=${THREADS:-0}
PRECISION=${PRECISION:-f32}

[ -f "$H5" ] || { echo "no $H5: run 'cargo run --release -- fetch' first" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q onnx onnxruntime h5py numpy pillow
fi
cargo build --release -q

ort=$("$VENV/bin/python" "$SHARED/bench/ort_facenet.py" --h5 "$H5" --check "$SHARED/reference/embeddings.json" \
      --crops "$SHARED/reference/crops" --bench --batch "$BATCHES" --threads "$THREADS" 2>&1 | grep -v '^#')
echo "$ort"
if [ "$THREADS" -gt 0 ]; then export RAYON_NUM_THREADS=$THREADS; fi
for p in ${PRECISION//,/ }; do
  ours=$(./target/release/facenet bench embed --batch "$BATCHES" --precision "$p" | grep '^embed ')
  echo "$ours"
  for b in ${BATCHES//,/ }; do
    o=$(echo "$ort" | sed -n "s/^ort batch=$b img_per_s=\([0-9.]*\).*/\1/p")
    r=$(echo "$ours" | sed -n "s/^embed batch=$b img_per_s=\([0-9.]*\).*/\1/p")
    [ -n "$o" ] && [ -n "$r" ] && awk -v b="$b" -v p="$p" -v o="$o" -v r="$r" \
      'BEGIN { printf "ratio batch=%s precision=%s facenet/ort=%.3f (facenet %.2f img/s, ort %.2f img/s)\n", b, p, r / o, r, o }'
  done
done
