"""Writes models/linear_attention/: two linear-attention layers exported from PyTorch with random
weights, one input and PyTorch's output. Layer 1 is a Gated DeltaNet mixer (Qwen3-Next's: short
causal convolutions with SiLU on q, k and v, L2-normalized q and k, β = sigmoid, per-head decay
g = −exp(A)·softplus(a + dt_bias), the gated delta rule, a gated RMS norm, out-projection); layer
2 is gated linear attention (GLA: per-key decay logsigmoid(·)/16, grouped KV heads). The
recurrences and convolutions go through xforge.ops, so the file holds ONNX opset 27's
LinearAttention and CausalConvWithState nodes.

    python3 python/linear_attention_fixture.py models/linear_attention
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from xforge_ops import causal_conv_with_state, export, linear_attention  # noqa: E402


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class GatedDeltaNet(torch.nn.Module):
    def __init__(self, d_model, heads, head_k, head_v, conv=4):
        super().__init__()
        self.h, self.dk, self.dv = heads, head_k, head_v
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.q_proj, self.k_proj = lin(d_model, heads * head_k), lin(d_model, heads * head_k)
        self.v_proj, self.g_proj = lin(d_model, heads * head_v), lin(d_model, heads * head_v)
        self.a_proj, self.b_proj = lin(d_model, heads), lin(d_model, heads)
        self.o_proj = lin(heads * head_v, d_model)
        self.convs = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(c, 1, conv) * 0.3) for c in (heads * head_k, heads * head_k, heads * head_v)]
        )
        self.A_log = torch.nn.Parameter(torch.log(torch.empty(heads).uniform_(1, 16)))
        self.dt_bias = torch.nn.Parameter(torch.randn(heads) * 0.1)
        self.norm = torch.nn.Parameter(torch.ones(head_v) + 0.1 * torch.randn(head_v))

    def forward(self, x):  # (batch, len, d_model)
        b, t, _ = x.shape
        short = lambda y, w: causal_conv_with_state(y.transpose(1, 2), w, activation="silu")[0].transpose(1, 2)  # noqa: E731
        q = short(self.q_proj(x), self.convs[0])
        k = short(self.k_proj(x), self.convs[1])
        v = short(self.v_proj(x), self.convs[2])
        q = F.normalize(q.reshape(b, t, self.h, self.dk), dim=-1).reshape(b, t, -1)
        k = F.normalize(k.reshape(b, t, self.h, self.dk), dim=-1).reshape(b, t, -1)
        beta = torch.sigmoid(self.b_proj(x))
        g = -torch.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias)
        o, _ = linear_attention(q, k, v, decay=g, beta=beta, q_num_heads=self.h, kv_num_heads=self.h,
                                update_rule="gated_delta")
        o = rms_norm(o.reshape(b, t, self.h, self.dv), self.norm)
        o = o * F.silu(self.g_proj(x).reshape(b, t, self.h, self.dv))
        return x + self.o_proj(o.reshape(b, t, -1))


class GatedLinearAttention(torch.nn.Module):
    def __init__(self, d_model, q_heads, kv_heads, head_k, head_v):
        super().__init__()
        self.hq, self.hk, self.dk, self.dv = q_heads, kv_heads, head_k, head_v
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.q_proj, self.k_proj = lin(d_model, q_heads * head_k), lin(d_model, kv_heads * head_k)
        self.v_proj, self.gk_proj = lin(d_model, kv_heads * head_v), lin(d_model, kv_heads * head_k)
        self.o_proj = lin(q_heads * head_v, d_model)

    def forward(self, x):
        gk = F.logsigmoid(self.gk_proj(x)) / 16
        o, _ = linear_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), decay=gk,
                                q_num_heads=self.hq, kv_num_heads=self.hk, update_rule="gated")
        return x + self.o_proj(o)


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "ref"), exist_ok=True)
    torch.manual_seed(0)
    m = torch.nn.Sequential(GatedDeltaNet(32, 2, 16, 16), GatedLinearAttention(32, 4, 2, 8, 16)).eval()
    x = torch.randn(2, 12, 32)
    export(m, (x,), os.path.join(out, "model.onnx"), input_names=["hidden"], output_names=["out"], opset_version=20)
    np.save(os.path.join(out, "hidden.npy"), x.numpy())
    with torch.no_grad():
        y = m(x)
    np.save(os.path.join(out, "ref", "out.npy"), y.numpy())
    print("linear attention layers:", tuple(x.shape), "->", tuple(y.shape))
