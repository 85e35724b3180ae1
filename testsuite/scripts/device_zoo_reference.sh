# The zoo's wrappers on the GPU against the reference pipelines (issue 17, proof point 1):
# PIL + torchvision transforms + the PyTorch model + torchvision's post-processing / NMS (and
# ultralytics' NMS logic for a YOLOv8n-shaped model, transformers' BertModel for the embedder),
# two models per task, on synthetic JPEGs; `xforge zoo … --device gpu` compiles each task graph
# (pre-processing + model + post-processing, one graph) for the card's target (sm_90 on H100/H200)
# at fp32 and fp16 and runs it; one table row per model and precision with PASS/FAIL.
# Run from the repository root on the GPU machine with the carried release xforge
# (.device-carry/xforge.xz or bins.tar.xz, see device_env.sh). Work folder: /tmp/zoo_ref.
# ZOO_DRY=1 checks the script on a machine without a GPU: X from the environment (default
# target/release/xforge), small images and model inputs, the interpreter in place of the GPU.
# ONLY=name,name limits the models (names in zoo_reference.py's MODELS); JOBS (default 8) xforge
# processes at once, each stopped after ZOO_TIMEOUT seconds (default 170).
set -e
D=/tmp/zoo_ref; rm -rf $D
ARGS=""; [ -n "$ONLY" ] && ARGS="--only $ONLY"
if [ -n "$ZOO_DRY" ]; then
  X=${X:-target/release/xforge}
  exec python3 testsuite/scripts/zoo_reference.py all "$X" $D interp --dry $ARGS
fi
. testsuite/scripts/device_env.sh
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python3 -c "import transformers; print('transformers', transformers.__version__)" || echo "no transformers: plain-torch BERT"
JOBS=${JOBS:-8} python3 testsuite/scripts/zoo_reference.py all $X $D gpu:fp32 gpu:fp16 $ARGS
