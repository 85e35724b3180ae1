#!/bin/bash
# On the GPU machine, in one call: every zoo model exported (8 at a time) and brought back without
# its weights ($OUT/zoo_graphs.tar.xz, see zoo_graphs.py: compile time is measured on a 2-core
# machine that has no torch), then `zoo_check.py check` for the models named in CHECK.
#   CHECK="NAME ..." bash testsuite/scripts/device_zoo_graphs.sh
set -e
source testsuite/scripts/device_env.sh
W=/tmp/zoo; mkdir -p $W
S=testsuite/scripts
L=${OUT:-/tmp}
NAMES=$(python3 -c "import sys;sys.path.insert(0,'$S');import zoo_models;print(' '.join(zoo_models.MODELS))")
echo $NAMES | tr ' ' '\n' | xargs -P 8 -I{} sh -c \
  "python3 -c \"import sys;sys.path.insert(0,'$S');import zoo_models;zoo_models.export('{}','$W')\" > $W/{}.export.log 2>&1 || echo '{}: export failed'"
timeout 200 python3 $S/zoo_graphs.py strip $W $L/zoo_graphs.tar.xz $NAMES > $L/strip.log 2>&1 || true
tail -3 $L/strip.log
if [ -n "$CHECK" ]; then
  timeout ${CHECK_SECONDS:-300} python3 -u $S/zoo_check.py $X $W check $CHECK > $L/check.log 2>&1 || true
  cat $L/check.log | tail -12
fi
