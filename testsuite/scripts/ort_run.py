"""Run an ONNX model through onnxruntime (CPU) on .npy inputs and save its outputs.

    python3 ort_run.py MODEL.onnx OUTDIR NAME=FILE.npy [NAME=FILE.npy ...]

Writes OUTDIR/<output name>.npy for each output (names sanitized like `xforge run` does).
"""
import os
import re
import sys

import numpy as np
import onnxruntime as ort


def main(model, outdir, specs):
    feeds = {}
    for s in specs:
        name, path = s.split("=", 1)
        feeds[name] = np.load(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    os.makedirs(outdir, exist_ok=True)
    for n, a in zip(names, outs):
        np.save(os.path.join(outdir, re.sub(r"[^A-Za-z0-9._-]", "_", n) + ".npy"), a)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
