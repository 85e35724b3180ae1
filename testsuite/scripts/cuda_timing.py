"""The one timing rule of the PyTorch baselines: the median of CUDA-event-timed calls after a
warm-up (like gpu_check and xforge bench)."""
import torch


def median_ms(fn, runs=20, warmup=1):
    for _ in range(warmup):
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
