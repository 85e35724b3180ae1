"""Writes the selective-scan fixtures the tests read (models/selective_scan/): small models with
one com.xforge SelectiveScan node, emitted by xforge_ops from PyTorch, their inputs, and
PyTorch's outputs (xforge_ops.selective_scan_ref, f32).

    python3 python/selective_scan_fixtures.py models/selective_scan
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from xforge_ops import export, selective_scan  # noqa: E402


class Block(torch.nn.Module):
    """A and D learned; delta_bias when `bias`; B and C as inputs."""

    def __init__(self, d, n, with_d, bias, softplus, last):
        super().__init__()
        self.A = torch.nn.Parameter(-torch.rand(d, n) - 0.1)
        self.D = torch.nn.Parameter(torch.randn(d)) if with_d else None
        self.bias = torch.nn.Parameter(torch.randn(d) * 0.3) if bias else None
        self.softplus, self.last = softplus, last

    def forward(self, u, delta, B, C, *z):
        return selective_scan(u, delta, self.A, B, C, self.D, z[0] if z else None, self.bias,
                              delta_softplus=self.softplus, return_last_state=self.last)


CASES = {
    # every option: D, z, delta_bias, softplus, 2 groups, the last state
    "full": dict(b=2, d=4, l=7, n=3, groups=2, with_d=True, z=True, bias=True, softplus=True, last=True),
    # D and z absent, delta_bias given (empty names in the middle), ungrouped B/C, no last state
    "bias_only": dict(b=1, d=3, l=9, n=4, groups=None, with_d=False, z=False, bias=True, softplus=False, last=False),
}

if __name__ == "__main__":
    out = sys.argv[1]
    for name, c in CASES.items():
        torch.manual_seed(len(name))
        m = Block(c["d"], c["n"], c["with_d"], c["bias"], c["softplus"], c["last"])
        proj = (c["b"], c["n"], c["l"]) if c["groups"] is None else (c["b"], c["groups"], c["n"], c["l"])
        ins = dict(u=torch.randn(c["b"], c["d"], c["l"]), delta=torch.randn(c["b"], c["d"], c["l"]) * 0.5,
                   B=torch.randn(*proj), C=torch.randn(*proj))
        if c["z"]:
            ins["z"] = torch.randn(c["b"], c["d"], c["l"])
        d = os.path.join(out, name)
        os.makedirs(os.path.join(d, "ref"), exist_ok=True)
        names = ["out", "last_state"] if c["last"] else ["out"]
        export(m, tuple(ins.values()), os.path.join(d, "model.onnx"), input_names=list(ins), output_names=names)
        for k, v in ins.items():
            np.save(os.path.join(d, f"{k}.npy"), v.numpy())
        with torch.no_grad():
            ys = m(*ins.values())
        for k, y in zip(names, ys if c["last"] else [ys]):
            np.save(os.path.join(d, "ref", f"{k}.npy"), y.numpy())
        print(name, {k: tuple(v.shape) for k, v in ins.items()})
