"""Paired, interleaved timing of CPU backends in one process (the method of notes/cpu-kernels.md).

Every round calls each backend's timed call (``Kernel.run`` on a prepared input) once, in turn
(A B C A B C ...), so a co-tenant taking a core hits all of them alike; ratios are the median of
per-round ratios. Steal time (/proc/stat) is read around the rounds and printed with the CPU.

    python scripts/bench_cpu.py --batch 16384 fff-c-opt ff-dense@3072 [--dtype bfloat16]
    python scripts/bench_cpu.py --copy          # the copy-bandwidth floor, 2 threads

A spec is BACKEND[@H] (H: the dense width; FFF specs use the 1x11 tree) or BACKEND:KEY=VAL,...
for fff-c-opt parameters (e.g. fff-c-opt:S=5,tile=64). The spec ``copy-floor`` is the memory floor
of the FFF layer measured in the same rounds: a 2-thread copy moving its compulsory bytes (x read,
y written, weights read once; half of them copied), so "within 2x of the floor" is a paired ratio
like any other and moves with the host's bandwidth as the kernels do. Run it under the CPU lock:
``flock /tmp/fffbench-cpu.lock python scripts/bench_cpu.py ...``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def cpu_line() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    info = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}
    flags = set(info.get("Flags", "").split())
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"{info.get('Model name', '?')} family {info.get('CPU family', '?')} model {info.get('Model', '?')}, "
            f"{info.get('CPU(s)', '?')} CPUs, L2 {info.get('L2 cache', '?')}, L3 {info.get('L3 cache', '?')}, "
            f"{' '.join(isa)}")


def stat() -> tuple[int, int, int, int]:
    """(steal, total, busy of all CPUs, this process's CPU) in jiffies: busy minus ours is what other
    processes in this VM took, steal what the host gave to other VMs."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    with open("/proc/self/stat") as f:
        mine = f.read().rsplit(")", 1)[1].split()
    return v[7], sum(v[:8]), sum(v[:8]) - v[3] - v[4] - v[7], int(mine[11]) + int(mine[12])


def others_load(s0, s1) -> float:
    """CPUs' worth of time other processes of this VM used between two stat() readings."""
    total = max(1, s1[1] - s0[1]) / (os.cpu_count() or 1)
    return max(0, (s1[2] - s0[2]) - (s1[3] - s0[3])) / total


def wait_quiet(limit_s: float = 120, threshold: float = 0.15) -> float:
    """Wait (up to limit_s) until other processes use less than ``threshold`` CPUs for a second;
    returns the seconds waited. A build or test run beside the measurement takes a core from one of
    the kernel's two threads and doubles or triples its time."""
    t0 = time.time()
    while time.time() - t0 < limit_s:
        s0 = stat()
        time.sleep(1.0)
        if others_load(s0, stat()) < threshold:
            break
    return time.time() - t0


class CopyFloor:
    """A copy of half the FFF layer's compulsory bytes (so that the bytes read plus written equal
    them), with the C library's streaming copy on resident buffers."""

    def __init__(self, nbytes: int, threads: int):
        from fffbench.backends._cpu import StreamingCopy

        self.copy, self.n = StreamingCopy(nbytes // 2, threads), nbytes // 2

    def run(self, _x):
        self.copy()

    def describe(self) -> str:
        return f"copy of {self.n / 1e6:.0f} MB: {2 * self.n / 1e6:.0f} MB read + written"


def build(spec: str, batch: int, dtype: str, threads: int):
    import fffbench as fb

    if spec == "copy-floor":
        itemsize = 2 if dtype == "bfloat16" else 4
        return CopyFloor(int(fb.FFF(width=768, depth=11).compulsory_bytes(batch, itemsize)), threads), None
    name, _, opts = spec.partition(":")
    name, _, h = name.partition("@")
    b = fb.get_backend(name)
    layer = fb.FF(width=768, hidden=int(h or 3072)) if b.family == "ff" else fb.FFF(width=768, depth=11)
    w = layer.init_weights(seed=0)
    kw = {}
    if opts:
        kw["params"] = {k: int(v) for k, v in (o.split("=") for o in opts.split(","))}
    if kw:
        from fffbench.backends import c_cpu

        k = c_cpu.build_fff_opt(layer, w, device="cpu", dtype=dtype, threads=threads, **kw)
    else:
        k = b.build(layer, w, device="cpu", dtype=dtype, threads=threads)
    x = k.prepare(fb.make_input("gaussian", batch, 768, seed=0))
    return k, x


def bench(specs, batch, dtype, threads, rounds, min_time):
    from fffbench.env import pinned_threads

    with pinned_threads(threads):
        ks = [build(s, batch, dtype, threads) for s in specs]
        for k, x in ks:  # warm-up: JIT, first touch, autotune
            for _ in range(2):
                k.run(x)
        # calls per round so that each backend runs at least min_time per round
        reps = []
        for k, x in ks:
            t0 = time.perf_counter()
            k.run(x)
            reps.append(max(1, int(min_time / max(time.perf_counter() - t0, 1e-9))))
        times = [[] for _ in ks]
        waited = wait_quiet()
        s0 = stat()
        for _ in range(rounds):
            for i, (k, x) in enumerate(ks):
                t0 = time.perf_counter()
                for _ in range(reps[i]):
                    k.run(x)
                times[i].append((time.perf_counter() - t0) / reps[i])
        s1 = stat()
    steal = (s1[0] - s0[0]) / max(1, s1[1] - s0[1])
    out = {"cpu": cpu_line(), "batch": batch, "dtype": dtype, "threads": threads, "rounds": rounds,
           "steal": round(steal, 4), "others_cpus": round(others_load(s0, s1), 3), "waited_s": round(waited, 1),
           "backends": []}
    for s, (k, _), t in zip(specs, ks, times):
        q = np.percentile(t, [25, 50, 75])
        out["backends"].append({"spec": s, "impl": k.describe(), "median_s": q[1], "p25_s": q[0], "p75_s": q[2],
                                "min_s": min(t)})
    for i in range(1, len(specs)):
        r = [a / b for a, b in zip(times[i], times[0])]
        out["backends"][i]["ratio_to_first"] = statistics.median(r)
        out["backends"][i]["ratio_iqr"] = list(np.percentile(r, [25, 75]))
    return out


def copy_floor(threads: int, mb: int = 256, rounds: int = 10) -> dict:
    """Copy bandwidth (bytes read + written per second) with ``threads`` threads, in the C lib."""
    n = mb << 20
    copy = CopyFloor(2 * n, threads)
    copy.run(None)
    wait_quiet()
    s0 = stat()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        copy.run(None)
        ts.append(time.perf_counter() - t0)
    s1 = stat()
    import torch  # the harness's measure (fffbench.roofline): torch's threaded copy_ of 256 MiB

    torch.set_num_threads(threads)
    src, dst = torch.ones(n // 4), torch.empty(n // 4)
    dst.copy_(src)
    tt = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        dst.copy_(src)
        tt.append(time.perf_counter() - t0)
    return {"cpu": cpu_line(), "threads": threads, "mib": mb,
            "torch_copy_GBps_median": 2 * n / statistics.median(tt) / 1e9,
            "copy_GBps_median": 2 * n / statistics.median(ts) / 1e9,
            "copy_GBps_max": 2 * n / min(ts) / 1e9, "steal": (s1[0] - s0[0]) / max(1, s1[1] - s0[1]),
            "others_cpus": others_load(s0, s1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-time", type=float, default=0.02, help="seconds per backend per round")
    ap.add_argument("--copy", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.copy:
        print(json.dumps(copy_floor(a.threads)))
        return
    out = bench(a.specs, a.batch, a.dtype, a.threads, a.rounds, a.min_time)
    if a.json:
        print(json.dumps(out))
        return
    print(f"# {out['cpu']}; B={a.batch} {a.dtype} {a.threads} threads, {a.rounds} rounds, steal {out['steal']:.1%}, "
          f"other processes {out['others_cpus']:.2f} CPUs (waited {out['waited_s']} s for quiet)")
    for r in out["backends"]:
        f = ".1f" if r.get("ratio_to_first", 0) >= 10 else ".3f"
        extra = f"  x{r['ratio_to_first']:{f}} [{r['ratio_iqr'][0]:{f}}-{r['ratio_iqr'][1]:{f}}]" \
            if "ratio_to_first" in r else ""
        print(f"{r['spec']:28s} median {r['median_s'] * 1e3:9.4f} ms  (p25 {r['p25_s'] * 1e3:.4f}, "
              f"p75 {r['p75_s'] * 1e3:.4f}, min {r['min_s'] * 1e3:.4f}){extra}  [{r['impl']}]")


if __name__ == "__main__":
    sys.exit(main())
