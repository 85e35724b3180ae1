"""The model zoo check on the GPU machine: every architecture of zoo_models.py compiled by xforge
in fp32 and fp16, run on the GPU, compared with PyTorch fp32 (PyTorch's own fp16 error beside
xforge's), and timed against PyTorch eager and torch.compile(mode="reduce-overhead").

    python3 zoo_check.py XFORGE WORKDIR check [NAME ...]     correctness table
    python3 zoo_check.py XFORGE WORKDIR warm [NAME ...]      fills Inductor's cache (run in parallel)
    python3 zoo_check.py XFORGE WORKDIR time [NAME ...]      timing table (fp16, batch 1)

Bounds: fp32 within 1e-4 of PyTorch fp32 (relative L2); fp16 within 3x PyTorch's own fp16
error or 1e-2, whichever is larger. Random-weight CNNs can overflow fp16 in PyTorch too: the
table shows PyTorch's fp16 error so such rows read as what they are. Detections (boxes, scores,
labels) are compared in a canonical order, since near-equal scores may swap places.
"""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_models  # noqa: E402
from cuda_timing import median_ms  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    d = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / d) if d else float(np.linalg.norm(a - b))


def as_list(y):
    if isinstance(y, (tuple, list)):
        return [t for t in y]
    return [y]


def canon(outs):
    """Detections (boxes, scores, labels) in an order that does not depend on score ties."""
    boxes, scores, labels = outs
    keys = [np.round(boxes[:, k], 2) for k in (3, 2, 1, 0)]
    o = np.lexsort(keys + [np.round(scores, 4), labels])
    return [boxes[o], scores[o], labels[o]]


