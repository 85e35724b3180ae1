"""The zoo timing table at one batch size, in one device call: every architecture of
zoo_models.py exported and compiled by xforge (fp16) and by torch.compile "reduce-overhead", by
WORKERS processes in parallel; once every worker has compiled, each model timed on a quiet card,
one at a time (a lock): PyTorch eager, torch.compile and `xforge bench`; then, one model at a
time, torch.compile "max-autotune" compiled and timed.

    ZOO_BATCH=N python3 zoo_table.py XFORGE WORKDIR [--workers 8] [--autotune-until S] [NAME ...]

max-autotune comes last and one at a time because its autotuning crashed with illegal memory
accesses (concurrently, and on some shapes alone), which poison the process; a crash ends that
worker's max-autotune column, not its other columns. A max-autotune compile starts only while
fewer than S seconds have passed since the start; a model without one gets no max-autotune
number, and the table says how many have one. Timing starts when every worker has compiled (or
after --budget seconds, which the table then says: compiles may still run beside the timings).
Detection models take one image, so they are left out above batch 1. Rows print as they are
timed (with "row:"), then the table in the zoo's order.
"""
import argparse
import copy
import json
import multiprocessing as mp
import os
import queue
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def xforge_compile(xforge, work, name):
    import zoo_models
    path = os.path.join(work, name + ".onnx")
    if not os.path.exists(path):
        zoo_models.export(name, work)
    art = os.path.join(work, f"{name}.fp16.xfa")
    r = subprocess.run([xforge, "compile", path, "--precision", "fp16", "-o", art], capture_output=True, text=True)
    return art if r.returncode == 0 else None, (r.stderr.strip().splitlines() or [""])[-1][:200]


