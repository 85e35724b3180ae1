#!/bin/bash
# CI's bounded fuzzing: every target for FUZZ_SECONDS (default 30) from the seed corpus with a
# fixed seed (the same mutations on every run, so a red run is a new input, not luck); a crash,
# an out-of-memory or a timeout fails the run (libFuzzer exits non-zero) and leaves its input in
# fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")"
for t in onnx_import onnx_interp npy artifact; do
  echo "fuzz $t: ${FUZZ_SECONDS:-30} s"
  bash run.sh "$t" "${FUZZ_SECONDS:-30}" -seed=1 2>&1 | grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|ERROR|panicked|SUMMARY" || true
  [ -z "$(ls artifacts/$t 2>/dev/null)" ] || { echo "fuzz $t: crash in fuzz/artifacts/$t"; exit 1; }
done
