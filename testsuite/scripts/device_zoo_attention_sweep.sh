#!/bin/bash
# Tensor-core attention tiles on zoo models (fp16, batch ZOO_BATCH): each model exported once,
# compiled for every XFORGE_ATTN_MMA_ROWS × XFORGE_ATTN_MMA_KEYS in ROWS × KEYS (in parallel),
# then each artifact timed alone; the last line per model is its torch.compile row (zoo_check.py time).
# With BASELINE=1 each model is also compiled with no XFORGE_ATTN_* variable (the defaults) and
# timed in the same call ("default").
#   ZOO_BATCH=32 [ROWS="32 64"] [KEYS="32 64"] bash testsuite/scripts/device_zoo_attention_sweep.sh NAME...
set -e
source testsuite/scripts/device_env.sh
S=testsuite/scripts
W=/tmp/zoo_attn_b${ZOO_BATCH:-1}; mkdir -p $W
for n in "$@"; do
  [ -f $W/$n.onnx ] || python3 -c "import sys;sys.path.insert(0,'$S');import zoo_models;zoo_models.export('$n','$W')" > $W/$n.export.log 2>&1 &
done
wait
for n in "$@"; do
  for r in ${ROWS:-32 64}; do
    for k in ${KEYS:-32 64}; do
      XFORGE_ATTN_MMA_ROWS=$r XFORGE_ATTN_MMA_KEYS=$k $X compile $W/$n.onnx --precision fp16 -o $W/$n.$r.$k.xfa > $W/$n.$r.$k.log 2>&1 &
    done
  done
  [ -n "$BASELINE" ] && env -u XFORGE_ATTN_PIPELINE -u XFORGE_ATTN_MMA_ROWS -u XFORGE_ATTN_MMA_KEYS $X compile $W/$n.onnx --precision fp16 -o $W/$n.default.xfa > $W/$n.default.log 2>&1 &
done
wait
for n in "$@"; do
  for r in ${ROWS:-32 64}; do
    for k in ${KEYS:-32 64}; do
      echo "$n rows $r keys $k: $($X bench $W/$n.$r.$k.xfa --runs 200 --warmup 20 2>&1 | grep -o 'median [0-9.]* ms')"
    done
  done
  [ -f $W/$n.default.xfa ] && echo "$n default: $($X bench $W/$n.default.xfa --runs 200 --warmup 20 2>&1 | grep -o 'median [0-9.]* ms')"
done
if [ -n "$PROFILE" ]; then
  for n in "$@"; do $X bench $W/$n.32.32.xfa --runs 50 --profile 2>&1 | head -12; done
fi
