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
#   SLICES=1 bench/compare.sh   # each tool's RUNS (default 9) timed runs in one go, not in 3
#                               # alternating slices of 3 (below)
#   LOAD=steady bench/compare.sh  # both beside other work on the machine, started after the
#                                 # build and stopped at the end: steady (a busy loop), bursts
#                                 # (50 ms busy, 50 ms asleep), compile (gcc -O2 compiling
#                                 # SQLite's amalgamation over and over), each one process
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
RUNS=${RUNS:-9}
SLICES=${SLICES:-3}
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$SLICES" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS=$RUNS SLICES=$SLICES: expected positive whole numbers" >&2; exit 2; }
LOAD=${LOAD:-none}
case "$LOAD" in
  none | steady | bursts | compile) ;;
  *) echo "LOAD=$LOAD: expected none, steady, bursts or compile" >&2; exit 2 ;;
esac

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
load_pid=
stop_load() { if [ -n "$load_pid" ]; then kill -- -"$load_pid" 2>/dev/null || true; fi; }
trap 'stop_load; rm -f "$ratios" "$onnx"' EXIT
if [ "$THREADS" -gt 0 ]; then export RAYON_NUM_THREADS=$THREADS; fi
# The ONNX graph, built once from the h5 file and checked against the golden embeddings.
"$VENV/bin/python" "$SHARED/bench/ort_facenet.py" --h5 "$H5" --check "$SHARED/reference/embeddings.json" \
  --crops "$SHARED/reference/crops" --save-onnx "$onnx" --threads "$THREADS" 2>&1 | grep -v '^#'
# The load runs in a session of its own, so that stopping it stops whatever it started.
case "$LOAD" in
  steady) setsid bash -c 'while :; do :; done' & load_pid=$! ;;
  bursts)
    setsid python3 -c '
import time
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.05:
        pass
    time.sleep(0.05)' &
    load_pid=$! ;;
  compile)
    src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*libsqlite3-sys-*/sqlite3/sqlite3.c' \
          2>/dev/null | head -n 1)
    [ -n "$src" ] || { echo "LOAD=compile: no sqlite3.c under the cargo registry (build first)" >&2; exit 1; }
    setsid bash -c 'while :; do gcc -O2 -c "$1" -o /dev/null; done' _ "$src" & load_pid=$! ;;
esac
[ "$LOAD" = none ] || echo "# load: $LOAD (pid $load_pid), beside every run below"
# Each tool's rate in a round is the median of SLICES slices of RUNS/SLICES timed runs, the two
# tools' slices alternating (ORT, facenet, ORT, facenet, ...), so that both are measured across the
# same stretch of time and a slowdown of the machine lasting a few seconds falls on both alike.
per=$(( (RUNS + SLICES - 1) / SLICES ))
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for round in $(seq "$ROUNDS"); do
  for b in ${BATCHES//,/ }; do
    o_all=
    declare -A r_all=()
    for slice in $(seq "$SLICES"); do
      ort=$("$VENV/bin/python" "$SHARED/bench/ort_facenet.py" --onnx "$onnx" --bench --batch "$b" \
            --threads "$THREADS" --runs "$per" 2>&1 | grep -v '^#')
      echo "$ort slice=$slice"
      o_all+=" $(echo "$ort" | sed -n "s/^ort batch=$b img_per_s=\([0-9.]*\).*/\1/p")"
      for p in ${PRECISION//,/ }; do
        out=$(./target/release/facenet bench embed --batch "$b" --precision "$p" --runs "$per")
        ours=$(echo "$out" | grep '^embed ')
        # At batch 1, also where the single image's passes ran (how many on how many threads).
        echo "$ours slice=$slice$(echo "$out" | sed -n 's/^# single-image passes:\(.*\)/ (passes:\1)/p')"
        r_all[$p]+=" $(echo "$ours" | sed -n "s/^embed batch=$b img_per_s=\([0-9.]*\).*/\1/p")"
      done
    done
    o=$(echo "$o_all" | median)
    for p in ${PRECISION//,/ }; do
      r=$(echo "${r_all[$p]}" | median)
      [ -n "$o" ] && [ -n "$r" ] || continue
      ratio=$(awk -v o="$o" -v r="$r" 'BEGIN { printf "%.3f", r / o }')
      echo "ratio$([ "$ROUNDS" -gt 1 ] && echo " round=$round") batch=$b precision=$p facenet/ort=$ratio (facenet $r img/s, ort $o img/s, medians of $SLICES slices of $per runs)"
      echo "$b $p $ratio $r $o" >>"$ratios"
    done
    unset r_all
  done
done
if [ "$ROUNDS" -gt 1 ]; then
  # Per batch and precision: the median ratio with the rounds' range, then how far each tool's
  # own rate moved from round to round (fastest / slowest round).
  for p in ${PRECISION//,/ }; do
    for b in ${BATCHES//,/ }; do
      awk -v b="$b" -v p="$p" -v load="$LOAD" -v n=0 '$1 == b && $2 == p { v[n] = $3; f[n] = $4; o[n] = $5; n++ }
        END { if (!n) exit; for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              m = n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
              flo = fhi = f[0]; olo = ohi = o[0]
              for (i = 1; i < n; i++) { if (f[i] < flo) flo = f[i]; if (f[i] > fhi) fhi = f[i]; if (o[i] < olo) olo = o[i]; if (o[i] > ohi) ohi = o[i] }
              printf "ratio batch=%s precision=%s facenet/ort=%.3f (median of %d rounds, %.3f to %.3f) spread facenet=%.2f ort=%.2f load=%s\n", b, p, m, n, v[0], v[n - 1], fhi / flo, ohi / olo, load }' "$ratios"
    done
  done
fi
