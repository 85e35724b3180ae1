# The zoo's task graphs on the GPU against the interpreter (issue 17): every wrapper on the
# small test models (zoo/tests/models, models/), images written here, results compared as JSON
# (classes and scores, boxes matched one to one, mask pixels, embeddings by cosine), fp32 and
# fp16. Run from the repository root on the GPU machine with the carried release xforge.
# ZOO_DRY=1 checks the script itself on a machine without a GPU: X from the environment, the
# interpreter's results standing in for the GPU's.
set -e
if [ -z "$ZOO_DRY" ]; then . testsuite/scripts/device_env.sh; fi
D=/tmp/zoo_tasks; rm -rf $D; mkdir -p $D
python3 - "$D" <<'PY'
import sys, struct, zlib
import numpy as np
d = sys.argv[1]
def png(path, img):
    def chunk(k, b): return struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
rng = np.random.default_rng(0)
for i, (w, h) in enumerate([(40, 30), (23, 57), (64, 64), (300, 200)]):
    png(f"{d}/img{i}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
PY
Z=zoo/tests/models
printf 'input_size = [16, 16]\nsoftmax = false\n' > $D/cls.toml
printf 'input_size = [32, 32]\nfit = "letterbox"\nscore_threshold = 0.3\n' > $D/yolo.toml
printf 'input_size = [32, 32]\nscore_threshold = 0.4\n[head]\nkind = "anchors"\nanchors = "%s/%s/anchors.npy"\n' "$PWD" "$Z" > $D/ssd.toml
printf 'input_size = [32, 32]\n' > $D/seg.toml
printf 'tokenizer = "%s/%s/tokenizer.json"\n' "$PWD" "$Z" > $D/emb.toml
run() {  # task model config name
  for dev in interp gpu:fp32 gpu:fp16; do
    if [ -n "$ZOO_DRY" ] && [ "$dev" != interp ]; then cp "$D/$4.interp.jsonl" "$D/$4.${dev/:/_}.jsonl"; continue; fi
    args="--device ${dev%%:*}"; [ "$dev" = interp ] || args="$args --precision ${dev##*:}"
    if [ "$1" = embed ]; then
      $X zoo embed "$2" "the cat sat" "a red car ran fast" --config "$3" --json $args > "$D/$4.${dev/:/_}.jsonl"
    else
      $X zoo "$1" "$2" $D/img*.png --config "$3" --json $args > "$D/$4.${dev/:/_}.jsonl"
    fi
  done
}
run classify models/batch/classifier.onnx $D/cls.toml cls
run detect $Z/yolo.onnx $D/yolo.toml yolo
run detect $Z/ssd.onnx $D/ssd.toml ssd
run segment $Z/segmenter.onnx $D/seg.toml seg
run embed models/bert_tiny.onnx $D/emb.toml emb
python3 - "$D" <<'PY'
import json, sys, numpy as np
d = sys.argv[1]
load = lambda p: [json.loads(l) for l in open(p)]
bad = 0
for name in ["cls", "yolo", "ssd", "seg", "emb"]:
    ref = load(f"{d}/{name}.interp.jsonl")
    for prec, tol in [("fp32", 1e-4), ("fp16", 2e-2)]:
        got = load(f"{d}/{name}.gpu_{prec}.jsonl")
        notes = []
        for a, b in zip(got, ref):
            if "classes" in b and "width" not in b:
                same = [x["index"] for x in a["classes"]] == [x["index"] for x in b["classes"]]
                err = max(abs(x["score"] - y["score"]) for x, y in zip(a["classes"], b["classes"]))
                notes.append(f"top-k {'same' if same else 'DIFFER'} max score diff {err:.1e}")
                bad += (not same and prec == "fp32") or err > tol
            elif "detections" in b:
                A, B = a["detections"], b["detections"]
                match = sum(any(x["class"] == y["class"] and max(abs(p - q) for p, q in zip(x["box"], y["box"])) < 0.5 for y in B) for x in A)
                notes.append(f"{len(A)} vs {len(B)} boxes, {match} matched")
                bad += prec == "fp32" and (len(A) != len(B) or match != len(A))
            elif "width" in b:
                pa = {c["class"]: c["pixels"] for c in a["classes"]}; pb = {c["class"]: c["pixels"] for c in b["classes"]}
                diff = sum(abs(pa.get(k, 0) - pb.get(k, 0)) for k in set(pa) | set(pb)) / (2 * b["width"] * b["height"])
                notes.append(f"mask class shares differ by {diff:.2%}")
                bad += diff > (0.001 if prec == "fp32" else 0.01)
            else:
                cos = float(np.dot(a["embedding"], b["embedding"]))
                notes.append(f"cosine {cos:.6f}")
                bad += cos < (0.9999 if prec == "fp32" else 0.999)
        print(f"{name} {prec}: " + "; ".join(notes))
print("zoo tasks on the GPU:", "PASS" if bad == 0 else f"{bad} FAILED")
sys.exit(1 if bad else 0)
PY
