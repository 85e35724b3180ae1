"""Write the ONNX backend node test cases to a cache directory, once.

The `onnx` wheel does not ship the test data files, but it can regenerate every case:
    python3 dump_node_tests.py CACHE_DIR
Each case becomes CACHE_DIR/<case>/model.onnx, input_<i>.npy, output_<i>.npy. Arrays of the types
numpy lacks (bfloat16; the narrow FP8, FP4, 4- and 2-bit integers) are written as their bit
patterns (uint16; uint8 codes, one per element), with a file input_<i>.onnxtype beside naming
the ONNX type. A case whose inputs or
outputs are not numeric arrays (sequences, optionals, strings, FLOAT8E8M0...) gets a file
`unsupported_io` instead, naming what it has. CACHE_DIR/manifest.tsv lists each case with the op
it tests (for `*_expanded` cases, the op whose function body they expand).
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx.backend.test.case.node import collect_testcases


from onnx import numpy_helper

T = onnx.TensorProto
# the narrow types the runner reads back from codes (FLOAT8E8M0 is not one of them)
NARROW = {T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ, T.FLOAT4E2M1,
          T.INT4, T.UINT4, T.INT2, T.UINT2}


def onnx_type(a):
    """The ONNX type code of a numpy array's dtype, None when ONNX has none."""
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(a.dtype)
    except (KeyError, ValueError, TypeError):
        return None


def plain(a):
    if isinstance(a, onnx.TensorProto) and a.data_type not in (T.STRING, T.FLOAT8E8M0):
        return numpy_helper.to_array(a)
    return np.asarray(a) if isinstance(a, np.generic) else a


def describe(a):
    if isinstance(a, np.ndarray):
        if a.dtype != object and a.dtype.kind in "fiub" or onnx_type(a) in NARROW | {T.BFLOAT16}:
            return None
        return str(a.dtype)
    if isinstance(a, onnx.TensorProto):
        return onnx.TensorProto.DataType.Name(a.data_type)
    return type(a).__name__


def save(path, a):
    a = np.asarray(a).copy(order="C")  # row-major: the runner reads no Fortran order
    code = onnx_type(a)
    if code in NARROW or code == T.BFLOAT16:
        np.save(path + ".npy", a.view(np.uint16 if code == T.BFLOAT16 else np.uint8))
        with open(path + ".onnxtype", "w") as f:
            f.write(T.DataType.Name(code) + "\n")
    else:
        np.save(path + ".npy", a)


def main(out):
    os.makedirs(out, exist_ok=True)
    cases = collect_testcases(None)
    single = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    rows = []
    for case in cases:
        d = os.path.join(out, case.name)
        shutil.rmtree(d, ignore_errors=True)  # no file of an older dump stays
        os.makedirs(d)
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
                save(os.path.join(d, f"input_{i}"), a)
            for i, a in enumerate(outputs):
                save(os.path.join(d, f"output_{i}"), a)
        rows.append(f"{case.name}\t{op}\n")
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.writelines(sorted(rows))
    print(f"{len(rows)} cases written to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
