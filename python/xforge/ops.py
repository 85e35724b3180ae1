"""xforge's own ONNX ops, emitted from PyTorch: `selective_scan` (Mamba's selective scan) as one
`SelectiveScan` node of domain `com.xforge`; and two ops of ONNX opset 27 that PyTorch's
exporters do not write yet, `linear_attention` (LinearAttention: the linear, gated, delta and
gated-delta recurrences of GLA, RetNet, RWKV-6-style decay and Gated DeltaNet) and
`causal_conv_with_state` (CausalConvWithState), each a reference in PyTorch that exports as the
one ONNX node (`export` moves them to ONNX's domain and sets the model's opset to 27).

    from xforge_ops import selective_scan, export
    y = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)   # runs the reference
    export(model, (x,), "model.onnx")                       # torch.onnx.export, then the fix-up below

Semantics (as mamba_ssm's `selective_scan_fn`; docs/ops/selective_scan.md): u, delta, z
(batch, dim, len); A (dim, state); B, C (batch, state, len) or (batch, groups, state, len);
D, delta_bias (dim,). Inputs in that order, absent optional ones as empty names; attribute
`delta_softplus`; outputs `out` and, with `return_last_state=True`, the last state
(batch, dim, state) in f32.
"""
import torch

DOMAIN = "com.xforge"
OPTIONAL = ("D", "z", "delta_bias")
# ops of newer ONNX opsets than the TorchScript exporter writes: emitted in this domain, then
# moved to ONNX's own by `export`
STD = "com.xforge.onnx"
STD_OPSET = 27
# the op's required inputs (optional ones follow, present or not by the `xforge_present` mask)
REQUIRED = {"SelectiveScan": 5, "LinearAttention": 3, "CausalConvWithState": 2}


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """The scan in PyTorch, step by step in f32 (mamba_ssm's `selective_scan_ref`)."""
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    batch, dim, length = u.shape
    if B.dim() == 4:  # (batch, groups, state, len): each group's rows shared by dim // groups channels
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    else:
        B, C = B[:, None], C[:, None]
    x = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        x = torch.exp(delta[:, :, t, None] * A) * x + delta[:, :, t, None] * B[:, :, :, t] * u[:, :, t, None]
        ys.append((x * C[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None].float()
    if z is not None:
        out = out * torch.nn.functional.silu(z.float())
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        if torch.onnx.is_in_onnx_export():
            # the exporter only needs the outputs' types and shapes (the reference's Python loop
            # over a long sequence would dominate an export)
            out = torch.zeros_like(u)
            last = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
            return (out, last) if return_last_state else out
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    @staticmethod
    def symbolic(g, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        optional = (D, z, delta_bias)
        present = [v for v in optional if v is not None]
        # the exporter cannot write an empty input: which ones are present travels in an
        # attribute that `export` turns into empty names and removes
        mask = [int(v is not None) for v in optional]
        return g.op(f"{DOMAIN}::SelectiveScan", u, delta, A, B, C, *present,
                    delta_softplus_i=int(delta_softplus), xforge_present_i=mask,
                    outputs=2 if return_last_state else 1)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    return _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def linear_attention_ref(query, key, value, past_state=None, decay=None, beta=None, *, q_num_heads,
                         kv_num_heads, update_rule="gated_delta", scale=0.0):
    """ONNX LinearAttention step by step in f32 (onnx/reference's): query (B, T, Hq·dk), key
    (B, T, Hkv·dk), value (B, T, Hkv·dv); decay (B, T, Hkv) or (B, T, Hkv·dk) in log space for
    the gated rules; beta (B, T, Hkv) or (B, T, 1) for the delta rules. Returns the output
    (B, T, Hq·dv) and the state (B, Hkv, dk, dv)."""
    b, t, _ = query.shape
    dk, dv = query.shape[-1] // q_num_heads, value.shape[-1] // kv_num_heads
    heads = lambda x, h: x.float().reshape(b, t, h, -1).transpose(1, 2)  # noqa: E731
    q, k, v = heads(query, q_num_heads), heads(key, kv_num_heads), heads(value, kv_num_heads)
    g = None if decay is None else heads(decay, kv_num_heads)  # (B, H, T, 1 or dk)
    bt = None if beta is None else heads(beta, beta.shape[-1])  # (B, H or 1, T, 1)
    s = query.new_zeros(b, kv_num_heads, dk, dv, dtype=torch.float32) if past_state is None else past_state.float()
    scale = scale or dk ** -0.5
    group = q_num_heads // kv_num_heads
    outs = []
    for i in range(t):
        if g is not None:
            s = s * torch.exp(g[:, :, i, :])[..., None]
        vi = v[:, :, i]
        if bt is not None:
            vi = bt[:, :, i] * (vi - torch.einsum("bhdm,bhd->bhm", s, k[:, :, i]))
        s = s + k[:, :, i, :, None] * vi[:, :, None, :]
        read = s.repeat_interleave(group, dim=1)
        outs.append(scale * torch.einsum("bhd,bhdm->bhm", q[:, :, i], read))
    out = torch.stack(outs, dim=2).transpose(1, 2).reshape(b, t, q_num_heads * dv).to(query.dtype)
    return out, s.to(query.dtype if past_state is None else past_state.dtype)


def causal_conv_with_state_ref(x, weight, bias=None, past_state=None, activation="none"):
    """ONNX CausalConvWithState: x (B, C, L), weight (C, 1, k); returns the output and the last
    k − 1 positions of past + x."""
    k = weight.shape[-1]
    pad = x.new_zeros(x.shape[0], x.shape[1], k - 1) if past_state is None else past_state
    padded = torch.cat([pad, x], dim=2)
    y = torch.nn.functional.conv1d(padded, weight, bias, groups=x.shape[1])
    if activation in ("silu", "swish"):
        y = torch.nn.functional.silu(y)
    return y, padded[:, :, padded.shape[2] - (k - 1):]


def _std_node(g, op, required, optional, outputs, **attrs):
    """A node of a newer ONNX opset, its absent optional inputs told by the mask `export` reads."""
    present = [v for v in optional if v is not None]
    mask = [int(v is not None) for v in optional]
    return g.op(f"{STD}::{op}", *required, *present, xforge_present_i=mask, outputs=outputs, **attrs)


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, past, decay, beta, hq, hk, rule, scale):
        if torch.onnx.is_in_onnx_export():
            b, t, _ = q.shape
            dk, dv = q.shape[-1] // hq, v.shape[-1] // hk
            return q.new_zeros(b, t, hq * dv), q.new_zeros(b, hk, dk, dv)
        return linear_attention_ref(q, k, v, past, decay, beta, q_num_heads=hq, kv_num_heads=hk,
                                    update_rule=rule, scale=scale)

    @staticmethod
    def symbolic(g, q, k, v, past, decay, beta, hq, hk, rule, scale):
        attrs = dict(q_num_heads_i=hq, kv_num_heads_i=hk, update_rule_s=rule)
        if scale:
            attrs["scale_f"] = scale
        return _std_node(g, "LinearAttention", (q, k, v), (past, decay, beta), 2, **attrs)


def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, q_num_heads, kv_num_heads,
                     update_rule="gated_delta", scale=0.0):
    """(output, present_state) of ONNX LinearAttention; exports as that one node."""
    return _LinearAttention.apply(query, key, value, past_state, decay, beta, q_num_heads, kv_num_heads,
                                  update_rule, scale)


class _CausalConvWithState(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, past, activation):
        if torch.onnx.is_in_onnx_export():
            return torch.zeros_like(x), x.new_zeros(x.shape[0], x.shape[1], weight.shape[-1] - 1)
        return causal_conv_with_state_ref(x, weight, bias, past, activation)

    @staticmethod
    def symbolic(g, x, weight, bias, past, activation):
        return _std_node(g, "CausalConvWithState", (x, weight), (bias, past), 2, activation_s=activation)


def causal_conv_with_state(x, weight, bias=None, past_state=None, activation="none"):
    """(output, present_state) of ONNX CausalConvWithState; exports as that one node."""
    return _CausalConvWithState.apply(x, weight, bias, past_state, activation)


def export(model, args, path, **kwargs):
    """`torch.onnx.export` (TorchScript exporter, opset 17 unless given; 20 with the opset-27
    ops), then every node of these ops gets its absent optional inputs as empty names, and the
    opset-27 ops move to ONNX's domain with the model's opset raised to 27."""
    import onnx
    kwargs.setdefault("opset_version", 17)
    torch.onnx.export(model, args, path, dynamo=False, custom_opsets={DOMAIN: 1, STD: 1}, **kwargs)
    m = onnx.load(path)
    newer = False
    for n in m.graph.node:
        if n.domain not in (DOMAIN, STD) or n.op_type not in REQUIRED:
            continue
        need = REQUIRED[n.op_type]
        mask = next(a for a in n.attribute if a.name == "xforge_present")
        present = list(n.input[need:])
        inputs = list(n.input[:need])
        for flag in mask.ints:
            inputs.append(present.pop(0) if flag else "")
        while inputs and inputs[-1] == "":
            inputs.pop()
        del n.input[:]
        n.input.extend(inputs)
        n.attribute.remove(mask)
        if n.domain == STD:
            n.domain = ""
            newer = True
    if newer:
        if kwargs["opset_version"] < 18:
            raise ValueError("the opset-27 ops need opset_version >= 18 (reductions take their axes as inputs)")
        imports = [o for o in m.opset_import if o.domain not in ("", "ai.onnx", STD)]
        del m.opset_import[:]
        m.opset_import.extend(imports + [onnx.helper.make_opsetid("", STD_OPSET)])
        m.ir_version = max(m.ir_version, 11)
    onnx.save(m, path)
