"""Writes the small symbolic-batch models in models/batch/ (deterministic weights):

    python3 testsuite/scripts/make_batch_models.py models/batch

classifier.onnx: x[batch,3,16,16] → Conv 3×3 → Relu → GlobalAveragePool → Reshape to
[Shape(x)[0], -1] (the batch read at run time) → Gemm → Softmax(-1) → y[batch,10]; every node
keeps batch rows apart, so a compiled batch pads to its bucket.
rows_mixed.onnx: x[batch,6] → Transpose → Softmax over the batch → Transpose → y; the rows
mix, so it cannot pad.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def w(name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def i64(name, v):
    return numpy_helper.from_array(np.array(v, dtype=np.int64), name)


def save(graph, name):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_batch_models")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(out, name))


nodes = [
    helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
    helper.make_node("Relu", ["c"], ["r"], name="relu"),
    helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
    helper.make_node("Shape", ["x"], ["xs"], name="shape"),
    helper.make_node("Gather", ["xs", "zero"], ["n"], axis=0, name="batch"),
    helper.make_node("Concat", ["n", "minus1"], ["to"], axis=0, name="to"),
    helper.make_node("Reshape", ["p", "to"], ["f"], name="flatten"),
    helper.make_node("Gemm", ["f", "fw", "fb"], ["l"], transB=1, name="fc"),
    helper.make_node("Softmax", ["l"], ["y"], axis=-1, name="softmax"),
]
save(helper.make_graph(
    nodes, "classifier",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
    [w("cw", 8, 3, 3, 3), w("cb", 8), w("fw", 10, 8), w("fb", 10), i64("zero", [0]), i64("minus1", [-1])],
), "classifier.onnx")

save(helper.make_graph(
    [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0], name="batch_last"),
     helper.make_node("Softmax", ["t"], ["s"], axis=-1, name="batch_softmax"),
     helper.make_node("Transpose", ["s"], ["y"], perm=[1, 0], name="batch_first")], "rows_mixed",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])],
), "rows_mixed.onnx")
print("wrote", out)
