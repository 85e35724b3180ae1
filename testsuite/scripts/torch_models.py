"""PyTorch eager and torch.compile(mode="reduce-overhead") latency of the benchmark models, in
the same device call as `xforge bench` (median of CUDA-event-timed calls after a warm-up).

    python3 torch_models.py BENCH_DIR NAME[:fp16] ...      (BENCH_DIR holds export_models.py)

fp32 runs without TF32, like xforge's fp32.
"""
import importlib.util
import sys

import torch
from cuda_timing import median_ms

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
spec = importlib.util.spec_from_file_location("export_models", f"{sys.argv[1]}/export_models.py")
em = importlib.util.module_from_spec(spec)
spec.loader.exec_module(em)


torch.manual_seed(0)
for name in sys.argv[2:]:
    base, half = name.split(":")[0], name.endswith(":fp16")
    model, x = em.MODELS[base]()
    model = model.eval().cuda()
    x = x.cuda()
    if half:
        model = model.half()
        x = x.half() if x.is_floating_point() else x
    with torch.inference_mode():
        eager = median_ms(lambda: model(x), runs=200, warmup=20)
        compiled = torch.compile(model, mode="reduce-overhead")
        fast = median_ms(lambda: compiled(x), runs=200, warmup=20)
    print(f"{name} batch {x.shape[0]}: eager {eager:.3f} ms, torch.compile {fast:.3f} ms", flush=True)
