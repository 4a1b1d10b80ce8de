"""Where fff-c-opt's AMX path spends its time: the C library built with -DFFFC_AMX_PROFILE (in a
separate cache directory), one kernel at 1x11 d = 768 bf16, time stamps per part and thread.

    python scripts/profile_amx.py [--batch 16384] [--group 256] [--chunk 512] [--prefetch 2] [--calls 30] [--cold]

Parts: block 0 (tile products straight from x), logits (later blocks' tile products), walk (the
scalar steps through a block), bag (activations, output tiles, y stores), regather (staged rows
into their child's stage), gather (a unit's x rows into its stage), sort. Milliseconds per call
and thread; the wall time per call beside them.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import sys
import tempfile
import time

import numpy as np

PARTS = ["block 0", "logits", "walk", "bag", "regather", "gather", "sort"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--group", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--cold", action="store_true", help="write 512 MiB between calls (as an interleaved "
                    "benchmark's other kernels do): x and the weights come from DRAM")
    a = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="fffbench-amx-profile-")
    os.environ["FFFBENCH_CACHE_DIR"] = cache
    os.environ["CC"] = f"{os.environ.get('CC', 'cc')} -DFFFC_AMX_PROFILE"
    try:
        import fffbench as fb
        from fffbench.backends import _cbuild, c_cpu
        from fffbench.env import pinned_threads

        layer = fb.FFF(width=768, depth=11)
        w = layer.init_weights(seed=0)
        with pinned_threads(2):
            k = c_cpu.build_fff_opt(layer, w, device="cpu", dtype="bfloat16", threads=2,
                                    params={"amx": 1, "agroup": a.group, "chunk": a.chunk, "amxpf": a.prefetch})
            lib = _cbuild.load().lib
            x = k.prepare(fb.make_input("gaussian", a.batch, 768, seed=0))
            out = (ctypes.c_uint64 * (8 * len(PARTS)))()
            for _ in range(3):
                k.run(x)
            lib.fffc_amx_profile(out)
            c0 = time.perf_counter_ns(), _tsc(lib)
            walls = []
            junk = np.zeros(64 << 20) if a.cold else None
            for _ in range(a.calls):
                if junk is not None:
                    junk += 1.0
                t = time.perf_counter()
                k.run(x)
                walls.append(time.perf_counter() - t)
            c1 = time.perf_counter_ns(), _tsc(lib)
            lib.fffc_amx_profile(out)
        hz = (c1[1] - c0[1]) / ((c1[0] - c0[0]) * 1e-9) if c1[1] > c0[1] else 2.6e9
        print(f"# {k.describe()}")
        print(f"# B={a.batch}, {a.calls} calls, wall per call median {1e3 * np.median(walls):.3f} ms "
              f"(min {1e3 * min(walls):.3f}); time stamp counter {hz / 1e9:.2f} GHz")
        for th in range(2):
            row = [out[th * len(PARTS) + i] / a.calls / hz * 1e3 for i in range(len(PARTS))]
            print(f"thread {th}: " + "  ".join(f"{n} {v:.3f}" for n, v in zip(PARTS, row)) +
                  f"  | sum {sum(row):.3f} ms")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


def _tsc(lib) -> int:
    fn = lib.fffc_tsc
    fn.restype = ctypes.c_uint64
    return fn()


if __name__ == "__main__":
    sys.exit(main())
