"""Writes models/mamba_block/: a whole Mamba block (in-projection, causal depthwise conv1d, SiLU,
x/dt projections, the selective scan through xforge_ops, gating, out-projection) exported from
PyTorch with random weights, one input and PyTorch's output.

    python3 python/mamba_block_fixture.py models/mamba_block
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from xforge_ops import export, selective_scan  # noqa: E402


class MambaBlock(torch.nn.Module):
    """mamba_ssm's `Mamba` mixer, inference path without caches."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2):
        super().__init__()
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = torch.nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = torch.nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = torch.nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = torch.nn.Linear(self.dt_rank, self.d_inner, bias=True)
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = torch.nn.Parameter(torch.log(a))
        self.D = torch.nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = torch.nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden):  # (batch, len, d_model)
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (batch, 2·d_inner, len)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])  # causal: the first len outputs
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, len, dt_rank + 2·state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (batch, d_inner, len), bias below
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "ref"), exist_ok=True)
    torch.manual_seed(0)
    m = MambaBlock(d_model=32, d_state=8).eval()
    x = torch.randn(2, 12, 32)
    export(m, (x,), os.path.join(out, "model.onnx"), input_names=["hidden"], output_names=["out"])
    np.save(os.path.join(out, "hidden.npy"), x.numpy())
    with torch.no_grad():
        np.save(os.path.join(out, "ref", "out.npy"), m(x).numpy())
    print("mamba block:", tuple(x.shape), "->", tuple(m(x).shape))
