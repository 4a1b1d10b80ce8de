"""Development bench for the CUDA FFF kernel: correctness and variants in one GPU call.

    python scripts/bench_cuda.py [--batch 16384] [--out DIR]

Checks fff-cuda (float32, bfloat16) against the float64 reference, then times launch variants
(pipeline variant, rows per warp, split level; eager and CUDA-graph) with CUDA events, warm L2, median of many
calls, beside the torch backends and the dense baselines. Numbers go to stdout and DIR/cuda.json.
Published numbers come from `fffbench run`; this is for choosing the kernel's parameters.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics

import torch

import fffbench as fb
from fffbench.backends.cuda_kernels import FffOptimized
from fffbench.correctness import Reference, check_output


def bench(fn, reps=200, graph=False):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    if graph:
        g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
            torch.cuda.synchronize()
            with torch.cuda.graph(g, stream=s):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        fn = g.replay
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev) * 1e3  # microseconds


#: (variant, options); options go to FffOptimized
VARIANTS = [("v1", {}), ("v2-staged", {}), ("v3", {}), ("v3", dict(rows_per_warp=2)), ("v3", dict(rows_per_warp=4))]


def kernel_times(fn, calls=20):
    """Mean GPU time per call of each kernel the call launches (torch profiler), in us."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA and "fff" in e.key:
            t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
            out[e.key.split("(")[0].replace("void ", "")] = round(t / calls, 1)
    return out


def naive_ff(out_rows):
    """The paper's naive CUDA FF at growing batch: one call each (seconds per call at B=16384)."""
    ff = fb.FF(width=768, hidden=3072)
    k = fb.get_backend("ff-cuda-naive").build(ff, ff.init_weights(0), device="cuda", dtype="float32")
    for B in (1024, 4096, 16384):
        x = torch.randn(B, 768, device="cuda")
        k.run(x[:64])
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        k.run(x)
        b.record()
        torch.cuda.synchronize()
        out_rows.append(dict(backend="ff-cuda-naive", hidden=3072, batch=B, us=a.elapsed_time(b) * 1e3))
        print(f"ff-cuda-naive H=3072 B={B:6d} {a.elapsed_time(b):10.1f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--naive", action="store_true", help="also time the naive FF at B = 1024, 4096, 16384")
    args = ap.parse_args()
    B, layer = args.batch, fb.FFF(width=768, depth=11)
    w = layer.init_weights(0)
    x = fb.make_input("gaussian", B, 768, seed=1)
    ref = Reference.compute(layer, w, x)
    rows = []
    print(f"{torch.cuda.get_device_name()}  B={B}  d=768  1x11", flush=True)
    for dtype in ("float32", "bfloat16"):
        tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        xt = torch.as_tensor(x).to("cuda", tdt)
        for variant, opts in VARIANTS:
            k = FffOptimized(layer, w, "cuda", dtype, variant=variant, **opts)
            chk = check_output(k(xt).float().cpu().numpy(), ref, dtype, "fff")
            call = functools.partial(k, xt)
            for graph in (False, True):
                us = bench(call, graph=graph)
                rows.append(dict(dtype=dtype, variant=variant, **opts, graph=graph,
                                 us=us, ok=chk.passed, rel_err=chk.rel_err, agree=chk.path_agreement))
                print(f"fff-cuda {dtype:8s} {variant:3s} {opts!s:55s} graph={graph!s:5s} {us:8.1f} us "
                      f"ok={chk.passed} err={chk.rel_err:.1e} agree={chk.path_agreement:.4f}", flush=True)
            print("    kernels (us/call):", kernel_times(call), flush=True)
        if dtype == "float32":  # the paper's naive level exists in float32 only
            k = fb.get_backend("fff-cuda-naive").build(layer, w, device="cuda", dtype=dtype)
            us = bench(functools.partial(k.run, k.prepare(x)), reps=20)
            rows.append(dict(dtype=dtype, backend="fff-cuda-naive", us=us))
            print(f"fff-cuda-naive {dtype:8s} {us:10.1f} us", flush=True)
        for h in (3072,):
            ff = fb.FF(width=768, hidden=h)
            k = fb.get_backend("ff-dense").build(ff, ff.init_weights(0), device="cuda", dtype=dtype)
            us = bench(functools.partial(k.run, k.prepare(x)), reps=50)
            rows.append(dict(dtype=dtype, backend="ff-dense", hidden=h, us=us))
            print(f"ff-dense H={h} {dtype:8s} {us:10.1f} us", flush=True)
    if args.naive:
        naive_ff(rows)
    with open(os.path.join(args.out, "cuda.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
