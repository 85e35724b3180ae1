#!/bin/bash
# The zoo timing table at one batch size in one device call (zoo_table.py: parallel compiles,
# then each model timed alone on the card), against torch.compile reduce-overhead and, for
# the models whose max-autotune compile starts within AUTOTUNE_UNTIL seconds, max-autotune
# (the table also in $OUT/table_bN.txt);
# each model's `xforge bench --profile` goes to $OUT/profiles_bN.txt, and the table ends with
# the generated schedules below 60% of their floor.
#   ZOO_BATCH=N [WORKERS=8] [AUTOTUNE_UNTIL=240] bash testsuite/scripts/device_zoo_table.sh [NAME...]
set -e
source testsuite/scripts/device_env.sh
W=/tmp/zoo_table_b${ZOO_BATCH:-1}; mkdir -p $W
python3 testsuite/scripts/zoo_table.py $X $W --workers ${WORKERS:-8} --autotune-until ${AUTOTUNE_UNTIL:-240} \
  --budget ${BUDGET:-480} --profiles ${OUT:-$W}/profiles_b${ZOO_BATCH:-1}.txt "$@" 2>$W/stderr | tee ${OUT:-$W}/table_b${ZOO_BATCH:-1}.txt || true
grep "^worker" $W/stderr | head -3 || true
grep -i "error\|Traceback" $W/stderr | grep -iv "warn" | sort | uniq -c | sort -rn | head -8 || true
