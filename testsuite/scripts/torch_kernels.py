"""PyTorch's timings of the kernels `gpu_check` benchmarks, on the same card in the same call.

Medians of 20 CUDA-event-timed calls after a warm-up, like gpu_check. Prints one line per kernel.
"""
import torch
import torch.nn.functional as F
from cuda_timing import median_ms


def report(name, ms, moved):
    print(f"{name}: median {ms:.3f} ms, {moved / ms / 1e6:.0f} GB/s moved ({moved >> 20} MiB)")


for rows in (4096, 16384):
    x = torch.randn(rows, 4096, device="cuda", dtype=torch.float16)
    y = torch.empty_like(x)
    w, b = torch.randn(4096, device="cuda", dtype=torch.float16), torch.randn(4096, device="cuda", dtype=torch.float16)
    moved = 2 * x.numel() * x.element_size()
    report(f"copy_ [{rows},4096] f16", median_ms(lambda: y.copy_(x)), moved)
    report(f"softmax [{rows},4096] f16", median_ms(lambda: torch.softmax(x, -1)), moved)
    report(f"layer_norm [{rows},4096] f16", median_ms(lambda: F.layer_norm(x, (4096,), w, b)), moved)
    report(f"relu(layer_norm) [{rows},4096] f16", median_ms(lambda: F.relu(F.layer_norm(x, (4096,), w, b))), moved)
for dt, n in ((torch.float32, 64 << 20), (torch.float16, 128 << 20)):
    x = torch.randn(n, device="cuda", dtype=dt)
    y = torch.empty_like(x)
    moved = 2 * x.numel() * x.element_size()
    report(f"copy_ {n} {dt}", median_ms(lambda: y.copy_(x)), moved)
    report(f"relu {n} {dt}", median_ms(lambda: torch.relu(x)), moved)

# the other templates' bench cases (kernel_cases' bench_* at the same shapes), bytes in + out
x = torch.randn(64, 64, 112, 112, device="cuda", dtype=torch.float16)
for name, fn in (
    ("maxpool 3x3/2 pad 1 ceil + relu", lambda: F.relu(F.max_pool2d(x, 3, 2, 1, ceil_mode=True))),
    ("avgpool 2x2/2 + relu", lambda: F.relu(F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 2))),
    ("global avgpool + relu", lambda: F.relu(x.mean((2, 3), keepdim=True))),
):
    out = fn()
    report(f"{name} [64,64,112,112] f16", median_ms(fn), (x.numel() + out.numel()) * 2)
x = torch.randn(16384, 8192, device="cuda", dtype=torch.float16)
report("sum(0)*0.5 [16384,8192] f16", median_ms(lambda: x.sum(0) * 0.5), (x.numel() + 8192) * 2)
x = torch.randn(8, 4096, 2048, device="cuda", dtype=torch.float16)
report("cumsum axis 1 [8,4096,2048] f16", median_ms(lambda: torch.cumsum(x, 1)), 2 * x.numel() * 2)
x = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
report("transpose [8192,8192] f16", median_ms(lambda: x.t().contiguous()), 2 * x.numel() * 2)
x = torch.randn(8192, 4096, device="cuda", dtype=torch.float32)
report("transpose [8192,4096] f32", median_ms(lambda: x.t().contiguous()), 2 * x.numel() * 4)
for n in (98, 122):
    x = torch.empty(n << 18, device="cuda", dtype=torch.float16)
    y = torch.empty_like(x)
    report(f"copy_ {n} MiB moved", median_ms(lambda: y.copy_(x)), 2 * x.numel() * 2)

# contractions (kernel_cases' bench_gemm_gelu_* and bench_attention_*), as TFLOP/s; fp32 without TF32
torch.backends.cuda.matmul.allow_tf32 = False
for dt in (torch.float32, torch.float16):
    x = torch.randn(4096, 4096, device="cuda", dtype=dt)
    w = torch.randn(4096, 4096, device="cuda", dtype=dt)
    b = torch.randn(4096, device="cuda", dtype=dt)
    ms = median_ms(lambda: F.gelu(torch.addmm(b, x, w)))
    print(f"gelu(x@w+b) 4096^3 {dt}: median {ms:.3f} ms, {2 * 4096**3 / ms / 1e9:.1f} TFLOP/s")
    mm = median_ms(lambda: x @ w)
    print(f"x@w 4096^3 {dt}: median {mm:.3f} ms, {2 * 4096**3 / mm / 1e9:.1f} TFLOP/s")
for dt in (torch.float16, torch.bfloat16, torch.float32):
    q, k, v = (torch.randn(8, 16, 2048, 64, device="cuda", dtype=dt) for _ in range(3))
    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    print(f"sdpa [8,16,2048,64] {dt}: median {ms:.3f} ms, {4 * 8 * 16 * 2048**2 * 64 / ms / 1e9:.1f} TFLOP/s")
