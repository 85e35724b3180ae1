#!/bin/bash
# Coverage-guided fuzzing with libFuzzer on the stable toolchain: no cargo-fuzz (its sanitizer
# flags need nightly) and no cargo-afl here, but libfuzzer-sys builds libFuzzer itself and rustc
# stable takes LLVM's SanitizerCoverage pass through -C passes / -C llvm-args, which is all
# libFuzzer needs for coverage feedback (no AddressSanitizer: safe Rust; debug assertions and
# overflow checks are on instead).
#   bash fuzz/run.sh TARGET SECONDS [LIBFUZZER_ARGS...]   (targets: onnx_import onnx_interp fusion_diff npy artifact)
# The corpus grows in fuzz/corpus/TARGET (CORPUS_ROOT/TARGET if set; seeded by fuzz/seed.sh); crashes land in
# fuzz/artifacts/TARGET, each one a regression test to write.
set -euo pipefail
cd "$(dirname "$0")"
T=${1:?target}; S=${2:?seconds}; shift 2
export RUSTFLAGS="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=3 \
 -C llvm-args=-sanitizer-coverage-inline-8bit-counters -C llvm-args=-sanitizer-coverage-pc-table \
 -C llvm-args=-sanitizer-coverage-trace-compares -C debug-assertions -C overflow-checks --cfg fuzzing"
# an explicit --target keeps the instrumentation away from build scripts and proc macros
cargo build --release --quiet --bin "$T" --target-dir target --target x86_64-unknown-linux-gnu
R=${CORPUS_ROOT:-corpus}
mkdir -p $R/$T artifacts/$T
[ -n "$(ls $R/$T)" ] || bash seed.sh
./target/x86_64-unknown-linux-gnu/release/$T $R/$T -artifact_prefix=artifacts/$T/ -max_total_time=$S -rss_limit_mb=2048 \
  -timeout=10 -max_len=1048576 -print_final_stats=1 "$@"
