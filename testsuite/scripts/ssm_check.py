"""The selective scan against mamba_ssm's `selective_scan_fn`, on the GPU machine: exports one
com.xforge SelectiveScan model per case (python/xforge_ops.py), writes its inputs, and (where
mamba_ssm is installed) mamba_ssm's output; `device_ssm.sh` compiles and runs them with xforge
and `compare` checks them with mamba_ssm's tolerances.

    python3 ssm_check.py export OUTDIR           # one folder per case: model.onnx, inputs, ref/
    python3 ssm_check.py compare OUTDIR          # each case's xforge output (OUTDIR/CASE/got)
    python3 ssm_check.py time OUTDIR             # mamba_ssm's median ms per benchmark case

Without mamba_ssm (a machine without a GPU), the reference is xforge_ops.selective_scan_ref.
"""
import json
import zlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from xforge_ops import export, selective_scan, selective_scan_ref  # noqa: E402

try:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except ImportError:
    selective_scan_fn = None

# (batch, dim, len, state, groups, with z/D/delta_bias, dtype): lengths not a multiple of any
# chunk, groups 1 and 2, with and without the options
GRID = [
    (2, 64, 1000, 16, None, True, "f32"),
    (2, 64, 777, 16, 2, True, "f32"),
    (1, 48, 300, 8, None, False, "f32"),
    (2, 64, 1000, 16, None, True, "bf16"),
    (2, 64, 777, 16, 2, False, "bf16"),
    # larger states: 64 (two lanes a line) and 256 (eight), one sequence in several chunks
    (1, 32, 1500, 64, None, True, "f32"),
    (2, 16, 513, 256, 2, True, "bf16"),
    (1, 8, 4099, 256, None, False, "f32"),
]
# the benchmark shapes, f32 and bf16
BENCH = [(b, d, 2048, 16, None, True, dt) for (b, d) in [(1, 1536), (16, 1536), (8, 5120)] for dt in ("f32", "bf16")]
# timed by xforge only (device_ssm_traffic.sh): batch 1 of 768 channels, whose chunked layout
# keeps pass 1's Δ and u in workgroup memory (1536 channels' blocks do not fit them)
STASHED = [(1, 768, 2048, 16, None, True, dt) for dt in ("f32", "bf16")]
# mamba_ssm's test tolerances
TOL = {"f32": (6e-4, 2e-3), "bf16": (3e-2, 5e-2)}


def name(c):
    b, d, l, n, g, full, dt = c
    return f"b{b}_d{d}_l{l}_n{n}_g{g or 1}_{'full' if full else 'bare'}_{dt}"


class Scan(torch.nn.Module):
    def __init__(self, A, D, bias, full):
        super().__init__()
        self.A = torch.nn.Parameter(A)
        self.D = torch.nn.Parameter(D) if full else None
        self.bias = torch.nn.Parameter(bias) if full else None

    def forward(self, u, delta, B, C, *z):
        return selective_scan(u, delta, self.A, B, C, self.D, z[0] if z else None, self.bias, delta_softplus=True)


def tensors(c, device):
    b, d, l, n, g, full, dt = c
    torch.manual_seed(zlib.crc32(name(c).encode()))
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    proj = (b, n, l) if g is None else (b, g, n, l)
    t = dict(u=torch.randn(b, d, l), delta=0.5 * torch.rand(b, d, l), B=torch.randn(*proj), C=torch.randn(*proj))
    if full:
        t["z"] = torch.randn(b, d, l)
    t = {k: v.to(device, dtype) for k, v in t.items()}
    A = (-0.5 * torch.rand(d, n) - 0.1).to(device)
    D, bias = torch.randn(d, device=device), 0.1 * torch.randn(d, device=device)
    return t, A, D, bias


def reference(c, t, A, D, bias):
    full = c[5]
    args = (t["u"], t["delta"], A, t["B"], t["C"], D if full else None, t.get("z"), bias if full else None)
    if selective_scan_fn is not None:
        return selective_scan_fn(*args, delta_softplus=True)
    return selective_scan_ref(*args, delta_softplus=True)


def export_all(out):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for c in GRID + BENCH + STASHED:
        d = os.path.join(out, name(c))
        os.makedirs(os.path.join(d, "ref"), exist_ok=True)
        t, A, D, bias = tensors(c, device)
        m = Scan(A.cpu(), D.cpu(), bias.cpu(), c[5])
        # exported at the real shapes (static) with the case's dtype for u, delta, B, C and z (A, D
        # and delta_bias f32, as in mamba_ssm); tracing runs the reference once, on zeros
        export(m, tuple(torch.zeros(v.shape, dtype=v.dtype) for v in t.values()), os.path.join(d, "model.onnx"),
               input_names=list(t), output_names=["out"])
        if c in GRID:
            for k, v in t.items():
                np.save(os.path.join(d, f"{k}.npy"), v.float().cpu().numpy())
            with torch.no_grad():
                np.save(os.path.join(d, "ref", "out.npy"), reference(c, t, A, D, bias).float().cpu().numpy())
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(dict(case=list(c), bench=c not in GRID), f)
        print(name(c), flush=True)


def compare_all(out):
    bad = 0
    for c in GRID:
        d = os.path.join(out, name(c))
        got = np.load(os.path.join(d, "got", "out.npy")).astype(np.float64)
        want = np.load(os.path.join(d, "ref", "out.npy")).astype(np.float64)
        rtol, atol = TOL[c[6]]
        ok = np.abs(got - want) <= atol + rtol * np.abs(want)
        rel = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)
        print(f"{name(c)}: {'ok' if ok.all() else 'FAIL'} ({(~ok).sum()} elements outside rtol {rtol} / atol {atol}), relative L2 {rel:.2e}")
        bad += not ok.all()
    sys.exit(1 if bad else 0)


def time_all(out):
    from cuda_timing import median_ms
    for c in BENCH:
        t, A, D, bias = tensors(c, "cuda")
        ms = median_ms(lambda: reference(c, t, A, D, bias), runs=100, warmup=10)
        print(f"{name(c)}: mamba_ssm {ms:.3f} ms", flush=True)


if __name__ == "__main__":
    {"export": export_all, "compare": compare_all, "time": time_all}[sys.argv[1]](sys.argv[2])
