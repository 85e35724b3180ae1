#!/bin/bash
# The Python package on the GPU machine, in one call: its pytest suite (the GPU-marked tests run
# there) and the torch.compile backend check (testsuite/scripts/torch_backend_check.py).
# Carry .device-carry/bins.tar.xz holding xforge and the package's stripped _xforge.abi3.so, and
# .device-carry/bench/export_models.py (../shared does not travel).
#   bash testsuite/scripts/device_torch_backend.sh [NAME:BATCH ...]
set -e
source testsuite/scripts/device_env.sh
P=/tmp/pyx
rm -rf $P && mkdir -p $P/xforge $P/xforge-0.1.0.dist-info
cp python/xforge/*.py python/xforge/*.pyi python/xforge/py.typed /tmp/_xforge.abi3.so $P/xforge/
# the package's metadata, so that backend="xforge" resolves through the entry point as installed
printf 'Metadata-Version: 2.1\nName: xforge\nVersion: 0.1.0\n' > $P/xforge-0.1.0.dist-info/METADATA
printf '[torch_dynamo_backends]\nxforge = xforge.torch_backend:xforge_backend\n' > $P/xforge-0.1.0.dist-info/entry_points.txt
# torch loads its own cuDNN (libcudnn.so.9); an unversioned libcudnn.so of another version on the
# path would load beside it in-process (CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH): keep only the wheels
export LD_LIBRARY_PATH=$(ls -d $NV/*/lib | tr "\n" ":")
export PYTHONPATH=$P XFORGE_CACHE_DIR=/tmp/xforge-cache XFORGE_BIN=$X
python3 -c "import torch, xforge; torch.compile(torch.nn.Linear(2,2).cuda(), backend='xforge'); print('xforge', xforge.__version__, 'backend=\"xforge\" resolves')"
# logs go to $OUT as they are written (a call cut off by its time limit still brings them back)
L=${OUT:-/tmp}
(cd /tmp && timeout 150 python3 -m pytest -v -s -p no:cacheprovider -o faulthandler_timeout=40 \
    $OLDPWD/python/tests > $L/pytest.log 2>&1) || true
tail -5 $L/pytest.log
timeout ${CHECK_SECONDS:-400} python3 -u testsuite/scripts/torch_backend_check.py $X .device-carry/bench "$@" > $L/check.log 2>&1 || true
grep -v "Warning\|warn(\|_warn_once" $L/check.log | tail -40
