# The fp16 benchmark of the runtime issue, one device call: export each model at each batch,
# compile it with --precision fp16, time it with `xforge bench`, time PyTorch eager and
# torch.compile(mode="reduce-overhead") in fp16 on the same card, print the table.
# Carry: .device-carry/xforge.xz (release build) and .device-carry/bench (export_models.py).
#   MODELS="resnet50 mobilenet_v2 vit_b_16 bert_base" BATCHES="1 32" bash testsuite/scripts/device_benchmark.sh
set -e
. testsuite/scripts/device_env.sh
MODELS=${MODELS:-"resnet50 mobilenet_v2 vit_b_16 bert_base"}
BATCHES=${BATCHES:-"1 32"}
LOG=/tmp/bench.log
: > $LOG
for b in $BATCHES; do
  d=/tmp/bench/b$b
  mkdir -p $d
  for m in $MODELS; do
    BATCH=$b python3 .device-carry/bench/export_models.py $d $m 2>/dev/null | cut -f1
    f=$(ls $d/$m*.onnx | head -1)
    /usr/bin/time -f "$m b$b compile %e s" $X compile $f --precision fp16 -o $d/$m.xfa | tee -a $LOG
    $X bench $d/$m.xfa --runs 200 | tee -a $LOG
  done
  BATCH=$b python3 testsuite/scripts/torch_models.py .device-carry/bench $(for m in $MODELS; do echo $m:fp16; done) 2>&1 \
    | grep -v Warn | tee -a $LOG
done
python3 testsuite/scripts/bench_table.py $LOG
