# The selective scan's unfused ONNX form (models/selective_scan/unfused_*: softplus, exp, products,
# an ONNX Scan, the contraction with C, D·u, z·sigmoid(z)) on the GPU: compiled (the e-graph
# rules make it one SelectiveScan kernel), run, and compared with PyTorch's output in fp32, fp16
# and bf16. Sourced by device_ssm.sh; alone: carry .device-carry/xforge.xz.
set -e
[ -n "$X" ] || . testsuite/scripts/device_env.sh
for m in unfused_full unfused_bare; do
  d=models/selective_scan/$m
  for p in fp32 fp16 bf16; do
    bound=1e-3; [ $p = fp16 ] && bound=1e-2; [ $p = bf16 ] && bound=3e-2
    echo "== $m $p: $($X compile $d/model.onnx --precision $p -o /tmp/$m.$p.xfa | tail -1)"
    ins=""; for k in u delta B C z; do [ -f $d/$k.npy ] && ins="$ins --input $k=$d/$k.npy"; done
    $X run /tmp/$m.$p.xfa $ins --output-dir /tmp/$m.$p > /dev/null
    python3 testsuite/scripts/compare_npy.py /tmp/$m.$p $d/ref $bound
  done
done
