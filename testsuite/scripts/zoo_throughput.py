"""The zoo's throughput end to end against the PyTorch pipeline (issue 17, proof point 2): JPEG bytes
in memory, results on the host, images/s at each batch size, xforge and PyTorch one after another
in the same process's call on the same card.

    python3 zoo_throughput.py XFORGE WORK [--dry] [--only NAME,...] [--batches 1,32]
                              [--precisions fp32,fp16] [--seconds S]

xforge: `XFORGE zoo TASK model.onnx IMAGES... --config task.toml --bench S --batch N --json
--device gpu --precision P` (`--device interp` with --dry): every batch decodes its JPEGs (the
`image` crate, one thread per image up to the cores), packs the canvas, runs the task graph (pre-
processing + model + post-processing, one compiled graph) and reads the results into each image's
pixels. It also reports the task graph's GPU time against the model alone compiled at the same batch
and precision: what pre- and post-processing add to the GPU's busy time.

PyTorch, two rows per case (the same models, weights and task settings as zoo_reference.py builds):
- "PIL": PIL decode + torchvision transforms on the CPU (a thread pool of the same size as xforge's
  decoding threads, torch's intra-op threads set to 1 as in DataLoader workers), the batch copied to the GPU, the model (eval, `.half()` for fp16, CUDA,
  torch.inference_mode), torchvision's post-processing (softmax + top-5; the detectors' own
  `postprocess_detections` + NMS + `transform.postprocess`, i.e. `model(list_of_images)`), results
  copied to the host. The detectors take uint8 images to the GPU and make them float there.
- "GPU decode": torchvision.io.decode_jpeg on the GPU (batched), the transforms on GPU tensors, the
  rest as above: the stronger PyTorch pipeline.
Both time the same way as xforge: one untimed batch first (three for PyTorch: cuDNN picks its
algorithms), then batches for at least S seconds and at least 3, images/s over the wall clock.

Same models as zoo_reference.py (resnet50; ssdlite320_mobilenet_v3_large at 320²; retinanet_resnet50_fpn
at a fixed 512²; random weights, BatchNorm statistics from random images, heads spread so that a few
hundred boxes pass the threshold), exported here with a symbolic batch; images: its five synthetic
JPEGs (640×480 … 400×400), taken in turn. --dry: tiny models and images on the interpreter and torch's
CPU (fp32, batches 1 and 2), to check the script on a machine without a GPU.
"""
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_reference as zr  # noqa: E402

NAMES = ["resnet50", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn"]
GOAL = {"classify": 2.0, "detect": 3.0}


def xforge_bench(xforge, work, name, task, images, batch, precision, seconds, dry):
    d = os.path.join(work, name)
    args = [xforge, "zoo", task, os.path.join(d, "model.onnx"), *images, "--config", os.path.join(d, "task.toml"),
            "--bench", str(seconds), "--batch", str(batch), "--json"]
    args += ["--device", "interp"] if dry else ["--device", "gpu", "--precision", precision]
    t0 = time.time()
    p = subprocess.run(args, capture_output=True, text=True, timeout=float(os.environ.get("ZOO_TIMEOUT", "300")))
    if p.returncode != 0:
        raise RuntimeError(f"rc {p.returncode}: {p.stderr.strip()[-400:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["wall_s"] = time.time() - t0
    return r


def timed(step, batches_of, seconds, warm):
    """Images/s of `step(batch_of_bytes)` over at least `seconds` and 3 batches, after `warm` batches."""
    for _ in range(warm):
        step(batches_of())
    n, t0 = 0, time.perf_counter()
    k = 0
    while k < 3 or time.perf_counter() - t0 < seconds:
        b = batches_of()
        step(b)
        n, k = n + len(b), k + 1
    return n / (time.perf_counter() - t0)


def torch_pipelines(name, task, pipe, dev, dtype, threads):
    """The two PyTorch pipelines for one model: each takes a list of JPEG bytes and returns results
    on the host (top-5 per image; boxes, scores, labels per image in its own pixels)."""
    from PIL import Image
    import torchvision
    from torchvision.io import decode_jpeg, ImageReadMode

    m = pipe["model"].to(dev, dtype).eval()
    pool = ThreadPoolExecutor(threads)

    def pil(b):
        a = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
        return torch.from_numpy(a.copy()).permute(2, 0, 1)  # uint8 [3, H, W]

    if task == "classify":
        t = pipe["transform"]  # Resize(256) + CenterCrop(224) + float + normalize (antialias off, as the zoo)

        def head(x):
            s, i = m(x.to(dev, dtype, non_blocking=True)).float().softmax(-1).topk(5)
            return s.cpu(), i.cpu()

        def run_pil(batch):
            x = torch.stack(list(pool.map(lambda b: t(pil(b)), batch)))
            return head(x.pin_memory() if dev == "cuda" else x)

        def run_gpu(batch):
            data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in batch]
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=dev)
            return head(torch.stack([t(x) for x in imgs]))
    else:
        def post(out):
            return [{k: v.float().cpu() for k, v in o.items()} for o in out]

        def run_pil(batch):
            imgs = list(pool.map(pil, batch))
            return post(m([x.to(dev, non_blocking=True).to(dtype) / 255 for x in imgs]))

        def run_gpu(batch):
            data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in batch]
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=dev)
            return post(m([x.to(dtype) / 255 for x in imgs]))

    return {"PIL": run_pil, "GPU decode" if dev == "cuda" else "decode_jpeg (CPU)": run_gpu}


