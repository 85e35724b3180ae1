# Builds and installs mamba_ssm from the carried PyPI source (../shared/DEVICE.md's recipe, sm_90
# only), unless it is importable already. CPU only: a device call can run it in the background
# while the GPU does other work. Carry: .device-carry/bench (mamba_ssm-*.tar.gz).
set -e
python3 -c "import mamba_ssm" 2>/dev/null && exit 0
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
