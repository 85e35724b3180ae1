"""Zoo models without their weights, to carry them off the GPU machine (only small files come
back) and time `xforge compile` on a 2-core machine that has no torch to export them.

    python3 zoo_graphs.py strip WORK OUT.tar.xz NAME...   (GPU machine: WORK holds NAME.onnx)
    python3 zoo_graphs.py fill DIR                        (here: random weights of the same shapes)

`strip` moves every tensor above 1 KiB into NAME.bin (not kept) and records its place; small
tensors (shape constants, axes, scalars) stay in the graph, so shape folding is the model's own.
`fill` writes each NAME.bin again with random values of each tensor's dtype (normal, sd 0.05 for
floats; zeros for integers): the same graph and sizes, so the same compile work.
"""
import os
import sys
import tarfile

import numpy as np
import onnx
from onnx import numpy_helper  # noqa: F401  (dtype tables)
from onnx.helper import tensor_dtype_to_np_dtype


def strip(work, out, names):
    with tarfile.open(out, "w:xz") as tar:
        for n in names:
            src = os.path.join(work, n + ".onnx")
            if not os.path.exists(src):
                print(f"{n}: no export", flush=True)
                continue
            m = onnx.load(src)
            dst = os.path.join(work, "graphs", n + ".onnx")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            onnx.save_model(m, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=n + ".bin", size_threshold=1024)
            tar.add(dst, arcname=n + ".onnx")
            print(f"{n}: {os.path.getsize(dst)} bytes of graph", flush=True)


def fill(folder):
    rng = np.random.default_rng(0)
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".onnx"):
            continue
        m = onnx.load(os.path.join(folder, f), load_external_data=False)
        places = []
        for t in m.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            kv = {e.key: e.value for e in t.external_data}
            places.append((kv["location"], int(kv.get("offset", 0)), int(kv["length"]), t))
        if not places:
            continue
        loc = places[0][0]
        size = max(o + n for _, o, n, _ in places)
        buf = np.zeros(size, np.uint8)
        for _, off, length, t in places:
            dt = np.dtype(tensor_dtype_to_np_dtype(t.data_type))
            count = length // dt.itemsize
            v = (rng.standard_normal(count) * 0.05).astype(dt) if dt.kind == "f" else np.zeros(count, dt)
            buf[off:off + length] = np.frombuffer(v.tobytes(), np.uint8)
        buf.tofile(os.path.join(folder, loc))
        print(f"{f}: {len(places)} tensors, {size} bytes", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "strip":
        strip(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif sys.argv[1] == "fill":
        fill(sys.argv[2])
    else:
        sys.exit(__doc__)
