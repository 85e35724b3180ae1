#!/usr/bin/env python3
"""The importer's accept/refuse verdicts beside onnxruntime's, on a corpus of models.

    python3 testsuite/scripts/verdicts.py [--out REPORT.md] [--tsv ALL.tsv] [--limit N] [--check] DIR_OR_FILE...

Every `*.onnx` (or any file, inside a fuzz corpus folder) is loaded by onnxruntime (an
InferenceSession on the CPU provider: its checker, type and shape inference, graph resolution and
kernel lookup) and by xforge's importer (`target/release/verdicts`: what every entry point runs).
onnxruntime runs in a worker process that is restarted past a file that crashes it or hangs it
for --timeout seconds, so a hostile corpus cannot stop the survey.

onnxruntime's NOT_IMPLEMENTED (no CPU kernel for a valid op or type) is not a verdict on the
model's validity, nor is xforge's "unsupported" (an op or data type it does not take): both are
counted apart. What the report lists is the real disagreement:
  - xforge accepts what onnxruntime refuses as invalid (the dangerous side), and
  - xforge refuses as invalid what onnxruntime accepts.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import sys, onnxruntime as ort
ort.set_default_logger_severity(4)
paths = open(sys.argv[1]).read().split("\n")
out = open(sys.argv[2], "a", buffering=1)
so = ort.SessionOptions()
so.log_severity_level = 4
for p in paths[int(sys.argv[3]):]:
    if not p:
        continue
    try:
        ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        v, msg = "accept", ""
    except Exception as e:
        v, msg = "refuse", str(e)
    msg = " ".join(msg.split())[:300]
    out.write(f"{v}\t{msg}\n")
"""


