"""Write the ONNX backend node test cases to a cache directory, once.

The `onnx` wheel does not ship the test data files, but it can regenerate every case:
    python3 dump_node_tests.py CACHE_DIR
Each case becomes CACHE_DIR/<case>/model.onnx, input_<i>.npy, output_<i>.npy. A case whose inputs or
outputs are not plain numeric arrays (sequences, optionals, strings, float8...) gets a file
`unsupported_io` instead, naming what it has. CACHE_DIR/manifest.tsv lists each case with the op
it tests (for `*_expanded` cases, the op whose function body they expand).
"""
import os
import sys

import numpy as np
import onnx
from onnx.backend.test.case.node import collect_testcases


def plain(a):
    return np.asarray(a) if isinstance(a, np.generic) else a


def describe(a):
    if isinstance(a, np.ndarray):
        return None if a.dtype != object and a.dtype.kind in "fiub" else str(a.dtype)
    if isinstance(a, onnx.TensorProto):
        return onnx.TensorProto.DataType.Name(a.data_type)
    return type(a).__name__


def main(out):
    os.makedirs(out, exist_ok=True)
    cases = collect_testcases(None)
    single = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    rows = []
    for case in cases:
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        onnx.save(case.model, os.path.join(d, "model.onnx"))
        op = single.get(case.name) or single.get(case.name.split("_expanded")[0]) or "?"
        inputs, outputs = case.data_sets[0] if case.data_sets else ([], [])
        inputs, outputs = [plain(a) for a in inputs], [plain(a) for a in outputs]
        bad = sorted({x for x in map(describe, list(inputs) + list(outputs)) if x})
        if bad:
            with open(os.path.join(d, "unsupported_io"), "w") as f:
                f.write(" ".join(bad) + "\n")
        else:
            for i, a in enumerate(inputs):
                np.save(os.path.join(d, f"input_{i}.npy"), a)
            for i, a in enumerate(outputs):
                np.save(os.path.join(d, f"output_{i}.npy"), a)
        rows.append(f"{case.name}\t{op}\n")
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.writelines(sorted(rows))
    print(f"{len(rows)} cases written to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
