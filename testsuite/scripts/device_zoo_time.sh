#!/bin/bash
# The zoo timing table on the GPU machine, in one call: Inductor's cache warmed and every model
# exported and compiled (fp16) in parallel, then timed one after another on the quiet card.
#   [ZOO_BATCH=N] bash testsuite/scripts/device_zoo_time.sh NAME...   (batch 1 unless ZOO_BATCH)
set -e
source testsuite/scripts/device_env.sh
W=/tmp/zoo_b${ZOO_BATCH:-1}; mkdir -p $W
S=testsuite/scripts
for n in "$@"; do
  python3 $S/zoo_check.py $X $W warm $n > $W/$n.warm.log 2>&1 &
  ( python3 -c "import sys;sys.path.insert(0,'$S');import zoo_models;zoo_models.export('$n','$W')" \
      && $X compile $W/$n.onnx --precision fp16 -o $W/$n.fp16.xfa ) > $W/$n.compile.log 2>&1 &
done
wait
grep -h "failed\|rror" $W/*.log | head -20 || true
python3 $S/zoo_check.py $X $W time "$@"