def ort_verdicts(paths, timeout):
    """One (verdict, message) per path; 'crash' or 'hang' where onnxruntime did."""
    with tempfile.TemporaryDirectory() as tmp:
        lst, res = os.path.join(tmp, "paths"), os.path.join(tmp, "verdicts")
        with open(lst, "w") as f:
            f.write("\n".join(paths) + "\n")
        open(res, "w").close()
        done = []
        while len(done) < len(paths):
            start = len(done)
            proc = subprocess.Popen([sys.executable, "-c", WORKER, lst, res, str(start)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seen, last = start, time.time()
            while proc.poll() is None:
                time.sleep(0.2)
                with open(res) as f:
                    n = sum(1 for _ in f)
                if n != seen:
                    seen, last = n, time.time()
                elif time.time() - last > timeout:
                    proc.kill()
                    proc.wait()
                    break
            with open(res) as f:
                lines = f.read().split("\n")[:-1]
            done = [tuple(l.split("\t", 1)) for l in lines]
            if len(done) < len(paths):  # the next file stopped the worker
                why = "hang" if proc.returncode in (-9, None) else "crash"
                with open(res, "a") as f:
                    f.write(f"{why}\tonnxruntime {why} (exit {proc.returncode})\n")
                with open(res) as f:
                    done = [tuple(l.split("\t", 1)) for l in f.read().split("\n")[:-1]]
            print(f"onnxruntime: {len(done)}/{len(paths)}", file=sys.stderr, flush=True)
        return done


def xforge_verdicts(paths):
    exe = os.path.join(ROOT, "target", "release", "verdicts")
    if not os.path.exists(exe):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "xforge-testsuite", "--bin", "verdicts"],
                       cwd=ROOT, check=True)
    out = subprocess.run([exe], input="\n".join(paths) + "\n", capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.split("\n"):
        if line:
            p, v, c, m = line.split("\t", 3)
            rows[p] = (v, c, m)
    return [rows.get(p, ("crash", "crash", "the verdicts binary stopped")) for p in paths]


def ort_class(v, msg):
    if v != "refuse":
        return v
    m = re.search(r"\[ONNXRuntimeError\] : \d+ : (\w+)", msg)
    code = m.group(1) if m else "ERROR"
    if code == "NOT_IMPLEMENTED":
        return "unimplemented"
    # valid ONNX (the ONNX reference runs it) that onnxruntime's CPU kernels decline with FAIL
    if "Batchwise recurrent operations (layout == 1) are not supported" in msg:
        return "unimplemented"
    if code == "INVALID_PROTOBUF" or "Protobuf parsing failed" in msg:
        return "decode"
    return "refuse"


def gather(args):
    paths = []
    for a in args:
        if os.path.isdir(a):
            for d, _, fs in os.walk(a):
                for f in sorted(fs):
                    if f.endswith(".onnx") or "corpus" in d:
                        paths.append(os.path.join(d, f))
        else:
            paths.append(a)
    return sorted(set(os.path.abspath(p) for p in paths))


def short(msg):
    msg = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", msg)
    msg = re.sub(r"/\S+", "FILE", msg)
    return msg[:160]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", help="markdown report (stdout if not given)")
    ap.add_argument("--tsv", help="every file's two verdicts")
    ap.add_argument("--limit", type=int, default=0, help="at most N files (an even sample)")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--examples", type=int, default=6)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 where xforge panics or accepts a model onnxruntime refuses as invalid "
                         "(xforge's own com.xforge ops aside, which onnxruntime does not know)")
    a = ap.parse_args()
    paths = gather(a.inputs)
    if a.limit and len(paths) > a.limit:
        step = len(paths) / a.limit
        paths = [paths[int(i * step)] for i in range(a.limit)]
    x = xforge_verdicts(paths)
    o = ort_verdicts(paths, a.timeout)
    table = collections.Counter()
    groups = collections.defaultdict(list)
    rows = []
    for p, (xv, xc, xm), (ov, om) in zip(paths, x, o):
        oc = ort_class(ov, om)
        xs = "unsupported" if xc in ("unsupported-op", "unsupported-dtype", "opset") else xv
        table[(xs, oc)] += 1
        rows.append((p, xv, xc, xm, oc, om))
        if xs == "accept" and oc in ("refuse", "decode"):
            groups[("xforge accepts, onnxruntime refuses", short(om))].append(p)
        elif xs == "refuse" and oc == "accept":
            groups[("xforge refuses, onnxruntime accepts", f"{xc}: {short(xm)}")].append(p)
        elif xs == "panic" or oc in ("crash", "hang"):
            groups[(f"xforge {xv}, onnxruntime {oc}", short(xm or om))].append(p)
    if a.tsv:
        with open(a.tsv, "w") as f:
            for r in rows:
                f.write("\t".join(r) + "\n")
    xs_keys = ["accept", "refuse", "unsupported", "panic", "crash"]
    oc_keys = ["accept", "refuse", "decode", "unimplemented", "crash", "hang"]
    lines = [f"{len(paths)} models; rows: xforge's verdict, columns: onnxruntime's", "",
             "| xforge \\ onnxruntime | " + " | ".join(oc_keys) + " |",
             "| --- | " + " | ".join("---" for _ in oc_keys) + " |"]
    for k in xs_keys:
        if any(table[(k, c)] for c in oc_keys):
            lines.append(f"| {k} | " + " | ".join(str(table[(k, c)]) for c in oc_keys) + " |")
    agree = sum(table[(k, k)] for k in ("accept", "refuse")) + table[("refuse", "decode")]
    judged = sum(v for (xk, ok), v in table.items() if xk in ("accept", "refuse") and ok in ("accept", "refuse", "decode"))
    lines += ["", f"agreement where both judged validity: {agree}/{judged}", ""]
    for (side, why), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        lines.append(f"- {side} ({len(ps)}): {why}")
        for p in ps[:a.examples]:
            lines.append(f"  - {os.path.relpath(p, ROOT)}")
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    if a.check:
        bad = [r for r in rows if r[1] == "panic" or
               (r[1] == "accept" and r[4] in ("refuse", "decode") and "com.xforge" not in r[5])]
        for r in bad:
            print(f"FAIL {os.path.relpath(r[0], ROOT)}: xforge {r[1]}, onnxruntime: {short(r[5])}")
        if bad:
            sys.exit(1)


if __name__ == "__main__":
    main()
