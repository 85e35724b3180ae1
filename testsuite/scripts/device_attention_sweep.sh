# Tensor-core attention tiles on vit_b_16 fp16 at batch 1 and 32: for each XFORGE_ATTN_MMA_ROWS ×
# XFORGE_ATTN_MMA_KEYS (ROWS, KEYS from the environment) compile and time the whole model, and
# check the default against PyTorch. Carry: .device-carry/xforge.xz, .device-carry/bench.
set -e
. testsuite/scripts/device_env.sh
mkdir -p /tmp/a
for B in 1 32; do
  BATCH=$B python3 testsuite/scripts/torch_reference.py .device-carry/bench /tmp/a/b$B vit_b_16 2>&1 | grep -v Warn | tail -1
  for r in ${ROWS:-16 32 64 128}; do
    for k in ${KEYS:-32 64 128}; do
      XFORGE_ATTN_MMA_ROWS=$r XFORGE_ATTN_MMA_KEYS=$k $X compile /tmp/a/b$B/vit_b_16.onnx --precision fp16 -o /tmp/a/v.xfa >/dev/null
      XFORGE_ATTN_MMA_ROWS=$r XFORGE_ATTN_MMA_KEYS=$k $X run /tmp/a/v.xfa --input input=/tmp/a/b$B/vit_b_16.input.npy --output-dir /tmp/a/o >/dev/null
      err=$(python3 testsuite/scripts/compare_npy.py /tmp/a/o /tmp/a/b$B/vit_b_16.ref 1e-2 | sed 's/.*relative L2 //')
      echo "batch $B rows $r keys $k: $($X bench /tmp/a/v.xfa --runs 200 | sed 's/.*median \([0-9.]*\) ms.*/\1 ms/') (rel L2 $err)"
    done
  done
done
