"""Where fff-c-opt spends its time at a large batch: the C library built with -DFFFC_PROFILE (in a
separate cache directory), one kernel at 1x11 d = 768, time stamps per part and thread.

    python scripts/profile_cpu.py [--dtype bfloat16] [--batch 16384] [--calls 30] [--cold]
                                  [--group 256] [--chunk 256] [--prefetch 1]   # bf16: the AMX path
    python scripts/profile_cpu.py --dtype float32 [--params '{"S": 6, ...}']   # the bucketed schedule

bfloat16 times the AMX path with the plan given (group, chunk, prefetch): block 0 (tile products
straight from x), logits (later blocks' tile products), walk (the steps through a block), bag
(activations, output tiles, y stores), regather (staged rows into their child's stage), gather (a
unit's x rows into its stage), sort. float32 times the bucketed schedule as tuned at build (or with
--params): phase 1, phase 2 without its bag, the bag, the sort. Milliseconds per call and thread,
the wall time per call beside them. Warm by default (calls back to back, as `fffbench run` times
them); --cold writes 512 MiB between calls, as an interleaved benchmark's other kernels do.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

AMX_PARTS = ["block 0", "logits", "walk", "bag", "regather", "gather", "sort"]
BUCKET_PARTS = ["phase 1", "phase 2", "bag", "sort"]  # Q_* in fffc_opt.c; phase 2 includes its bag


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--group", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--params", default=None, help="float32: fff-c-opt parameters as JSON (default: tuned)")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--cold", action="store_true")
    a = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="fffbench-profile-")
    os.environ["FFFBENCH_CACHE_DIR"] = cache
    os.environ["CC"] = f"{os.environ.get('CC', 'cc')} -DFFFC_PROFILE"
    try:
        import fffbench as fb
        from fffbench.backends import _cbuild, c_cpu
        from fffbench.env import pinned_threads

        layer = fb.FFF(width=768, depth=11)
        w = layer.init_weights(seed=0)
        if a.dtype == "bfloat16":
            params, names = {"amx": 1, "agroup": a.group, "chunk": a.chunk, "amxpf": a.prefetch}, AMX_PARTS
        else:
            params, names = (json.loads(a.params) if a.params else None), BUCKET_PARTS
        with pinned_threads(2):
            k = c_cpu.build_fff_opt(layer, w, device="cpu", dtype=a.dtype, threads=2,
                                    **({"params": params} if params else {}))
            lib = _cbuild.load().lib
            lib.fffc_tsc.restype = ctypes.c_uint64
            x = k.prepare(fb.make_input("gaussian", a.batch, 768, seed=0))
            out = (ctypes.c_uint64 * 64)()
            for _ in range(3):
                k.run(x)
            lib.fffc_profile(out)
            c0 = time.perf_counter_ns(), lib.fffc_tsc()
            walls = []
            junk = np.zeros(64 << 20) if a.cold else None
            for _ in range(a.calls):
                if junk is not None:
                    junk += 1.0
                t = time.perf_counter()
                k.run(x)
                walls.append(time.perf_counter() - t)
            c1 = time.perf_counter_ns(), lib.fffc_tsc()
            lib.fffc_profile(out)
        hz = (c1[1] - c0[1]) / ((c1[0] - c0[0]) * 1e-9) if c1[1] > c0[1] else 2.6e9
        print(f"# {k.describe()}")
        print(f"# B={a.batch} {a.dtype}, {a.calls} calls{' (cold)' if a.cold else ''}, wall per call median "
              f"{1e3 * np.median(walls):.3f} ms (min {1e3 * min(walls):.3f}); time stamp counter {hz / 1e9:.2f} GHz")
        for th in range(2):
            row = [out[th * 8 + i] / a.calls / hz * 1e3 for i in range(len(names))]
            if names is BUCKET_PARTS:
                row[1] -= row[2]  # phase 2 without its bag
                shown = ["phase 1", "phase 2 walk", "bag", "sort"]
            else:
                shown = names
            print(f"thread {th}: " + "  ".join(f"{n} {v:.3f}" for n, v in zip(shown, row)) +
                  f"  | sum {sum(row):.3f} ms")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
