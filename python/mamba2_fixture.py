"""Writes models/mamba2/: a Mamba-2 block (mamba_ssm's `Mamba2` mixer, inference without caches)
exported from PyTorch with random weights, one input and PyTorch's output.

Mamba-2's state-space-duality recurrence per head, h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·x_t ⊗ B_t and
y_t = h_t·C_t + D·x_t, is ONNX LinearAttention's "gated" rule with per-head decay g = Δ·A, keys B
and queries C (each group's repeated over its heads), values Δ·x and scale 1 — so the block
exports as standard opset-27 ops (CausalConvWithState for the short convolution) and needs no op
of xforge's own. The script checks that mapping against the recurrence written directly before
it writes anything.

    python3 python/mamba2_fixture.py models/mamba2
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from xforge_ops import causal_conv_with_state, export, linear_attention  # noqa: E402


def ssd_recurrence(x, dt, A, B, C, D):
    """The SSD recurrence step by step: x (b, l, h, p), dt (b, l, h), A (h), B and C (b, l, g, n),
    D (h); returns y (b, l, h, p)."""
    b, l, h, p = x.shape
    rep = h // B.shape[2]
    B, C = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)
    state = x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1)


class Mamba2(torch.nn.Module):
    def __init__(self, d_model=32, d_state=16, headdim=8, expand=2, ngroups=2, d_conv=4):
        super().__init__()
        self.d_inner = expand * d_model
        self.h, self.p, self.g, self.n = self.d_inner // headdim, headdim, ngroups, d_state
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = torch.nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.h, bias=False)
        self.conv_w = torch.nn.Parameter(torch.randn(conv_dim, 1, d_conv) * 0.4)
        self.conv_b = torch.nn.Parameter(torch.randn(conv_dim) * 0.1)
        self.dt_bias = torch.nn.Parameter(torch.randn(self.h) * 0.5 - 2.0)
        self.A_log = torch.nn.Parameter(torch.log(torch.empty(self.h).uniform_(1, 16)))
        self.D = torch.nn.Parameter(torch.ones(self.h) + 0.1 * torch.randn(self.h))
        self.norm = torch.nn.Parameter(torch.ones(self.d_inner) + 0.1 * torch.randn(self.d_inner))
        self.out_proj = torch.nn.Linear(self.d_inner, d_model, bias=False)

    def split(self, u):
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.g * self.n, self.h], dim=-1)
        xbc, _ = causal_conv_with_state(xbc.transpose(1, 2), self.conv_w, self.conv_b, activation="silu")
        x, B, C = torch.split(xbc.transpose(1, 2), [self.d_inner, self.g * self.n, self.g * self.n], dim=-1)
        return z, x, B, C, F.softplus(dt + self.dt_bias), -torch.exp(self.A_log)

    def tail(self, y, z):
        y = y * F.silu(z)  # the gated RMS norm (norm after the gate)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm
        return self.out_proj(y)

    def forward(self, u):  # (batch, len, d_model)
        b, l, _ = u.shape
        z, x, B, C, dt, A = self.split(u)
        rep = lambda t: t.reshape(b, l, self.g, self.n).repeat_interleave(self.h // self.g, dim=2).reshape(b, l, -1)  # noqa: E731
        xh = x.reshape(b, l, self.h, self.p)
        v = (xh * dt[..., None]).reshape(b, l, -1)
        y, _ = linear_attention(rep(C), rep(B), v, decay=dt * A, q_num_heads=self.h, kv_num_heads=self.h,
                                update_rule="gated", scale=1.0)
        y = y + (xh * self.D[:, None]).reshape(b, l, -1)
        return self.tail(y, z)

    def reference(self, u):
        b, l, _ = u.shape
        z, x, B, C, dt, A = self.split(u)
        y = ssd_recurrence(x.reshape(b, l, self.h, self.p), dt, A, B.reshape(b, l, self.g, self.n),
                           C.reshape(b, l, self.g, self.n), self.D)
        return self.tail(y.reshape(b, l, -1), z)


if __name__ == "__main__":
    out = sys.argv[1]
    torch.manual_seed(0)
    m = Mamba2().eval()
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        y, ref = m(x), m.reference(x)
    err = ((y - ref).norm() / ref.norm()).item()
    assert err < 1e-5, f"the LinearAttention form is {err:.2e} from the SSD recurrence"
    os.makedirs(os.path.join(out, "ref"), exist_ok=True)
    export(m, (x,), os.path.join(out, "model.onnx"), input_names=["hidden"], output_names=["out"], opset_version=20)
    np.save(os.path.join(out, "hidden.npy"), x.numpy())
    np.save(os.path.join(out, "ref", "out.npy"), y.numpy())
    print(f"mamba2 block: {tuple(x.shape)} -> {tuple(y.shape)}; LinearAttention form vs SSD recurrence {err:.1e}")
