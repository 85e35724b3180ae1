"""Where a device call's time goes (GPU machine): for MODEL:BATCH (fp16, export_models.py), the
artifact's `xforge bench` beside the Python paths that run it on torch tensors, each as the
median of CUDA-event-timed calls (synchronized after each, as the backend check times them) and
as the host's own time per call (calls back to back, no synchronization).

    python3 backend_overhead.py XFORGE BENCH_DIR [NAME:BATCH ...]
"""
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_timing import median_ms  # noqa: E402

import xforge  # noqa: E402


def host_us(fn, n=300):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


def main():
    xf, bench = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("export_models", f"{bench}/export_models.py")
    em = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(em)
    work = tempfile.mkdtemp()
    for case in sys.argv[3:] or ["resnet50:1", "bert_base:1"]:
        name, batch = case.split(":")
        batch = int(batch)
        torch.manual_seed(0)
        model, x1 = em.MODELS[name]()
        model = model.eval()
        x = x1.repeat(batch, *[1] * (x1.dim() - 1))
        onnx_path = os.path.join(work, f"{name}.onnx")
        torch.onnx.export(model, (x,), onnx_path, opset_version=17, dynamo=False, input_names=["input"])
        art = xforge.compile(onnx_path, precision="fp16")
        path = os.path.join(work, f"{name}_{batch}.xfa")
        art.save(path)
        r = subprocess.run([xf, "bench", path, "--runs", "200", "--warmup", "20"], capture_output=True, text=True)
        bench_ms = float(re.search(r"median ([0-9.]+) ms", r.stdout).group(1))
        s = xforge.Session(art)
        native = s._s
        (_, idt, _), = native.inputs
        xd = x.cuda().to(xforge._TORCH[idt])  # the artifact's input dtype (fp16 inside, fp32 in and out)
        (_, dt, shape), = native.outputs
        out = torch.empty(list(shape), dtype=xforge._TORCH[dt], device="cuda")
        cur = torch.cuda.current_stream().cuda_stream
        rows = {
            "native run_dlpack": lambda: native.run_dlpack([xd], [out], cur),
            "native _run_pointers": lambda: native._run_pointers([(xd.data_ptr(), xd.numel() * xd.element_size())],
                                                                 [(out.data_ptr(), out.numel() * out.element_size())],
                                                                 cur),
            "_run_pointers, output from torch.empty": lambda: native._run_pointers(
                [(xd.data_ptr(), xd.numel() * xd.element_size())],
                [(torch.empty(list(shape), dtype=out.dtype, device=xd.device).data_ptr(),
                  out.numel() * out.element_size())], cur),
            "_run_pointers, current_stream(dev)": lambda: native._run_pointers(
                [(xd.data_ptr(), xd.numel() * xd.element_size())],
                [(out.data_ptr(), out.numel() * out.element_size())],
                torch.cuda.current_stream(xd.device).cuda_stream),
            "Session.run(outputs=)": lambda: s.run([xd], outputs=[out]),
            "Session.run": lambda: s.run([xd]),
            "x.__dlpack__(stream=1)": lambda: xd.__dlpack__(stream=1),
            "torch.empty": lambda: torch.empty(list(shape), dtype=xforge._TORCH[dt], device="cuda"),
            "current_stream().cuda_stream": lambda: torch.cuda.current_stream().cuda_stream,
        }
        print(f"{name} batch {batch}: xforge bench {bench_ms:.3f} ms", flush=True)
        for k, f in rows.items():
            ev = median_ms(f, runs=200, warmup=20)
            print(f"  {k:32s} event-timed {ev:.3f} ms, host {host_us(f):7.1f} us per call", flush=True)
        # the torch.compile backend's own callable on the same model (half, as the check runs it)
        from xforge.torch_backend import xforge_backend
        captured = []

        def backend(gm, ex, **kw):
            r = xforge_backend(gm, ex, **kw)
            captured.append((r, list(ex)))
            return r

        mh = model.cuda().half()
        xh = x.cuda().half() if x.is_floating_point() else x.cuda()
        with torch.inference_mode():
            torch._dynamo.reset()
            f = torch.compile(mh, backend=backend)
            f(xh)
            run, ex = captured[0]
            args = [xh if (t.shape == xh.shape and t.dtype == xh.dtype) else t for t in ex]
            for k, fn in {"backend closure run(*args)": lambda: run(*args), "compiled module f(x)": lambda: f(xh)}.items():
                ev = median_ms(fn, runs=200, warmup=20)
                print(f"  {k:32s} event-timed {ev:.3f} ms, host {host_us(fn):7.1f} us per call", flush=True)
            # what dynamo's own settings change: guards on the modules dropped (the user's
            # option), and modules traced as attributes (parameters not graph inputs)
            variants = {
                "f(x), guards on modules skipped": lambda: torch.compile(
                    mh, backend=xforge_backend,
                    options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}),
                "f(x), inline_inbuilt_nn_modules off": lambda: torch.compile(mh, backend=xforge_backend),
            }
            for k, make in variants.items():
                torch._dynamo.reset()
                old = torch._dynamo.config.inline_inbuilt_nn_modules
                torch._dynamo.config.inline_inbuilt_nn_modules = "inline" not in k
                try:
                    g = make()
                    g(xh)
                    fn = lambda: g(xh)  # noqa: E731
                    ev = median_ms(fn, runs=200, warmup=20)
                    print(f"  {k:32s} event-timed {ev:.3f} ms, host {host_us(fn):7.1f} us per call", flush=True)
                except Exception as e:  # noqa: BLE001 - a variant dynamo refuses is reported, not fatal
                    print(f"  {k:32s} failed: {type(e).__name__}: {e}", flush=True)
                finally:
                    torch._dynamo.config.inline_inbuilt_nn_modules = old
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            sc = side.cuda_stream
            f = lambda: native.run_dlpack([xd], [out], sc)
            ev = median_ms(f, runs=200, warmup=20)
            print(f"  {'native on a side stream':32s} event-timed {ev:.3f} ms, host {host_us(f):7.1f} us per call",
                  flush=True)


if __name__ == "__main__":
    main()
