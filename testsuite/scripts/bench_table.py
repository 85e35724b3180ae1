"""The benchmark table: xforge against PyTorch eager and torch.compile, from one device call's log.

    python3 bench_table.py LOG

Reads `xforge bench` lines (artifacts named /…/b<BATCH>/<MODEL>.xfa) and `torch_models.py`
lines, prints a Markdown table of medians with the ratios xforge / torch.compile and xforge /
eager, and the geometric mean of xforge / torch.compile.
"""
import math
import re
import sys

xf, pt = {}, {}
for line in open(sys.argv[1]):
    m = re.search(r"/b(\d+)/(\w+)\.xfa: \d+ runs after \d+ warm-up: median ([\d.]+) ms", line)
    if m:
        xf[(m.group(2), int(m.group(1)))] = float(m.group(3))
    m = re.search(r"^(\w+):fp16 batch (\d+): eager ([\d.]+) ms, torch.compile ([\d.]+) ms", line)
    if m:
        pt[(m.group(1), int(m.group(2)))] = (float(m.group(3)), float(m.group(4)))

print("| model | batch | eager ms | torch.compile ms | xforge ms | xforge / torch.compile | xforge / eager |")
print("| --- | --- | --- | --- | --- | --- | --- |")
ratios = []
for key in sorted(set(xf) | set(pt)):
    x = xf.get(key)
    e, c = pt.get(key, (None, None))
    f = lambda v: "—" if v is None else f"{v:.3f}"
    rc = x / c if x and c else None
    re_ = x / e if x and e else None
    if rc:
        ratios.append(rc)
    print(f"| {key[0]} | {key[1]} | {f(e)} | {f(c)} | {f(x)} | {f(rc)} | {f(re_)} |")
if ratios:
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"\ngeometric mean of xforge / torch.compile over {len(ratios)} rows: {geo:.3f}")
    print(f"rows where xforge is slower than torch.compile: {sum(r > 1 for r in ratios)}")
