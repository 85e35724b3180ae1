#!/bin/bash
# Seed corpora from what the project has: the ONNX node tests (fetched by the test set-up into
# target/onnx-node-tests) and the shipped models' small files for the importer and the interpreter, every .npy of
# the node tests and the shipped models for the .npy reader, and artifacts compiled from small
# node-test models for the artifact reader (with a release xforge in ../target). Files over the
# fuzzers' 1 MiB max_len are left out.
# CORPUS_ROOT (default corpus) says where.
set -euo pipefail
cd "$(dirname "$0")"
R=${CORPUS_ROOT:-corpus}
mkdir -p $R/onnx_import $R/onnx_interp $R/fusion_diff $R/npy $R/artifact
small() { find "$@" -type f -size -1024k 2>/dev/null; }
n=0
for f in $(small ../target/onnx-node-tests -name model.onnx) $(small ../models -name '*.onnx'); do
  cp "$f" $R/onnx_import/seed$n.onnx
  cp "$f" $R/fusion_diff/seed$n.onnx
  cp "$f" $R/onnx_interp/seed$((n++)).onnx
done
n=0
for f in $(small ../target/onnx-node-tests ../models -name '*.npy'); do
  cp "$f" $R/npy/seed$((n++)).npy
done
X=../target/release/xforge
if [ -x $X ]; then
  n=0
  for d in test_add test_relu test_matmul_2d test_softmax_axis_1 test_conv_with_strides_padding test_gather_0 \
           test_reduce_mean_default_axes_keepdims_example test_layer_normalization_2d_axis0; do
    m=../target/onnx-node-tests/$d/model.onnx
    [ -f $m ] && $X compile $m -o $R/artifact/seed$((n++)).xfa >/dev/null 2>&1 || true
  done
  # AMD artifacts: the kernel section holds an ELF code object the reader parses
  for d in test_relu test_softmax_axis_1; do
    m=../target/onnx-node-tests/$d/model.onnx
    [ -f $m ] && $X compile $m --target gfx942 -o $R/artifact/seed$((n++)).xfa >/dev/null 2>&1 || true
  done
fi
echo "seeds: $(ls $R/onnx_import | wc -l) models, $(ls $R/npy | wc -l) npy, $(ls $R/artifact | wc -l) artifacts"
