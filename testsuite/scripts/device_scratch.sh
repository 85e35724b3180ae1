set +e
MODELS="mobilenet_v2 resnet50" bash testsuite/scripts/device_library_check.sh 2>&1 | grep "^==\|relative\|median\|error" | cut -c1-150
BATCH=32 MODELS="mobilenet_v2" bash testsuite/scripts/device_library_check.sh 2>&1 | grep "^==\|relative\|median\|error" | cut -c1-150
bash testsuite/scripts/device_benchmark.sh 2>&1 | grep -v "^ \|Warn\|torch.onnx\|is_causal\|condition\|^/tmp/bench/b[0-9]*/[a-z_0-9]*.onnx$\|^wrote"
