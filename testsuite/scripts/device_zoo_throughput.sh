# The zoo's throughput end to end against the PyTorch pipeline (issue 17, proof point 2), in one
# call: resnet50, ssdlite320_mobilenet_v3_large and retinanet_resnet50_fpn as zoo_reference.py
# builds them (exported with a symbolic batch), JPEG bytes in and results on the host, batch 1 and
# 32, fp32 and fp16: `xforge zoo … --bench S --batch N --device gpu` against PyTorch (PIL +
# torchvision transforms + model + torchvision post-processing; and torchvision.io.decode_jpeg on
# the GPU), one after another on the same card; one markdown table, with what pre- and
# post-processing add to the model's GPU time. The work is testsuite/scripts/zoo_throughput.py.
# Run from the repository root on the GPU machine with the carried release xforge
# (.device-carry/xforge.xz or bins.tar.xz, see device_env.sh). Work folder: /tmp/zoo_tp.
# ZOO_DRY=1 checks the script on a machine without a GPU: X from the environment (default
# target/release/xforge), small images and models, the interpreter and torch's CPU, batch 1 and 2.
# ONLY=name,name limits the models; SECONDS_EACH (default 3) per measurement; BATCHES (default 1,32);
# PRECISIONS (default fp32,fp16).
set -e
D=/tmp/zoo_tp; rm -rf $D
ARGS=""; [ -n "$ONLY" ] && ARGS="--only $ONLY"
[ -n "$SECONDS_EACH" ] && ARGS="$ARGS --seconds $SECONDS_EACH"
[ -n "$BATCHES" ] && ARGS="$ARGS --batches $BATCHES"
[ -n "$PRECISIONS" ] && ARGS="$ARGS --precisions $PRECISIONS"
if [ -n "$ZOO_DRY" ]; then
  X=${X:-target/release/xforge}
  exec python3 testsuite/scripts/zoo_throughput.py "$X" $D --dry $ARGS
fi
. testsuite/scripts/device_env.sh
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
nproc
python3 testsuite/scripts/zoo_throughput.py $X $D $ARGS