def xforge_profile(xforge, art):
    """`xforge bench --profile`'s report: GPU time by schedule against each step's floor."""
    r = subprocess.run([xforge, "bench", art, "--runs", "50", "--warmup", "5", "--profile"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else f"profile failed: {r.stderr.strip()[-300:]}"


def below_floor(report, share=5.0, floor=60.0):
    """The generated schedules of a profile that take at least `share` % of the time and reach
    less than `floor` % of their floor: [(schedule, share, floor)]."""
    out, on = [], False
    for line in report.splitlines():
        if line.startswith("by schedule"):
            on = True
            continue
        if on and not line.startswith("  "):
            break
        m = re.match(r"\s+(\S+)\s+\d+ steps\s+[0-9.]+ ms\s+([0-9.]+)%.*floor\s+([0-9.]+)%", line)
        if on and m and not m.group(1).startswith("library"):
            if float(m.group(2)) >= share and float(m.group(3)) < floor:
                out.append((m.group(1), float(m.group(2)), float(m.group(3))))
    return out


def xforge_ms(xforge, art):
    r = subprocess.run([xforge, "bench", art, "--runs", "200", "--warmup", "20"], capture_output=True, text=True)
    m = re.search(r"median ([0-9.]+) ms", r.stdout)
    return float(m.group(1)) if m else None


def worker(k, names, args, t0, lock, autotune_lock, barrier, out):
    import torch
    import zoo_models
    from cuda_timing import median_ms
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 1024)
    ready = {}
    for n in names:
        row = {"model": n}
        try:
            row["art"], row["xforge_error"] = xforge_compile(args.xforge, args.work, n)
            m, x = zoo_models.build(n)
            m = m.cuda().half()
            x = x.cuda()
            x = x.half() if x.is_floating_point() else x
            row["m"], row["x"] = m, x
            with torch.inference_mode():
                try:
                    f = torch.compile(m, mode="reduce-overhead")
                    for _ in range(3):
                        f(x)
                    row["ro"] = f
                except Exception as e:  # the detectors' data-dependent shapes
                    row["ro_error"] = f"{type(e).__name__}: {str(e)[:160]}"
                    torch._dynamo.reset()
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        ready[n] = row
    try:
        # a worker that died must not hold the others forever
        barrier.wait(timeout=max(1.0, args.budget - (time.time() - t0)))
    except Exception:
        print(f"worker {k}: timing before every worker compiled (budget)", file=sys.stderr, flush=True)
    for n in names:
        row = ready[n]
        res = {"model": n, "worker": k}
        for key in ("error", "xforge_error", "ro_error"):
            if row.get(key):
                res[key] = row[key]
        with lock:
            if "m" in row:
                with torch.inference_mode():
                    try:
                        res["eager"] = median_ms(lambda: row["m"](row["x"]), runs=200, warmup=20)
                    except Exception as e:
                        res["error"] = f"eager: {type(e).__name__}: {str(e)[:160]}"
                    if "ro" in row:
                        try:
                            res["ro"] = median_ms(lambda: row["ro"](row["x"]), runs=200, warmup=20)
                        except Exception as e:
                            res["ro_error"] = f"{type(e).__name__}: {str(e)[:160]}"
            if row.get("art"):
                res["xforge"] = xforge_ms(args.xforge, row["art"])
                if args.profiles:
                    report = xforge_profile(args.xforge, row["art"])
                    res["below_floor"] = below_floor(report)
                    with open(args.profiles, "a") as f:
                        f.write(f"== {n} (batch {os.environ.get('ZOO_BATCH', '1')})\n{report}\n")
            res["at_s"] = round(time.time() - t0, 1)
        out.put(res)
    # max-autotune last, compiled and timed under one lock: its autotuning has crashed with
    # illegal memory accesses that poison the process, so it must not cost the other columns
    for n in names:
        row = ready[n]
        if "ro" not in row:
            continue
        res = {"model": n}
        with autotune_lock:
            if time.time() - t0 > args.autotune_until:
                continue
            try:
                with torch.inference_mode():
                    f = torch.compile(copy.deepcopy(row["m"]), mode="max-autotune")
                    for _ in range(3):
                        f(row["x"])
                    res["ma"] = median_ms(lambda: f(row["x"]), runs=200, warmup=20)
            except Exception as e:
                res["ma_error"] = f"{type(e).__name__}: {str(e)[:160]}"
                out.put(res)
                break
        out.put(res)
    out.put({"done": k})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("xforge")
    ap.add_argument("work")
    ap.add_argument("names", nargs="*")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--autotune-until", type=float, default=-1.0)
    ap.add_argument("--budget", type=float, default=480.0, help="seconds the workers wait for each other at most")
    ap.add_argument("--profiles", help="append each model's `xforge bench --profile` report to this file")
    args = ap.parse_intermixed_args()
    import zoo_models
    batch = zoo_models.batch()
    names = args.names or [n for n in zoo_models.MODELS if batch == 1 or "rcnn" not in n and "retinanet" not in n and "ssd" not in n]
    os.makedirs(args.work, exist_ok=True)
    ctx = mp.get_context("spawn")
    lock, autotune_lock, out = ctx.Lock(), ctx.Lock(), ctx.Queue()
    k = min(args.workers, len(names))
    barrier = ctx.Barrier(k)
    t0 = time.time()
    shards = [names[i::k] for i in range(k)]
    procs = [ctx.Process(target=worker, args=(i, shards[i], args, t0, lock, autotune_lock, barrier, out)) for i in range(k)]
    for p in procs:
        p.start()
    rows, done = {}, 0
    while done < k:
        try:
            r = out.get(timeout=5)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                break
            continue
        if "done" in r:
            done += 1
            continue
        rows.setdefault(r["model"], {}).update(r)
        short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if not k.endswith("error")}
        print("row:", json.dumps(short), flush=True)
    for p in procs:
        p.join()
    import torch
    card = torch.cuda.get_device_name(0)
    f3 = lambda v: f"{v:.3f}" if v else "—"
    print(f"\ncard: {card}; fp16, batch {batch}, medians of 200 CUDA-event-timed runs after 20; {time.time() - t0:.0f} s")
    print("| model | eager ms | torch.compile ms | max-autotune ms | xforge ms | xforge / torch.compile | xforge / max-autotune |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ro_r, ma_r = [], []
    for n in names:
        r = rows.get(n, {})
        xf, ro, ma = r.get("xforge"), r.get("ro"), r.get("ma")
        a = f"{xf / ro:.2f}" if xf and ro else "—"
        b = f"{xf / ma:.2f}" if xf and ma else "—"
        if xf and ro:
            ro_r.append(xf / ro)
        if xf and ma:
            ma_r.append(xf / ma)
        print(f"| {n} | {f3(r.get('eager'))} | {f3(ro)} | {f3(ma)} | {f3(xf)} | {a} | {b} |")
    import numpy as np
    g = lambda v: float(np.exp(np.mean(np.log(v)))) if v else float("nan")
    print(f"against reduce-overhead: geometric mean {g(ro_r):.3f} over {len(ro_r)} models, slower rows {sum(x > 1 for x in ro_r)}, "
          f"worst {max(ro_r) if ro_r else float('nan'):.2f}")
    print(f"against max-autotune: geometric mean {g(ma_r):.3f} over {len(ma_r)} models, slower rows {sum(x > 1 for x in ma_r)}")
    print("generated schedules at >= 5% of a model's time and < 60% of their floor:")
    for n in names:
        for sched, share, floor in rows.get(n, {}).get("below_floor", []):
            print(f"  {n}: {sched} {share:.0f}% of the time at {floor:.0f}% of its floor")
    for n in names:
        errs = {k: v for k, v in rows.get(n, {"error": "no row"}).items() if k.endswith("error") and v}
        if errs:
            print(f"  {n}: {errs}")


if __name__ == "__main__":
    main()
