# xtorch on the GPU (issue 18): ResNet-18 (CIFAR stem) trained on CIFAR-shaped data, batch 256,
# fp32 and bf16 autocast, by xtorch's Trainer (xtorch/examples/cifar_resnet.rs) and by PyTorch
# in Python with the same network, optimizer and loader settings
# (testsuite/scripts/xtorch_cifar_torch.py: as it comes, and --tuned with xtorch's two settings),
# one after the other on the same card; nvidia-smi samples GPU utilization every 100 ms and each
# run's timed epochs are read against it (GPU busy). Then the xtorch-trained network, exported
# to ONNX, is compiled by xforge for the card and run against libtorch's eval logits.
# Carry .device-carry/bins.tar.xz holding xforge and cifar_resnet (both stripped).
set -e
. testsuite/scripts/device_env.sh
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")/lib
export LD_LIBRARY_PATH=$TL:$LD_LIBRARY_PATH
EPOCHS=${EPOCHS:-4}
IMAGES=${IMAGES:-25600}
R=/tmp/xtorch_runs; rm -rf $R; mkdir -p $R
nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 100 > $R/util.csv &
SAMPLER=$!
for p in ${PRECISIONS:-fp32 bf16}; do
  /tmp/cifar_resnet --precision $p --epochs $EPOCHS --images $IMAGES --out $R/xt_$p 2>&1 | tee $R/xtorch_$p.log
  python3 testsuite/scripts/xtorch_cifar_torch.py --precision $p --epochs $EPOCHS --images $IMAGES 2>&1 | tee $R/torch_$p.log
  python3 testsuite/scripts/xtorch_cifar_torch.py --precision $p --epochs $EPOCHS --images $IMAGES --tuned 2>&1 | tee $R/torch_tuned_$p.log
done
kill $SAMPLER
python3 - $R <<'PY'
import datetime, glob, json, sys
r = sys.argv[1]
util = []
for line in open(f"{r}/util.csv"):
    try:
        ts, u = [s.strip() for s in line.split(",")]
        util.append((datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").timestamp(), float(u)))
    except ValueError:
        pass
rows = {}
for log in sorted(glob.glob(f"{r}/*.log")):
    for line in open(log):
        if line.startswith("RESULT "):
            d = json.loads(line[7:])
            a, b = d["window"]
            busy = [u for t, u in util if a <= t <= b]
            d["busy"] = sum(busy) / len(busy) if busy else float("nan")
            rows[(d["framework"], d["precision"])] = d
print("| precision | framework | images/s | GPU busy (nvidia-smi, timed epochs) | loss first → last epoch | xtorch / this |")
print("| --- | --- | --- | --- | --- | --- |")
for p in ["fp32", "bf16"]:
    x = rows.get(("xtorch", p))
    for f in ["xtorch", "torch", "torch-tuned"]:
        d = rows.get((f, p))
        if d is None:
            continue
        ratio = f"{x['images_per_s'] / d['images_per_s']:.2f}" if x else "-"
        print(f"| {p} | {f} | {d['images_per_s']:.0f} | {d['busy']:.1f}% | {d['loss_first']} → {d['loss_last']} | {ratio} |")
PY
# the trained network (fp32 run) through xforge against libtorch's eval output
for p in ${PRECISIONS:-fp32 bf16}; do
  $X compile $R/xt_$p/resnet18.onnx --target sm_90 -o $R/xt_$p.xfa
  $X run $R/xt_$p.xfa --input x=$R/xt_$p/x.npy --output-dir $R/out_$p > /dev/null
  python3 - $R/out_$p $R/xt_$p/logits.npy <<'PY'
import glob, sys
import numpy as np
got = np.load(glob.glob(sys.argv[1] + "/*.npy")[0]).astype(np.float64)
want = np.load(sys.argv[2]).astype(np.float64)
rel = np.linalg.norm(got - want) / np.linalg.norm(want)
same = (got.argmax(1) == want.argmax(1)).mean()
print(f"xforge (sm_90, fp32) vs libtorch eval on 64 images: relative L2 {rel:.2e}, max abs {np.abs(got - want).max():.2e}, argmax agree {same * 100:.1f}%")
sys.exit(0 if rel < 1e-4 and same == 1.0 else 1)
PY
done
