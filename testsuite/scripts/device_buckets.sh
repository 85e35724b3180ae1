# Batch-size buckets on the GPU. The small models in models/batch first: the classifier compiled
# with --batch 1,4,8 against the interpreter at batches 1..8 (3, 5, 6, 7 padded), and the model
# whose rows mix refusing a batch between its buckets. Then models exported with a dynamic
# batch, compiled once with --batch $BUCKETS, run at each of $BATCHES (those between buckets
# padded) against PyTorch at that batch (fp32 1e-3, fp16 1e-2 relative L2), timed per bucket and
# at batch 20, with 4 concurrent sessions, and next to a static compile of the largest batch.
# Last, the C example at a padded batch. MODELS, PRECISIONS, BUCKETS, BATCHES from the environment.
# Carry: .device-carry/xforge.xz, .device-carry/libxforge_runtime.so, .device-carry/bench.
set -e
. testsuite/scripts/device_env.sh
MODELS=${MODELS:-"mobilenet_v2 resnet50 vit_b_16 bert_base"}
BUCKETS=${BUCKETS:-1,8,32}
BATCHES=${BATCHES:-"1 5 8 20 32"}
max=$(echo $BATCHES | tr ' ' '\n' | sort -n | tail -1)
fail=0
mkdir -p /tmp/d
$X compile models/batch/classifier.onnx --batch 1,4,8 -o /tmp/d/classifier.xfa
for n in 1 2 3 4 5 6 7 8; do
  $X run models/batch/classifier.onnx --shape batch=$n --input x=random:$n --output-dir /tmp/d/ci$n >/dev/null
  $X run /tmp/d/classifier.xfa --shape batch=$n --input x=random:$n --output-dir /tmp/d/cg$n >/dev/null || fail=1
  echo -n "classifier batch $n: "; python3 testsuite/scripts/compare_npy.py /tmp/d/cg$n /tmp/d/ci$n 1e-5 || fail=1
done
$X compile models/batch/rows_mixed.onnx --batch 2,4 -o /tmp/d/mixed.xfa
$X run /tmp/d/mixed.xfa --shape batch=4 --input x=random:4 --output-dir /tmp/d/mg4 >/dev/null || fail=1
$X run models/batch/rows_mixed.onnx --shape batch=4 --input x=random:4 --output-dir /tmp/d/mi4 >/dev/null
echo -n "rows_mixed batch 4: "; python3 testsuite/scripts/compare_npy.py /tmp/d/mg4 /tmp/d/mi4 1e-5 || fail=1
if $X run /tmp/d/mixed.xfa --shape batch=3 --input x=random:3 --output-dir /tmp/d/mg3; then
  echo "rows_mixed batch 3 ran padded: wrong"; fail=1
fi
BATCH=$max BATCHES="$BATCHES" python3 testsuite/scripts/torch_reference.py .device-carry/bench /tmp/d $MODELS 2>&1 | grep -v Warn
for m in $MODELS; do
  for p in ${PRECISIONS:-fp32 fp16}; do
    bound=1e-3; [ $p = fp16 ] && bound=1e-2
    echo "== $m $p, buckets $BUCKETS"
    /usr/bin/time -f "compile %e s" $X compile /tmp/d/$m.onnx --batch $BUCKETS --precision $p -o /tmp/d/$m.$p.xfa || { fail=1; continue; }
    $X inspect /tmp/d/$m.$p.xfa | grep -E "^batch|^plan"
    for n in $BATCHES; do
      $X run /tmp/d/$m.$p.xfa --input input=/tmp/d/$m.input.b$n.npy --output-dir /tmp/d/$m.$p.b$n >/dev/null || { fail=1; continue; }
      echo -n "batch $n: "; python3 testsuite/scripts/compare_npy.py /tmp/d/$m.$p.b$n /tmp/d/$m.ref.b$n $bound || fail=1
    done
    $X bench /tmp/d/$m.$p.xfa --runs 100 || fail=1
    $X bench /tmp/d/$m.$p.xfa --runs 100 --batch 20 || fail=1
    $X bench /tmp/d/$m.$p.xfa --runs 10 --warmup 2 --sessions 4 | tail -1 || fail=1
    $X compile /tmp/d/$m.onnx --shape batch=$max --precision $p -o /tmp/d/$m.$p.static.xfa >/dev/null || fail=1
    echo -n "static: "; $X bench /tmp/d/$m.$p.static.xfa --runs 100 || fail=1
  done
done
if command -v cc >/dev/null; then
  cc examples/c/run.c -I runtime/include -L .device-carry -lxforge_runtime -o /tmp/d/run_c
  LD_LIBRARY_PATH=.device-carry:$LD_LIBRARY_PATH /tmp/d/run_c /tmp/d/classifier.xfa 5 || fail=1
else
  echo "no C compiler on this machine: the C example did not run"
fi
echo "exit $fail"
exit $fail
