# Latency of compiled artifacts against PyTorch eager and torch.compile, one device call.
# Carry: .device-carry/xforge.xz (release build) and .device-carry/bench (export_models.py).
set -e
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.device-carry/xforge.xz'),open('/tmp/xforge','wb'))" && chmod +x /tmp/xforge
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
X=/tmp/xforge
python3 .device-carry/bench/export_models.py /tmp/m bert_base > /dev/null 2>&1
$X compile /tmp/m/bert_base.onnx --generated-gemm -o /tmp/bb.xfa
$X bench /tmp/bb.xfa
$X compile models/bert_tiny.onnx --generated-gemm -o /tmp/bt.xfa
$X bench /tmp/bt.xfa
python3 testsuite/scripts/torch_models.py .device-carry/bench bert_base bert_tiny 2>&1 | grep -v Warning
