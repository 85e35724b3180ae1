# Where a model's GPU time goes, kernel by kernel (cuDNN's and cuBLASLt's included), in one device
# call: exports MODEL at BATCH, compiles it (PRECISION, default fp16), loads it once so the
# convolution choices are kept (no timing launches under the profiler), then profiles one replay
# of the plan under ncu (`gpu__time_duration.sum` of each kernel) and prints the kernels by total
# time. Carry: .device-carry/xforge.xz and .device-carry/bench (export_models.py).
#   MODEL=mobilenet_v2 BATCH=32 bash testsuite/scripts/device_kernel_profile.sh
# ZOO=1 exports MODEL from testsuite/scripts/zoo_models.py instead (batch 1).
set -e
. testsuite/scripts/device_env.sh
MODEL=${MODEL:-mobilenet_v2}; B=${BATCH:-32}; P=${PRECISION:-fp16}
mkdir -p /tmp/prof
if [ -n "${ZOO:-}" ]; then
  python3 testsuite/scripts/zoo_models.py /tmp/prof $MODEL > /dev/null 2>&1
else
  BATCH=$B python3 .device-carry/bench/export_models.py /tmp/prof $MODEL > /dev/null 2>&1
fi
f=$(ls /tmp/prof/$MODEL*.onnx | head -1)
$X compile $f --precision $P -o /tmp/prof/m.xfa | tail -1
$X bench /tmp/prof/m.xfa --runs 20 | tail -1
ncu --csv --metrics gpu__time_duration.sum $X bench /tmp/prof/m.xfa --runs 1 --warmup 0 2>/dev/null > /tmp/prof/ncu.csv || true
python3 - <<'PY'
import csv, collections
rows = [r for r in csv.reader(open("/tmp/prof/ncu.csv")) if len(r) > 5 and r[-3] == "gpu__time_duration.sum"]
head = next(r for r in csv.reader(open("/tmp/prof/ncu.csv")) if "Kernel Name" in r)
k = head.index("Kernel Name")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
# the last replay's kernels: everything after the load's launches is one run of the plan
tot = collections.defaultdict(lambda: [0, 0.0])
for r in rows:
    us = float(r[-1].replace(",", "")) * scale.get(r[-2], float("nan"))
    t = tot[r[k][:90]]
    t[0] += 1
    t[1] += us
units = sorted({r[-2] for r in rows})
print(f"{len(rows)} kernels ({units}), {sum(t[1] for t in tot.values()):.1f} us in all")
for name, (n, us) in sorted(tot.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{us:9.1f} us  {n:4d}x  {name}")
PY
