# Each cuDNN/cuBLASLt epilogue on its own (small PyTorch modules from torch_reference.py), then
# resnet18 and mobilenet_v2, in fp32 (1e-5) and fp16 (2e-3) against PyTorch's fp32 output; each
# artifact also runs with XFORGE_CUDNN_ALGO=precomp (only the fused implicit-GEMM way), so both
# ways cuDNN steps may run are checked. One device call; exits 1 on any miss.
# Carry: .device-carry/xforge.xz (release build) and .device-carry/bench (export_models.py).
set +e
. testsuite/scripts/device_env.sh
M=${M:-"conv conv_relu conv_add_relu conv_relu6 dwconv_relu6 conv_stride2_nobias maxpool stem basic_block basic_down linear_gelu resnet18 mobilenet_v2"}
python3 testsuite/scripts/torch_reference.py .device-carry/bench /tmp/r $M 2>&1 | grep -v "Warn\|^ "
fail=0
for m in $M; do for p in fp32 fp16; do
  bound=1e-5; [ $p = fp16 ] && bound=2e-3
  echo "== $m $p"
  $X compile /tmp/r/$m.onnx --precision $p -o /tmp/r/$m.$p.xfa --target sm_90 > /dev/null || { fail=1; continue; }
  for way in timed precomp; do
    XFORGE_CUDNN_ALGO=$way $X run /tmp/r/$m.$p.xfa --input input=/tmp/r/$m.input.npy --output-dir /tmp/r/$m.$p.$way > /dev/null \
      && python3 testsuite/scripts/compare_npy.py /tmp/r/$m.$p.$way /tmp/r/$m.ref $bound || fail=1
  done
done; done
exit $fail
