#!/bin/bash
# The zoo correctness table on the GPU machine, in one call: the architectures of zoo_models.py
# dealt round-robin to SHARDS parallel `zoo_check.py check` processes (export, PyTorch fp32/fp16,
# xforge compile + run in fp32 and fp16), their rows printed in the zoo's order at the end
# (with $OUT set, each shard's rows also as $OUT/zoo_checkK.json).
#   [SHARDS=4] bash testsuite/scripts/device_zoo_check.sh [NAME...]   (every architecture if none)
set -e
source testsuite/scripts/device_env.sh
S=testsuite/scripts
W=/tmp/zoo_check; mkdir -p $W
NAMES=${*:-$(python3 -c "import sys;sys.path.insert(0,'$S');import zoo_models;print(' '.join(zoo_models.MODELS))")}
K=${SHARDS:-4}
i=0
for n in $NAMES; do echo $n >> $W/shard$((i % K)); i=$((i + 1)); done
for s in $(seq 0 $((K - 1))); do
  [ -f $W/shard$s ] && ZOO_SHARD=$s python3 $S/zoo_check.py $X $W check $(cat $W/shard$s) > $W/out$s 2> $W/err$s &
done
wait
cat $W/err* | grep -v "^  (" | grep -iv warn | tail -20 || true
head -3 $W/out0 | head -1
echo "| model | xforge fp32 | xforge fp16 | PyTorch fp16 | compile s (fp32/fp16) | result |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in $NAMES; do grep -h "^| $n |" $W/out* || echo "| $n | (no row) |"; done
echo "$(cat $W/out* | grep -c '| ok |') of $(echo $NAMES | wc -w) pass"
