# The selective scan at batch 1 (chunked: 1536 channels without the stash, 768 with it) per knob
# variant, in one device call: its median time (`xforge bench`) and its device-memory (DRAM) and
# L2 traffic under ncu, to check that u, delta and z come from device memory once.
# VARIANTS="A=1 VAR=N,VAR=N …" from the environment (A=1: the defaults;
# XFORGE_SSM_WORKGROUP_BYTES=1: no stash).
# Carry: .device-carry/xforge.xz.
set -e
. testsuite/scripts/device_env.sh
python3 testsuite/scripts/ssm_check.py export /tmp/ssm 2>&1 | grep -v Warn > /dev/null
for c in b1_d{1536,768}_l2048_n16_g1_full_{f32,bf16}; do
  p=fp32; case $c in *bf16) p=bf16;; esac
  for cfg in ${VARIANTS:-A=1 XFORGE_SSM_WORKGROUP_BYTES=1}; do
    env $(echo $cfg | tr , ' ') $X compile /tmp/ssm/$c/model.onnx --precision $p -o /tmp/v.xfa > /dev/null
    t=$($X bench /tmp/v.xfa --runs 200 | sed 's/.*median \([0-9.]*\) ms.*/\1/')
    # one launch of the scan kernel (xforge's kernels are named k_<digest>)
    m=$(ncu --csv --kernel-name regex:^k_ -c 1 --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum \
          $X bench /tmp/v.xfa --runs 1 --warmup 0 2>/dev/null \
        | python3 -c "
import csv,sys
rows=[r for r in csv.reader(sys.stdin) if len(r)>3 and r[-3].startswith(('dram__','lts__'))]
print(', '.join(f'{r[-3]} {r[-1]} {r[-2]}' for r in rows))")
    echo "$c [$cfg]: $t ms; $m"
  done
done
