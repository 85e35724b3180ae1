set -e
. testsuite/scripts/device_env.sh
$X compile models/bert_tiny.onnx --generated-gemm -o /tmp/bt.xfa
$X run /tmp/bt.xfa --input input=random:7 --output-dir /tmp/gpu_bt
$X run models/bert_tiny.onnx --input input=random:7 --output-dir /tmp/cpu_bt > /dev/null
python3 testsuite/scripts/compare_npy.py /tmp/gpu_bt /tmp/cpu_bt 1e-4
python3 .device-carry/bench/export_models.py /tmp/m bert_base > /dev/null 2>&1
ls -la /tmp/m
time $X compile /tmp/m/bert_base.onnx --generated-gemm -o /tmp/bb.xfa
time $X run /tmp/bb.xfa --input input=random:3 --output-dir /tmp/gpu_bb
time $X run /tmp/m/bert_base.onnx --input input=random:3 --output-dir /tmp/cpu_bb > /dev/null
python3 testsuite/scripts/compare_npy.py /tmp/gpu_bb /tmp/cpu_bb 1e-4
