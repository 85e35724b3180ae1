"""xforge's own ONNX ops, emitted from PyTorch: `selective_scan` (Mamba's selective scan) as one
`SelectiveScan` node of domain `com.xforge`.

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


def export(model, args, path, **kwargs):
    """`torch.onnx.export` (TorchScript exporter, opset 17 unless given), then every
    SelectiveScan gets its absent optional inputs as empty names."""
    import onnx
    kwargs.setdefault("opset_version", 17)
    torch.onnx.export(model, args, path, dynamo=False, custom_opsets={DOMAIN: 1}, **kwargs)
    m = onnx.load(path)
    for n in m.graph.node:
        if n.domain != DOMAIN or n.op_type != "SelectiveScan":
            continue
        mask = next(a for a in n.attribute if a.name == "xforge_present")
        present = list(n.input[5:])
        inputs = list(n.input[:5])
        for flag in mask.ints:
            inputs.append(present.pop(0) if flag else "")
        while inputs and inputs[-1] == "":
            inputs.pop()
        del n.input[:]
        n.input.extend(inputs)
        n.attribute.remove(mask)
    onnx.save(m, path)
