#!/bin/bash
# CI's bounded fuzzing, deterministic: every target starts from a fresh seed corpus (ci-corpus/,
# rebuilt each time, never the local campaign's) with a fixed seed and a fixed number of
# executions, so a run here and a run in CI try the same inputs; a red run is a new bug, not luck
# or a faster machine. A crash, an out-of-memory or a timeout fails the run and leaves its input in
# fuzz/artifacts/TARGET. FUZZ_SCALE multiplies the executions (default 1; about 30 s a target on
# one core); FUZZ_SECONDS caps each target's time all the same (default 120).
set -euo pipefail
cd "$(dirname "$0")"
export CORPUS_ROOT=ci-corpus
rm -rf ci-corpus
bash seed.sh
for tr in onnx_import:600000 onnx_interp:400000 fusion_diff:200000 npy:1000000 artifact:200000; do
  t=${tr%%:*}; runs=$(( ${tr##*:} * ${FUZZ_SCALE:-1} ))
  echo "fuzz $t: $runs executions"
  log=$(mktemp)
  bash run.sh "$t" "${FUZZ_SECONDS:-120}" -seed=1 -runs=$runs >"$log" 2>&1 || true
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|ERROR|panicked|SUMMARY" "$log" || true
  if [ -n "$(ls artifacts/$t 2>/dev/null)" ]; then
    # the crash's own words (a panic, an abort on a failed allocation, a stack overflow) and its
    # input, so a red run elsewhere can be replayed here: base64 -d > x; bash run.sh T 1 x
    echo "fuzz $t: crash in fuzz/artifacts/$t"; grep -vE '^(#|"|INFO:|MS:|	)' "$log" | tail -n 30
    for f in artifacts/$t/*; do
      [ "$(stat -c %s "$f")" -gt 65536 ] || { echo "input $f (base64):"; base64 -w0 "$f"; echo; }
    done
    rm -f "$log"; exit 1
  fi
  rm -f "$log"
done
