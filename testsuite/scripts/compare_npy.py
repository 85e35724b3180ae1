"""Relative L2 between the .npy outputs of two `xforge run` output folders.

    python3 compare_npy.py GOT_DIR WANT_DIR [BOUND]

Prints one line per output; exits 1 if any exceeds BOUND (default 1e-4) or is missing.
"""
import pathlib
import sys

import numpy as np

got, want = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
bound = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
bad = 0
for w in sorted(want.glob("*.npy")):
    g = got / w.name
    if not g.exists():
        print(f"{w.name}: missing")
        bad += 1
        continue
    a, b = np.load(g).astype(np.float64), np.load(w).astype(np.float64)
    rel = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
    print(f"{w.name}: shape {a.shape}, relative L2 {rel:.3e}")
    bad += not (rel <= bound)
sys.exit(1 if bad else 0)
