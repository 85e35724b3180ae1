"""`torch.compile(model, backend="xforge")` on the GPU machine, in one call per card: for each
model and batch (fp16), the backend's output against PyTorch fp32 (beside PyTorch's own fp16
error), its latency against `xforge bench` of the very artifact it built and against
torch.compile(mode="reduce-overhead"), and the proof that nothing is copied: the CUDA profiler
sees no memcpy or memset during a call (and outputs given to a Session are written at their own
address).

    python3 torch_backend_check.py XFORGE BENCH_DIR [NAME:BATCH ...]   (default resnet50 and
                                                                        bert_base at 1 and 32)
"""
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_timing import median_ms  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def load_models(bench):
    spec = importlib.util.spec_from_file_location("export_models", f"{bench}/export_models.py")
    em = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(em)
    return em.MODELS


def rel(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def main():
    import faulthandler

    # every thread's stack every 90 s: a hang shows where it is even when the call is cut off
    faulthandler.dump_traceback_later(90, repeat=True)
    xforge_bin, bench = sys.argv[1], sys.argv[2]
    cases = sys.argv[3:] or ["resnet50:1", "resnet50:32", "bert_base:1", "bert_base:32"]
    models = load_models(bench)
    cache = tempfile.mkdtemp(prefix="xforge-torch-")
    os.environ["XFORGE_CACHE_DIR"] = cache
    os.environ["XFORGE_TORCH_STRICT"] = "1"  # a graph xforge cannot take fails the row, with its traceback
    card = torch.cuda.get_device_name(0)
    print(f"card: {card}; fp16; medians of 200 CUDA-event-timed calls after 20")
    print("| model | batch | error vs fp32 (PyTorch fp16) | backend ms | xforge bench ms | backend / bench | "
          "callable alone ms (/ bench) | reduce-overhead ms | backend / reduce-overhead | in a call |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for case in cases:
        try:
            rows.append(check(models, xforge_bin, cache, case))
        except Exception:  # noqa: BLE001 - reported, the other rows go on
            import traceback

            print(f"| {case} | FAILED: {traceback.format_exc()[-1500:]} |", flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "torch_backend.json"), "w") as fh:
            json.dump(rows, fh, indent=1)


def check(models, xforge_bin, cache, case):
    """One row: the backend on NAME:BATCH in fp16."""
    from xforge.torch_backend import xforge_backend

    name, batch = case.split(":")
    batch = int(batch)
    torch.manual_seed(0)
    model, x1 = models[name]()
    model = model.eval().cuda()
    if x1.is_floating_point():
        x = torch.randn((batch,) + tuple(x1.shape[1:]), device="cuda")
    else:
        x = torch.randint(0, 4000, (batch,) + tuple(x1.shape[1:]), device="cuda")
    with torch.inference_mode():
        want = model(x).float()
        model = model.half()
        xh = x.half() if x.is_floating_point() else x
        torch16 = rel(model(xh), want)
        before = set(glob.glob(os.path.join(cache, "torch", "*.xfa")))
        torch._dynamo.reset()
        captured = []

        def backend(gm, example_inputs, **kw):
            run = xforge_backend(gm, example_inputs, **kw)
            captured.append((run, list(example_inputs)))
            return run

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f = torch.compile(model, backend=backend)
            y = f(xh)
        fell_back = [str(v.message)[:200] for v in w if "PyTorch runs" in str(v.message)]
        err = rel(y, want)
        ms = median_ms(lambda: f(xh), runs=200, warmup=20)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            f(xh)
            torch.cuda.synchronize()
        copies = sorted({e.name for e in prof.events() if "memcpy" in e.name.lower()})
        memsets = len([e for e in prof.events() if "memset" in e.name.lower()])
        # the backend's callable alone, dynamo's guards and frame handling left out (the one
        # graph's example inputs: the parameters dynamo passes, the input in its place)
        alone_ms = None
        if len(captured) == 1:
            run, ex = captured[0]
            args = [xh if (t.shape == xh.shape and t.dtype == xh.dtype) else t for t in ex]
            alone_ms = median_ms(lambda: run(*args), runs=200, warmup=20)
            print(f"  ({name}:{batch}: call path {getattr(run, 'lean_why', '?')[:300]}, "
                  f"{getattr(run, 'lean_calls', '?')} lean calls)", flush=True)
        kernels = len([e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA])
        arts = sorted(set(glob.glob(os.path.join(cache, "torch", "*.xfa"))) - before)
        bench_ms = None
        if len(arts) == 1:
            r = subprocess.run([xforge_bin, "bench", arts[0], "--runs", "200", "--warmup", "20"],
                               capture_output=True, text=True)
            m = re.search(r"median ([0-9.]+) ms", r.stdout)
            bench_ms = float(m.group(1)) if m else None
        torch._dynamo.reset()
        ro = torch.compile(model, mode="reduce-overhead")
        ro_ms = median_ms(lambda: ro(xh), runs=200, warmup=20)
    row = {"model": name, "batch": batch, "error": err, "torch_fp16": torch16, "backend_ms": ms,
           "bench_ms": bench_ms, "reduce_overhead_ms": ro_ms, "copies": copies, "cuda_events": kernels,
           "artifacts": len(arts), "fell_back": fell_back, "alone_ms": alone_ms, "memsets": memsets}
    ratio = f"{ms / bench_ms:.3f}" if bench_ms else "—"
    alone = f"{alone_ms:.3f} ({alone_ms / bench_ms:.3f})" if alone_ms and bench_ms else "—"
    print(f"| {name} | {batch} | {err:.1e} ({torch16:.1e}) | {ms:.3f} | {bench_ms if bench_ms else '—'} | {ratio} | "
          f"{alone} | {ro_ms:.3f} | {ms / ro_ms:.2f} | {len(copies)} memcpy, {memsets} memset of {kernels} CUDA "
          f"events |", flush=True)
    if fell_back or len(arts) != 1:
        print(f"  ({name}:{batch}: {len(arts)} artifacts built, fallbacks: {fell_back})", flush=True)
    return row


if __name__ == "__main__":
    main()
