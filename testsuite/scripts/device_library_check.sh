# Whole models through cuBLASLt/cuDNN and the generated kernels, against PyTorch (fp32 1e-3,
# fp16 1e-2, bf16 3e-2 relative L2), then their latency. One device call. MODELS, PRECISIONS
# (default fp32 fp16) and BATCH from the environment.
# Carry: .device-carry/xforge.xz (release build) and .device-carry/bench (export_models.py).
set -e
. testsuite/scripts/device_env.sh
MODELS=${MODELS:-"mobilenet_v2 resnet50 bert_base vit_b_16"}
python3 testsuite/scripts/torch_reference.py .device-carry/bench /tmp/r $MODELS 2>&1 | grep -v Warn
fail=0
for m in $MODELS; do
  for p in ${PRECISIONS:-fp32 fp16}; do
    bound=1e-3; [ $p = fp16 ] && bound=1e-2; [ $p = bf16 ] && bound=3e-2
    echo "== $m $p"
    /usr/bin/time -f "compile %e s" $X compile /tmp/r/$m.onnx --precision $p -o /tmp/r/$m.$p.xfa || { fail=1; continue; }
    $X run /tmp/r/$m.$p.xfa --input input=/tmp/r/$m.input.npy --output-dir /tmp/r/$m.$p.out || { fail=1; continue; }
    python3 testsuite/scripts/compare_npy.py /tmp/r/$m.$p.out /tmp/r/$m.ref $bound || fail=1
    $X bench /tmp/r/$m.$p.xfa --runs 100 $([ $p != fp32 ] && echo --steps) || fail=1
    $X bench /tmp/r/$m.$p.xfa --runs 20 --warmup 2 --sessions 4 | tail -1 || fail=1
  done
done
exit $fail
