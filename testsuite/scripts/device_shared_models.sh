# The ONNX files of ../shared/models (shipped in models/) on the GPU machine: xforge in fp32,
# fp16 and bf16 against onnxruntime (CPU, fp32) on the same random inputs (fp32 1e-3, fp16 1e-2,
# bf16 3e-2 relative L2, as for the PyTorch exports). One device call.
# Carry: .device-carry/xforge.xz (release build).
set -e
. testsuite/scripts/device_env.sh
mkdir -p /tmp/sm
python3 - <<'PY'
import numpy as np
r = np.random.default_rng(11)
np.save("/tmp/sm/mnasnet0_5.npy", r.standard_normal((1, 3, 224, 224)).astype(np.float32))
np.save("/tmp/sm/bert_tiny.npy", r.integers(0, 4000, (1, 32)).astype(np.int64))
PY
fail=0
for m in mnasnet0_5 bert_tiny; do
  python3 testsuite/scripts/ort_run.py models/$m.onnx /tmp/sm/$m.ort input=/tmp/sm/$m.npy
  for p in fp32 fp16 bf16; do
    bound=1e-3; [ $p = fp16 ] && bound=1e-2; [ $p = bf16 ] && bound=3e-2
    echo "== $m $p"
    $X compile models/$m.onnx --precision $p -o /tmp/sm/$m.$p.xfa > /dev/null || { fail=1; continue; }
    $X run /tmp/sm/$m.$p.xfa --input input=/tmp/sm/$m.npy --output-dir /tmp/sm/$m.$p.out > /dev/null || { fail=1; continue; }
    python3 testsuite/scripts/compare_npy.py /tmp/sm/$m.$p.out /tmp/sm/$m.ort $bound || fail=1
  done
done
exit $fail
