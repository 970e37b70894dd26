#!/usr/bin/env bash
# Embedding speed of facenet against ONNX Runtime on the same machine, back to back.
#
#   bench/compare.sh            # batch 1, 8 and 32 (BATCHES=1,32 to choose)
#   THREADS=1 bench/compare.sh  # both on one thread (default: all the CPUs of the process)
#   ROUNDS=3 bench/compare.sh   # the whole comparison three times; median ratio per batch
#   PRECISION=f32,bf16 bench/compare.sh   # also facenet's opt-in bf16 mode (Intel AMX), each
#                                         # against the same ORT (FP32) run; default f32
#   PRECISION=f32,int8 bench/compare.sh   # also int8 (calibrated first, by `facenet quantize`
#                                         # on 300 LFW DevTrain faces outside pairs.txt,
#                                         # if not done yet)
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
ROUNDS=${ROUNDS:-1}

[ -f "$H5" ] || { echo "no $H5: run 'cargo run --release -- fetch' first" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q onnx onnxruntime h5py numpy pillow
fi
cargo build --release -q
if [[ ",$PRECISION," == *",int8,"* ]] && [ ! -f "$HOME_DIR/facenet_keras.int8.json" ]; then
  ./target/release/facenet quantize --pairs "$SHARED/data/lfw-protocol/pairsDevTrain.txt" \
    --exclude "$SHARED/data/lfw-protocol/pairs.txt" --images "$SHARED/data/lfw"
fi

# The machines are shared and their speed drifts over minutes, so the two tools run batch size by
# batch size (ORT, then facenet, for each), keeping each pair that is compared a few seconds
# apart; ROUNDS > 1 repeats the whole and prints each round's ratio and then their median.
ratios=$(mktemp)
onnx=$(mktemp --suffix .onnx)
trap 'rm -f "$ratios" "$onnx"' EXIT
if [ "$THREADS" -gt 0 ]; then export RAYON_NUM_THREADS=$THREADS; fi
# The ONNX graph, built once from the h5 file and checked against the golden embeddings.
"$VENV/bin/python" "$SHARED/bench/ort_facenet.py" --h5 "$H5" --check "$SHARED/reference/embeddings.json" \
  --crops "$SHARED/reference/crops" --save-onnx "$onnx" --threads "$THREADS" 2>&1 | grep -v '^#'
for round in $(seq "$ROUNDS"); do
  for b in ${BATCHES//,/ }; do
    ort=$("$VENV/bin/python" "$SHARED/bench/ort_facenet.py" --onnx "$onnx" --bench --batch "$b" \
          --threads "$THREADS" 2>&1 | grep -v '^#')
    echo "$ort"
    o=$(echo "$ort" | sed -n "s/^ort batch=$b img_per_s=\([0-9.]*\).*/\1/p")
    for p in ${PRECISION//,/ }; do
      ours=$(./target/release/facenet bench embed --batch "$b" --precision "$p" --runs 9 | grep '^embed ')
      echo "$ours"
      r=$(echo "$ours" | sed -n "s/^embed batch=$b img_per_s=\([0-9.]*\).*/\1/p")
      [ -n "$o" ] && [ -n "$r" ] || continue
      ratio=$(awk -v o="$o" -v r="$r" 'BEGIN { printf "%.3f", r / o }')
      echo "ratio$([ "$ROUNDS" -gt 1 ] && echo " round=$round") batch=$b precision=$p facenet/ort=$ratio (facenet $r img/s, ort $o img/s)"
      echo "$b $p $ratio" >>"$ratios"
    done
  done
done
if [ "$ROUNDS" -gt 1 ]; then
  for p in ${PRECISION//,/ }; do
    for b in ${BATCHES//,/ }; do
      awk -v b="$b" -v p="$p" '$1 == b && $2 == p { v[n++] = $3 }
        END { if (!n) exit; for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              m = n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
              printf "ratio batch=%s precision=%s facenet/ort=%.3f (median of %d rounds, %.3f to %.3f)\n", b, p, m, n, v[0], v[n - 1] }' "$ratios"
    done
  done
fi
