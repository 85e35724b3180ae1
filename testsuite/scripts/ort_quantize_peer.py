#!/usr/bin/env python3
"""Models quantized by onnxruntime's own `quantize_static` (QDQ format, per-channel int8 weights,
int8 activations, calibrated on random batches) through xforge's interpreter, against onnxruntime
on the same QDQ model with graph optimizations off (so that it runs the QDQ ops as written).

    python3 testsuite/scripts/ort_quantize_peer.py [--xforge target/release/xforge] [--tol 1e-3]
        [--host-check target/release/host_check] MODEL.onnx|squeezenet ...

`squeezenet` builds a SqueezeNet 1.1 (fire modules, random weights, 1x3x224x224) with onnx.helper,
for a peer model no download is needed for. Prints one line per model: QDQ node counts, relative L2
of each output and top-1 agreement; exits 1 above --tol (default 1e-3) or on a top-1 change.
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def squeezenet(path, seed=0):
    """SqueezeNet 1.1's topology with He-initialized random weights."""
    r = np.random.default_rng(seed)
    nodes, inits = [], []
    k = [0]

    def conv(x, cin, cout, kernel, stride=1, pad=0, relu=True):
        k[0] += 1
        w, b, y = f"w{k[0]}", f"b{k[0]}", f"c{k[0]}"
        inits.append(numpy_helper.from_array(
            (r.standard_normal((cout, cin, kernel, kernel)) * np.sqrt(2.0 / (cin * kernel * kernel))).astype(np.float32), w))
        inits.append(numpy_helper.from_array((r.standard_normal(cout) * 0.01).astype(np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[kernel, kernel], strides=[stride, stride],
                                      pads=[pad] * 4))
        if not relu:
            return y
        nodes.append(helper.make_node("Relu", [y], [y + "r"]))
        return y + "r"

    def pool(x):
        k[0] += 1
        nodes.append(helper.make_node("MaxPool", [x], [f"p{k[0]}"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
        return f"p{k[0]}"

    def fire(x, cin, s, e):
        sq = conv(x, cin, s, 1)
        a, b = conv(sq, s, e, 1), conv(sq, s, e, 3, pad=1)
        k[0] += 1
        nodes.append(helper.make_node("Concat", [a, b], [f"f{k[0]}"], axis=1))
        return f"f{k[0]}"

    x = pool(conv("input", 3, 64, 3, stride=2))
    x = pool(fire(fire(x, 64, 16, 64), 128, 16, 64))
    x = pool(fire(fire(x, 128, 32, 128), 256, 32, 128))
    x = fire(fire(fire(fire(x, 256, 48, 192), 384, 48, 192), 384, 64, 256), 512, 64, 256)
    x = conv(x, 512, 1000, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["output"]))
    g = helper.make_graph(nodes, "squeezenet1_1", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1000])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def inputs_of(model):
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def feed(ins, seed):
    r = np.random.default_rng(seed)
    out = {}
    for i in ins:
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == TensorProto.INT64:
            out[i.name] = r.integers(0, 100, size=shape).astype(np.int64)
        else:
            out[i.name] = r.standard_normal(shape).astype(np.float32)
    return out


def peer(src, xforge, tmp, tol, host_check):
    name = os.path.splitext(os.path.basename(src))[0]
    ins = inputs_of(onnx.load(src))

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.k = 0

        def get_next(self):
            self.k += 1
            return feed(ins, self.k) if self.k <= 4 else None

    q = os.path.join(tmp, name + ".qdq.onnx")
    quantize_static(src, q, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    qm = onnx.load(q)
    ops = collections.Counter(n.op_type for n in qm.graph.node)
    f = feed(ins, 99)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"]).run(None, f)
    args = []
    for k, v in f.items():
        p = os.path.join(tmp, f"{name}.{k}.npy")
        np.save(p, v)
        args += ["--input", f"{k}={p}"]
    outdir = os.path.join(tmp, name + ".out")
    subprocess.run([xforge, "run", q, *args, "--output-dir", outdir], check=True, capture_output=True)
    ok = True
    for o, w in zip(qm.graph.output, want):
        got = np.load(os.path.join(outdir, o.name + ".npy")).astype(np.float64)
        err = float(np.linalg.norm(got - w) / max(np.linalg.norm(w), 1e-30))
        top = float((got.reshape(got.shape[0], -1).argmax(-1) == w.reshape(w.shape[0], -1).argmax(-1)).mean())
        ok &= err <= tol and top == 1.0
        print(f"{name}: {ops['QuantizeLinear']} Q, {ops['DequantizeLinear']} DQ; output {o.name} {list(got.shape)}: "
              f"relative L2 {err:.2e} against onnxruntime, top-1 agreement {top:.0%}")
    if host_check:
        # compiled (fused kernels run on the host through MLIR's execution engine) against the interpreter
        r = subprocess.run([host_check, q, "--tol", str(tol)], capture_output=True, text=True)
        print(r.stdout.strip() or r.stderr.strip()[-500:])
        ok &= r.returncode == 0
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--xforge", default=os.path.join(ROOT, "target", "release", "xforge"))
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--host-check", help="also compile each QDQ model and run its kernels on the host "
                                         "(testsuite's host_check binary) against the interpreter")
    a = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:
            if m == "squeezenet":
                m = os.path.join(tmp, "squeezenet1_1.onnx")
                squeezenet(m)
            ok &= peer(m, a.xforge, tmp, a.tol, a.host_check)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
