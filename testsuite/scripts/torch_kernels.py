"""PyTorch's timings of the kernels `gpu_check` benchmarks, on the same card in the same call.

Medians of 20 CUDA-event-timed calls after a warm-up, like gpu_check. Prints one line per kernel.
"""
import torch
import torch.nn.functional as F


def median_ms(fn, runs=20):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


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
