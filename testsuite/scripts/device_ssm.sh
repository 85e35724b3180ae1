# The selective scan on the GPU machine, one device call: builds mamba_ssm from
# ../shared/bench (DEVICE.md's recipe, sm_90 only), exports the cases of ssm_check.py, compiles
# and runs them with xforge, checks them with mamba_ssm's tolerances, then times xforge
# (`xforge bench`) and mamba_ssm's selective_scan_fn on the benchmark shapes.
# Carry: .device-carry/xforge.xz (release build) and .device-carry/bench (with the mamba_ssm tarball).
set -e
. testsuite/scripts/device_env.sh
ROOT=$PWD
rm -rf /tmp/mamba && mkdir -p /tmp/mamba && tar xzf .device-carry/bench/mamba_ssm-2.3.2.post1.tar.gz -C /tmp/mamba
cd /tmp/mamba/mamba_ssm-*
python3 - <<'PY'
import re
s = open("setup.py").read()
# every -gencode pair becomes `pass` (the blocks stay valid); the list starts with sm_90's
s = re.sub(r'cc_flag\.append\("-gencode"\)(\s*\n\s*)cc_flag\.append\("arch=compute_\d+a?,code=sm_\d+a?"\)', r'pass', s)
s = s.replace('cc_flag = []', 'cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]', 1)
open("setup.py", "w").write(s)
PY
MAMBA_FORCE_BUILD=TRUE MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps . > /tmp/mamba_build.log 2>&1 \
  || { tail -20 /tmp/mamba_build.log; exit 1; }
cd "$ROOT"
python3 testsuite/scripts/ssm_check.py export /tmp/ssm 2>&1 | grep -v Warn
for d in /tmp/ssm/*/; do
  p=fp32; case $d in *bf16*) p=bf16;; esac
  $X compile $d/model.onnx --precision $p -o $d/model.xfa > /dev/null
  if grep -q '"bench": true' $d/case.json; then
    $X bench $d/model.xfa --runs 100
  else
    ins=""; for k in u delta B C z; do [ -f $d/$k.npy ] && ins="$ins --input $k=$d/$k.npy"; done
    $X run $d/model.xfa $ins --output-dir $d/got > /dev/null
  fi
done
python3 testsuite/scripts/ssm_check.py compare /tmp/ssm
cd testsuite/scripts && python3 ssm_check.py time /tmp/ssm