def iou(a, b):
    """IoU of every box of a [n,4] with every box of b [m,4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def missed(got, want):
    """The fraction of reference detections (boxes, scores, labels) that `got` does not
    reproduce: greedily, in the reference's score order, each matched once by a detection of the
    same label with IoU >= 0.5. 0 for identical detections; 1 when none is found."""
    (gb, _, gl), (wb, ws, wl) = got, want
    if len(wb) == 0:
        return 0.0 if len(gb) == 0 else 1.0
    m = iou(np.asarray(wb, np.float64), np.asarray(gb, np.float64)) if len(gb) else np.zeros((len(wb), 0))
    taken = np.zeros(len(gb), bool)
    found = 0
    for i in np.argsort(-np.asarray(ws), kind="stable"):
        ok = np.flatnonzero((m[i] >= 0.5) & (np.asarray(gl) == wl[i]) & ~taken)
        if len(ok):
            taken[ok[np.argmax(m[i][ok])]] = True
            found += 1
    return 1.0 - found / len(wb)


def errors(got, want, det):
    if det:
        # detections are compared as sets: half precision moves scores across ties and the
        # threshold, so counts may differ; exact equality of sets still gives 0
        if all(g.shape == w.shape for g, w in zip(got, want)):
            exact = errors(canon(got), canon(want), False)
            if exact <= 1e-4:
                return exact
        return missed(got, want)
    errs = []
    for g, w in zip(got, want):
        if np.issubdtype(w.dtype, np.floating):
            errs.append(rel_l2(g, w))
        else:
            errs.append(0.0 if np.array_equal(g, w) else float("inf"))
    return max(errs) if errs else float("inf")


def torch_outputs(m, x, half):
    dev = torch.device("cuda")
    m = m.to(dev)
    xx = x.to(dev)
    if half:
        m = m.half()
        xx = xx.half() if xx.is_floating_point() else xx
    with torch.inference_mode():
        y = as_list(m(xx))
    return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in y]


def run_xforge(xforge, onnx_path, inp, precision, work, name):
    import onnx
    art = os.path.join(work, f"{name}.{precision}.xfa")
    t = time.time()
    r = subprocess.run([xforge, "compile", onnx_path, "--precision", precision, "-o", art], capture_output=True, text=True)
    secs = time.time() - t
    if r.returncode != 0:
        return None, secs, r.stderr.strip().splitlines()[-1][:240] if r.stderr.strip() else f"exit {r.returncode}"
    out = os.path.join(work, f"{name}.{precision}.out")
    r = subprocess.run([xforge, "run", art, "--input", f"input={inp}", "--output-dir", out], capture_output=True, text=True)
    if r.returncode != 0:
        return None, secs, "run: " + (r.stderr.strip().splitlines()[-1][:240] if r.stderr.strip() else f"exit {r.returncode}")
    names = [o.name for o in onnx.load(onnx_path, load_external_data=False).graph.output]
    return [np.load(os.path.join(out, re.sub(r"[^A-Za-z0-9._-]", "_", n) + ".npy")) for n in names], secs, ""


def check(xforge, work, name):
    t0 = time.time()
    m, x = zoo_models.build(name)
    path = os.path.join(work, name + ".onnx")
    if not os.path.exists(path):
        zoo_models.export(name, work)
    t_export = time.time() - t0
    inp = os.path.join(work, name + ".input.npy")
    np.save(inp, x.numpy())
    det = isinstance(m, zoo_models.Det)
    want = torch_outputs(m, x, False)
    try:
        want16 = torch_outputs(zoo_models.build(name)[0], x, True)
        torch16 = errors(want16, want, det)
    except Exception as e:  # some models do not run in half precision in PyTorch
        torch16 = float("nan")
    row = {"model": name, "torch_fp16": torch16, "export_s": round(t_export, 1), "torch_s": round(time.time() - t0 - t_export, 1)}
    for p in ("fp32", "fp16"):
        got, secs, err = run_xforge(xforge, path, inp, p, work, name)
        row[p + "_compile_s"] = round(secs, 2)
        row[p] = errors(got, want, det) if got is not None else None
        row[p + "_error"] = err
    row["total_s"] = round(time.time() - t0, 1)
    bound16 = max(3 * torch16 if torch16 == torch16 else 0.0, 1e-2)
    row["ok"] = row["fp32"] is not None and row["fp32"] <= 1e-4 and row["fp16"] is not None and row["fp16"] <= bound16
    return row


def fmt(v):
    if v is None:
        return "—"
    if v != v:
        return "n/a"
    return f"{v:.1e}"


def xforge_ms(xforge, work, name):
    art = os.path.join(work, f"{name}.fp16.xfa")
    if not os.path.exists(art):
        path = os.path.join(work, name + ".onnx")
        if not os.path.exists(path):
            zoo_models.export(name, work)
        r = subprocess.run([xforge, "compile", path, "--precision", "fp16", "-o", art], capture_output=True, text=True)
        if r.returncode != 0:
            return None
    r = subprocess.run([xforge, "bench", art, "--runs", "200", "--warmup", "20"], capture_output=True, text=True)
    m = re.search(r"median ([0-9.]+) ms", r.stdout)
    return float(m.group(1)) if m else None


def torch_ms(name, compiled):
    # a model torch.compile cannot trace (the detectors' data-dependent shapes) must not leave
    # Dynamo's state to fail every model after it
    torch._dynamo.reset()
    m, x = zoo_models.build(name)
    m = m.cuda().half()
    x = x.cuda()
    x = x.half() if x.is_floating_point() else x
    with torch.inference_mode():
        f = torch.compile(m, mode="reduce-overhead") if compiled else m
        return median_ms(lambda: f(x), runs=200, warmup=20)


def main():
    xforge, work, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    names = sys.argv[4:] or list(zoo_models.MODELS)
    os.makedirs(work, exist_ok=True)
    card = torch.cuda.get_device_name(0)
    if mode == "check":
        print(f"card: {card}")
        print("| model | xforge fp32 | xforge fp16 | PyTorch fp16 | compile s (fp32/fp16) | result |")
        print("| --- | --- | --- | --- | --- | --- |")
        rows = []
        for n in names:
            try:
                r = check(xforge, work, n)
            except Exception as e:  # report and go on
                r = {"model": n, "ok": False, "fp32": None, "fp16": None, "torch_fp16": float("nan"),
                     "fp32_error": f"{type(e).__name__}: {str(e)[:200]}", "fp16_error": "", "fp32_compile_s": 0, "fp16_compile_s": 0}
            rows.append(r)
            why = r.get("fp32_error") or r.get("fp16_error") or ""
            print(f"| {n} | {fmt(r['fp32'])} | {fmt(r['fp16'])} | {fmt(r['torch_fp16'])} | "
                  f"{r['fp32_compile_s']}/{r['fp16_compile_s']} | {'ok' if r['ok'] else 'FAIL ' + why} |", flush=True)
            print(f"  ({n}: export {r.get('export_s')} s, PyTorch {r.get('torch_s')} s, all {r.get('total_s')} s)", file=sys.stderr, flush=True)
        print(f"{sum(r['ok'] for r in rows)} of {len(rows)} pass")
        out = os.environ.get("OUT")
        if out:
            with open(os.path.join(out, f"zoo_check{os.environ.get('ZOO_SHARD', '')}.json"), "w") as f:
                json.dump(rows, f, indent=1)
    elif mode == "warm":
        for n in names:
            try:
                torch_ms(n, True)
            except Exception as e:
                print(f"{n}: torch.compile failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
    elif mode == "time":
        print(f"card: {card}; fp16, batch {zoo_models.batch()}, medians of 200 CUDA-event-timed runs after 20")
        print("| model | eager ms | torch.compile ms | xforge ms | xforge / torch.compile | xforge / eager |")
        print("| --- | --- | --- | --- | --- | --- |")
        ratios = []
        for n in names:
            xf = xforge_ms(xforge, work, n)
            try:
                eager = torch_ms(n, False)
            except Exception:
                eager = None
            try:
                comp = torch_ms(n, True)
            except Exception:
                comp = None
            rc = f"{xf / comp:.2f}" if xf and comp else "—"
            re_ = f"{xf / eager:.2f}" if xf and eager else "—"
            if xf and comp:
                ratios.append(xf / comp)
            f3 = lambda v: f"{v:.3f}" if v else "—"
            print(f"| {n} | {f3(eager)} | {f3(comp)} | {f3(xf)} | {rc} | {re_} |", flush=True)
        if ratios:
            g = float(np.exp(np.mean(np.log(ratios))))
            print(f"geometric mean xforge / torch.compile: {g:.3f} over {len(ratios)} models; slower rows: "
                  f"{sum(r > 1.0 for r in ratios)}")


if __name__ == "__main__":
    main()
