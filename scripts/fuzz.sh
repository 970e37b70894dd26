#!/usr/bin/env bash
# The fuzzing campaign: every target of fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer, debug
# assertions on) for FUZZ_SECONDS each (default 600), FUZZ_JOBS targets at once (default 2),
# starting from fuzz/seeds and the corpus of earlier runs (fuzz/corpus, kept between runs).
# libFuzzer runs in fork mode and goes on after a crash; each crashing input is left in
# fuzz/artifacts/<target>/ (copy it to fuzz/regressions/<target>/ once fixed: the regression
# test replays that folder in CI). Prints a table: executions, coverage, corpus, findings.
#
#   scripts/fuzz.sh                     # all targets, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh request image
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-600}"
jobs="${FUZZ_JOBS:-2}"
all=(image keras_h5 weights mtcnn_pt text_files gallery_export request)
targets=("${all[@]}")
if [ $# -gt 0 ]; then targets=("$@"); fi

declare -A max_len=([image]=65536 [keras_h5]=32768 [weights]=4096 [mtcnn_pt]=65536
  [text_files]=4096 [gallery_export]=8192 [request]=16384)

cargo +nightly fuzz build -a
mkdir -p fuzz/logs
run() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  if [ "$t" = mtcnn_pt ]; then
    # The fetched MTCNN stages seed this target; they are weights and stay out of the repository.
    cp "${FACENET_HOME:-$HOME/.cache/facenet}/mtcnn/pnet.pt" "fuzz/corpus/$t/" 2>/dev/null || true
  fi
  cargo +nightly fuzz run -a "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len="${max_len[$t]:-4096}" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"fuzz/logs/$t.log" 2>&1 || true
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  echo "fuzzing $t for ${secs} s"
  run "$t" &
done
wait

printf '\n| target | seconds | executions | exec/s | coverage (edges) | features | corpus | crashes | timeouts | out of memory |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for t in "${targets[@]}"; do
  # Fork mode's status lines: `#N: cov: C ft: F corp: K exec/s: E oom/timeout/crash: O/T/X time: Ss ...`
  line="$(grep -E '^#[0-9]+: cov:' "fuzz/logs/$t.log" | tail -1 || true)"
  if [ -z "$line" ]; then
    printf '| %s | no status line: see fuzz/logs/%s.log |\n' "$t" "$t"
    continue
  fi
  echo "$line" | awk -v t="$t" '{
    n = substr($1, 2) + 0
    for (i = 2; i <= NF; i++) {
      if ($i == "cov:") cov = $(i + 1); if ($i == "ft:") ft = $(i + 1)
      if ($i == "corp:") corp = $(i + 1); if ($i == "exec/s:") eps = $(i + 1)
      if ($i == "oom/timeout/crash:") { split($(i + 1), a, "/"); oom = a[1]; to = a[2]; cr = a[3] }
      if ($i == "time:") { s = $(i + 1); sub("s", "", s) }
    }
    printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", t, s, n, eps, cov, ft, corp, cr, to, oom
  }'
done
found=$(find fuzz/artifacts -type f 2>/dev/null | wc -l)
echo
echo "inputs kept in fuzz/artifacts: $found"
