#!/bin/bash
# The hub's GPU call (hub issue): on the GPU machine, a server (embedded default) and a build
# worker for this GPU's target on 127.0.0.1; a client pushes a real resnet50 (random weights,
# exported here), pulls it without naming a target — the library's from_hub path: the GPU's own
# target, a build requested and waited for, the signed manifest and sha256 verified — then runs
# the pulled artifact on the GPU and compares it with onnxruntime (CPU) on the same input.
#   bash testsuite/scripts/device_hub.sh        (after device_env.sh has unpacked $X)
# HUB_MODEL=resnet18 picks another export_models.py name.
set -euo pipefail
source testsuite/scripts/device_env.sh
M=${HUB_MODEL:-resnet50}
W=$(mktemp -d /tmp/xforge-hub-gpu.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
export XFORGE_HUB_CONFIG="$W/client/hub.toml" XFORGE_HUB_CACHE="$W/client/cache"
python3 .device-carry/bench/export_models.py $W $M > $W/export.log 2>&1 || { cat $W/export.log; exit 1; }
XFORGE_LOG=info $X hub serve --dir $W/server --listen 127.0.0.1:0 > $W/server.out 2> $W/server.log &
PIDS+=($!)
for _ in $(seq 1 300); do grep -q "listening on" $W/server.out 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^xforge hub: listening on //p' $W/server.out)
ADMIN=$(cat $W/server/admin.token)
$X hub user-add alice --server $URL --token $ADMIN > /dev/null
ALICE=$($X hub token-add alice --scopes read,write --label gpu --server $URL --token $ADMIN)
$X hub user-add farm --server $URL --token $ADMIN > /dev/null
FARM=$($X hub token-add farm --scopes worker --label gpu-worker --server $URL --token $ADMIN)
TARGET=sm_$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
XFORGE_LOG=info $X hub worker --server $URL --token $FARM --target $TARGET --name gpu-worker --poll-ms 200 > $W/worker.log 2>&1 &
PIDS+=($!)
$X hub login --server $URL --token $ALICE
$X hub push alice/$M $W/$M.onnx
t0=$(date +%s.%N)
$X hub pull alice/$M -o $W/$M.xfa --timeout 500   # no --target: this GPU's, built on request
echo "pull (build included) took $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
grep -i "job\|built\|validat" $W/worker.log | tail -4 || true
$X hub pull alice/$M --offline | head -1
python3 -c "import numpy as np;np.save('$W/x.npy',np.random.default_rng(0).standard_normal((1,3,224,224)).astype(np.float32))"
IN=$(python3 -c "import onnx;m=onnx.load('$W/$M.onnx',load_external_data=False);print(m.graph.input[0].name)")
$X run $W/$M.xfa --input $IN=$W/x.npy --output-dir $W/gpu
python3 testsuite/scripts/ort_run.py $W/$M.onnx $W/ort $IN=$W/x.npy
python3 - $W <<'PY'
import sys, os, numpy as np
w = sys.argv[1]
for f in sorted(os.listdir(f"{w}/ort")):
    a, b = np.load(f"{w}/gpu/{f}").astype(np.float64), np.load(f"{w}/ort/{f}").astype(np.float64)
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    top = (a.reshape(a.shape[0], -1).argmax(1) == b.reshape(b.shape[0], -1).argmax(1)).all()
    print(f"{f}: pulled artifact on the GPU vs onnxruntime: rel L2 {rel:.2e}, same top-1: {top}")
    assert rel < 1e-3 and top, "the pulled artifact computes something else"
PY
$X bench $W/$M.xfa --runs 100 --warmup 10 2>&1 | grep -o "median [0-9.]* ms" || true
echo "hub GPU call: ok"
