"""The selective scan in its unfused ONNX form (standard ops only): softplus, exp, products, the
linear recurrence as an ONNX `Scan` whose body is h <- a*h + x, and the contraction with C.
xforge's e-graph rules (passes/src/fusion/selective_scan.rs) recognise it and put one
com.xforge SelectiveScan in its place.

    python3 python/selective_scan_unfused.py OUTDIR      # OUTDIR/{full,bare}: model.onnx, inputs, ref/

Tensors as in mamba_ssm: u, delta, z (b, d, l); A (d, n); B, C (b, n, l); D, delta_bias (d,).
`full` has D, z, delta_bias and softplus; `bare` has none of them. The reference output is
xforge_ops.selective_scan_ref (PyTorch, f32).
"""
import os
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from xforge_ops import selective_scan_ref  # noqa: E402


def body():
    """One step of the recurrence: (h, a_t, x_t) -> (h', h') with h' = a_t * h + x_t."""
    f = TensorProto.FLOAT
    return helper.make_graph(
        [helper.make_node("Mul", ["a_t", "h"], ["ah"]), helper.make_node("Add", ["ah", "x_t"], ["h_next"]),
         helper.make_node("Identity", ["h_next"], ["h_out"])],
        "step",
        [helper.make_tensor_value_info(n, f, None) for n in ("h", "a_t", "x_t")],
        [helper.make_tensor_value_info(n, f, None) for n in ("h_next", "h_out")],
    )


def unfused(b, d, l, n, full, A, D, bias):
    f = TensorProto.FLOAT
    nodes, inits = [], [numpy_helper.from_array(A, "A")]
    c = lambda name, v: inits.append(numpy_helper.from_array(np.array(v, dtype=np.int64), name))
    c("ax1", [1]), c("ax3", [3]), c("ax02", [0, 2])
    node = lambda op, ins, outs, **kw: nodes.append(helper.make_node(op, ins, outs, **kw))
    delta = "delta"
    if full:
        inits += [numpy_helper.from_array(D, "D"), numpy_helper.from_array(bias, "delta_bias")]
        node("Unsqueeze", ["delta_bias", "ax1"], ["bias_col"])
        node("Add", ["delta", "bias_col"], ["delta_b"])
        node("Softplus", ["delta_b"], ["dt"])
        delta = "dt"
    # decays exp(Δ·A) and inputs Δ·u·B, both (b, d, l, n)
    node("Unsqueeze", [delta, "ax3"], ["dt4"])
    node("Unsqueeze", ["A", "ax02"], ["A4"])
    node("Mul", ["dt4", "A4"], ["dA_log"])
    node("Exp", ["dA_log"], ["dA"])
    node("Mul", [delta, "u"], ["du"])
    node("Unsqueeze", ["du", "ax3"], ["du4"])
    node("Transpose", ["B"], ["Bt"], perm=[0, 2, 1])
    node("Unsqueeze", ["Bt", "ax1"], ["Bt4"])
    node("Mul", ["du4", "Bt4"], ["dBu"])
    # the recurrence over l from a zero state
    inits.append(numpy_helper.from_array(np.zeros((b, d, n), np.float32), "h0"))
    node("Scan", ["h0", "dA", "dBu"], ["h_last", "hs"], body=body(), num_scan_inputs=2,
         scan_input_axes=[2, 2], scan_output_axes=[2])
    # y = Σ_n h·C
    node("Transpose", ["C"], ["Ct"], perm=[0, 2, 1])
    node("Unsqueeze", ["Ct", "ax1"], ["Ct4"])
    node("Mul", ["hs", "Ct4"], ["hC"])
    node("ReduceSum", ["hC", "ax3"], ["y" if full else "out"], keepdims=0)
    ins = [helper.make_tensor_value_info(k, f, s) for k, s in
           [("u", [b, d, l]), ("delta", [b, d, l]), ("B", [b, n, l]), ("C", [b, n, l])]]
    if full:
        node("Unsqueeze", ["D", "ax1"], ["D_col"])
        node("Mul", ["u", "D_col"], ["Du"])
        node("Add", ["y", "Du"], ["yD"])
        node("Sigmoid", ["z"], ["z_sig"])
        node("Mul", ["z", "z_sig"], ["z_silu"])
        node("Mul", ["yD", "z_silu"], ["out"])
        ins.append(helper.make_tensor_value_info("z", f, [b, d, l]))
    g = helper.make_graph(nodes, "selective_scan_unfused", ins,
                          [helper.make_tensor_value_info("out", f, [b, d, l])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def main(out):
    for name, full, (b, d, l, n) in [("full", True, (2, 6, 40, 4)), ("bare", False, (1, 5, 33, 3))]:
        r = np.random.default_rng(5 if full else 6)
        A = (-r.random((d, n)) - 0.1).astype(np.float32)
        D = r.standard_normal(d).astype(np.float32)
        bias = (0.3 * r.standard_normal(d)).astype(np.float32)
        t = dict(u=r.standard_normal((b, d, l)), delta=0.5 * r.random((b, d, l)) + (0.0 if full else 0.05),
                 B=r.standard_normal((b, n, l)), C=r.standard_normal((b, n, l)))
        if full:
            t["z"] = r.standard_normal((b, d, l))
        t = {k: v.astype(np.float32) for k, v in t.items()}
        folder = os.path.join(out, f"unfused_{name}")
        os.makedirs(os.path.join(folder, "ref"), exist_ok=True)
        onnx.save(unfused(b, d, l, n, full, A, D, bias), os.path.join(folder, "model.onnx"))
        for k, v in t.items():
            np.save(os.path.join(folder, f"{k}.npy"), v)
        tt = {k: torch.from_numpy(v) for k, v in t.items()}
        y = selective_scan_ref(tt["u"], tt["delta"], torch.from_numpy(A), tt["B"], tt["C"],
                               torch.from_numpy(D) if full else None, tt.get("z"),
                               torch.from_numpy(bias) if full else None, delta_softplus=full)
        np.save(os.path.join(folder, "ref", "out.npy"), y.numpy())
        print(folder)


if __name__ == "__main__":
    main(sys.argv[1])
