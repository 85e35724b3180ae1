set +e
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.device-carry/xforge.xz'),open('/tmp/xforge','wb'))" && chmod +x /tmp/xforge
NV=$(python3 -c "import nvidia,os;print(os.path.dirname(nvidia.__path__[0]+'/x'))")
export LD_LIBRARY_PATH=$(ls -d $NV/*/lib | tr '\n' ':')/usr/local/cuda/lib64:$LD_LIBRARY_PATH
X=/tmp/xforge
M=${M:-"conv conv_relu conv_add_relu conv_relu6 dwconv_relu6 conv_stride2_nobias linear_gelu resnet18 mobilenet_v2"}
python3 testsuite/scripts/torch_reference.py .device-carry/bench /tmp/r $M 2>&1 | grep -v Warn | grep -v "^ "
for m in $M; do for p in fp32 fp16; do
  echo "== $m $p"
  $X compile /tmp/r/$m.onnx --precision $p -o /tmp/r/$m.$p.xfa --target sm_90 | cut -c1-150
  $X run /tmp/r/$m.$p.xfa --input input=/tmp/r/$m.input.npy --output-dir /tmp/r/$m.$p.out > /dev/null
  python3 testsuite/scripts/compare_npy.py /tmp/r/$m.$p.out /tmp/r/$m.ref 1 || true
  if [ $m = resnet18 -o $m = mobilenet_v2 ]; then XFORGE_CUDNN_ALGO=precomp $X run /tmp/r/$m.$p.xfa --input input=/tmp/r/$m.input.npy --output-dir /tmp/r/$m.$p.out2 >/dev/null; python3 testsuite/scripts/compare_npy.py /tmp/r/$m.$p.out2 /tmp/r/$m.ref 1 || true; fi
done; done
$X compile /tmp/r/conv_relu.onnx --emit fused --target sm_90
$X compile /tmp/r/conv_relu.onnx --emit fused --precision fp16 --target sm_90 || true
XFORGE_LOG=debug $X run /tmp/r/resnet18.fp32.xfa --input input=/tmp/r/resnet18.input.npy --output-dir /tmp/r/x 2>&1 | grep -o "algo.*\|CUDNN_CONV.*" | sort | uniq -c
