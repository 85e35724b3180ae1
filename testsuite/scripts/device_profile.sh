#!/bin/bash
# `xforge bench --profile` of zoo models on the GPU machine, in one call: each NAME exported at
# ZOO_BATCH (default 1), compiled in fp16 and profiled; the reports go to $OUT/profile_NAME.txt.
#   [ZOO_BATCH=N] bash testsuite/scripts/device_profile.sh NAME...
set -e
source testsuite/scripts/device_env.sh
B=${ZOO_BATCH:-1}
W=/tmp/zoo_b$B; mkdir -p $W
S=testsuite/scripts
L=${OUT:-/tmp}
for n in "$@"; do
  ( [ -f $W/$n.onnx ] || python3 -c "import sys;sys.path.insert(0,'$S');import zoo_models;zoo_models.export('$n','$W')" ) \
    > $W/$n.export.log 2>&1 || { echo "$n: export failed"; tail -2 $W/$n.export.log; continue; }
  $X compile $W/$n.onnx --precision fp16 -o $W/$n.fp16.xfa > /dev/null
  timeout 120 $X bench $W/$n.fp16.xfa --runs 100 --profile > $L/profile_${n}_b$B.txt 2>&1 || true
  head -3 $L/profile_${n}_b$B.txt
done
