#!/bin/bash
# `xforge tune` on the GPU: each model compiled (fp16) without and with the measured times of
# its own tuning run, both timed on the same warm card (alternating, twice each).
#   [ZOO_BATCH=N] bash testsuite/scripts/device_tune.sh NAME...
set -e
[ -n "$X" ] || source testsuite/scripts/device_env.sh
W=/tmp/tune_b${ZOO_BATCH:-1}; mkdir -p $W
T=$W/tuning.tsv
ms() { $X bench $1 --runs 200 --warmup 20 | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p'; }
for n in "$@"; do
  [ -f $W/$n.onnx ] || python3 -c "import sys;sys.path.insert(0,'testsuite/scripts');import zoo_models;zoo_models.export('$n','$W')"
  $X compile $W/$n.onnx --precision fp16 --tuning off -o $W/$n.plain.xfa > /dev/null
  s=$(date +%s.%N)
  $X tune $W/$n.onnx --precision fp16 --table $T | tail -3
  echo "$n: tune took $(python3 -c "print(round($(date +%s.%N) - $s, 1))") s"
  $X compile $W/$n.onnx --precision fp16 --tuning $T -o $W/$n.tuned.xfa > /dev/null
  $X inspect $W/$n.tuned.xfa | grep -i "tuning" || true
  echo "$n: plain $(ms $W/$n.plain.xfa) tuned $(ms $W/$n.tuned.xfa) plain $(ms $W/$n.plain.xfa) tuned $(ms $W/$n.tuned.xfa) ms"
  $X compile $W/$n.onnx --precision fp16 --tuning off --emit fused | tail -1
  $X compile $W/$n.onnx --precision fp16 --tuning $T --emit fused | tail -1
done
