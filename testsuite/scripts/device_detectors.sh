#!/bin/bash
# The detectors on the GPU machine, in one call: the NonMaxSuppression kernel cases carried in
# .device-carry/cases.tar.xz (gpu_check), the three zoo detectors checked against PyTorch (fp32, fp16),
# their `xforge bench --profile` at batch 1 ($OUT/profile_NAME_b1.txt), and their times against
# PyTorch eager (torch.compile cannot trace their data-dependent shapes).
#   bash testsuite/scripts/device_detectors.sh
source testsuite/scripts/device_env.sh
D="ssdlite320_mobilenet_v3_large retinanet_resnet50_fpn fasterrcnn_mobilenet_v3_large_320_fpn"
mkdir -p /tmp/cases && python3 -c "import lzma,tarfile;tarfile.open(fileobj=lzma.open('.device-carry/cases.tar.xz')).extractall('/tmp/cases')" && timeout 60 /tmp/gpu_check /tmp/cases/* 2>&1 | grep -v "^ok "
SHARDS=3 timeout 300 bash testsuite/scripts/device_zoo_check.sh $D 2>&1 | tail -8
mkdir -p /tmp/zoo_b1 && cp /tmp/zoo_check/*.onnx /tmp/zoo_b1/ 2>/dev/null
OUT=${OUT:-/tmp} timeout 120 bash testsuite/scripts/device_profile.sh $D
for n in $D; do echo "== $n"; head -45 ${OUT:-/tmp}/profile_${n}_b1.txt; done
for n in $D; do
  echo "$n eager ms: $(timeout 60 python3 -c "
import sys;sys.path.insert(0,'testsuite/scripts');import zoo_check as z;print('%.3f'%z.torch_ms('$n',False))" 2>/dev/null | tail -1)"
  /tmp/xforge bench /tmp/zoo_b1/$n.fp16.xfa --runs 50 --warmup 5 2>&1 | grep median
done