def main():
    a = sys.argv[1:]
    flags = {}
    for f in ["--only", "--batches", "--precisions", "--seconds"]:
        if f in a:
            i = a.index(f)
            flags[f] = a[i + 1]
            del a[i:i + 2]
    dry = "--dry" in a
    a = [x for x in a if x != "--dry"]
    if len(a) != 2:
        sys.exit(__doc__)
    xforge, work = a
    names = flags.get("--only", ",".join(NAMES)).split(",")
    batches = [int(b) for b in flags.get("--batches", "1,2" if dry else "1,32").split(",")]
    precisions = flags.get("--precisions", "fp32" if dry else "fp32,fp16").split(",")
    seconds = float(flags.get("--seconds", "0" if dry else "3"))
    dev = "cpu" if dry else "cuda"
    threads = os.cpu_count() or 1
    t0 = time.time()
    cfg = zr.prepare(xforge, work, dry, names, dynamic_batch=True)
    print(f"prepared in {time.time() - t0:.0f} s", flush=True)
    images = cfg["images"]
    raw = [open(p, "rb").read() for p in images]
    if not dry:
        # the thread pool is the CPU side's parallelism (as DataLoader workers of one thread each):
        # no intra-op threads on top of it; the models run on the GPU
        torch.set_num_threads(1)
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {threads} CPU threads", flush=True)
    rows = []
    for name in names:
        task, make = zr.MODELS[name]
        torch.manual_seed(0)
        built = make(name, cfg)
        pipe = built[3].torch
        for precision in precisions:
            dtype = torch.float16 if precision == "fp16" else torch.float32
            try:
                runs = torch_pipelines(name, task, pipe, dev, dtype, threads)
            except Exception as e:
                runs = {}
                print(f"{name} {precision}: PyTorch pipeline failed to build: {type(e).__name__}: {e}", flush=True)
            for batch in batches:
                row = {"name": name, "task": task, "batch": batch, "precision": "interp" if dry else precision}
                try:
                    row["x"] = xforge_bench(xforge, work, name, task, images, batch, precision, seconds, dry)
                except Exception as e:
                    row["x_err"] = f"{type(e).__name__}: {str(e)[:300]}"
                nxt = [0]

                def batches_of():
                    b = [raw[(nxt[0] + k) % len(raw)] for k in range(batch)]
                    nxt[0] = (nxt[0] + batch) % len(raw)
                    return b

                row["torch"] = {}
                with torch.inference_mode():
                    for kind, step in runs.items():
                        try:
                            row["torch"][kind] = timed(step, batches_of, seconds, 1 if dry else 3)
                        except Exception as e:
                            row["torch"][kind] = f"{type(e).__name__}: {str(e)[:200]}"
                print(json.dumps(row), flush=True)
                rows.append(row)
        del built, pipe
        if dev == "cuda":
            torch.cuda.empty_cache()
    table(rows, dry)
    print(f"done in {time.time() - t0:.0f} s", flush=True)


def table(rows, dry):
    kinds = []
    for r in rows:
        kinds += [k for k in r["torch"] if k not in kinds]
    head = ["model", "batch", "precision", "xforge images/s"]
    for k in kinds:
        head += [f"PyTorch ({k}) images/s", "ratio"]
    head += ["xforge per batch: decode / pack / device / results ms", "GPU per batch: task / model alone ms",
             "pre/post GPU share", "goal"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        x = r.get("x")
        cells = [r["name"], str(r["batch"]), r["precision"], f"{x['images_per_s']:.1f}" if x else
                 f"FAILED: {r.get('x_err', '')}"]
        ratios = []
        for k in kinds:
            t = r["torch"].get(k)
            if isinstance(t, float):
                cells.append(f"{t:.1f}")
                ratio = x["images_per_s"] / t if x else None
                ratios.append(ratio)
                cells.append(f"{ratio:.2f}x" if ratio else "-")
            else:
                cells += [str(t or "-"), "-"]
        if x:
            cells.append(f"{x['decode_ms']:.2f} / {x['pack_ms']:.2f} / {x['device_ms']:.2f} / {x['post_ms']:.2f}"
                         f" ({x['threads']} decoding threads)")
            if x.get("gpu_task_ms") is not None:
                cells.append(f"{x['gpu_task_ms']:.3f} / {x['gpu_model_ms']:.3f}")
                cells.append(f"{100 * x['prepost_gpu_share']:.1f}%")
            else:
                cells += [f"- ({x.get('gpu_error') or 'interpreter'})", "-"]
        else:
            cells += ["-", "-", "-"]
        goal = GOAL[r["task"]]
        first = ratios[0] if ratios else None
        share = x.get("prepost_gpu_share") if x else None
        verdict = "-" if dry or first is None else (
            f"{'met' if first >= goal else 'NOT met'} (≥{goal:g}x PIL)"
            + (f", share {'met' if share is not None and share < 0.10 else 'NOT met'} (<10%)"))
        cells.append(verdict)
        print("| " + " | ".join(cells) + " |")
    print("ratio: xforge images/s over PyTorch's; pre/post GPU share: (task graph − model alone) / model alone, "
          "CUDA-event medians of graph replays; goal: issue 17 (≥3x detection, ≥2x classification against the "
          "PIL pipeline; pre/post under 10% of the model's GPU time)")


if __name__ == "__main__":
    main()
