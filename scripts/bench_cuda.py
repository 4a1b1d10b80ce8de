"""Development bench for the CUDA FFF kernels: correctness and variants in one GPU call.

    python scripts/bench_cuda.py [--out DIR] [--sections shapes,main,small,dense] [--quick]
                                 [--variants LABEL,...] [--trace-opts default,w1_bulk,colsplit,w1_bulk+colsplit]

Sections:
  shapes  fff-cuda (v4) and fff-cuda-v3 against the float64 reference on awkward shapes and batches
  main    B = 16384, 1x11: every variant checked (third call, and equal to the first), then timed
          eager and graph (CUDA events, median, warm L2), do_bench on Kernel.run for the backends,
          and each kernel's time and the launch gaps from the torch profiler
  small   B = 1 .. 1024: the one-launch paths, the staged path and v3, eager and graph
  probe   what the x access patterns stream with loads alone; copy x -> y; write y alone (fill)
  trace   per-block phase times of the staged path, for each option set of --trace-opts
  dense   ff-dense (H = 3072) and streaming anchors (read x; copy x to y)
Numbers go to stdout and DIR/cuda.json. Published numbers come from `fffbench run`; this is for
choosing the kernel's design and parameters (notes/cuda-kernel.md).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
import traceback

import numpy as np
import torch

import fffbench as fb
from fffbench.backends.cuda_kernels import FffOptimized
from fffbench.correctness import Reference, check_output
from fffbench.layers import gelu64

TDT = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ROWS: list[dict] = []


def log(*a):
    print(*a, flush=True)


def bench(fn, reps=200, graph=False, per_graph=20):
    """Median microseconds per call: CUDA events around each call (eager), or around the replay of
    a graph of ``per_graph`` calls divided by it (as fffbench's graph regime does: a single-call
    replay here costs a 16 us host floor, which would hide any faster kernel)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    n = 1
    if graph:
        g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(per_graph):
                fn()
            torch.cuda.synchronize()
            with torch.cuda.graph(g, stream=s):
                for _ in range(per_graph):
                    fn()
        torch.cuda.current_stream().wait_stream(s)
        fn, n = g.replay, per_graph
        reps = max(20, reps // 4)
        for _ in range(3):
            fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev) * 1e3 / n


def host_cost(fn, calls=50):
    """Host microseconds per call (launches queue up; nothing waits for the GPU inside)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def graph_output(fn):
    """The output of a CUDA-graph replay of ``fn`` (checks that the captured launches compute it)."""
    g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        torch.cuda.synchronize()
        with torch.cuda.graph(g, stream=s):
            y = fn()
    torch.cuda.current_stream().wait_stream(s)
    y.fill_(float("nan"))
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    return y.float().cpu().numpy()


def kernel_breakdown(fn, calls=20, everything=False):
    """Per call: each kernel's GPU time in launch order, and the span first start .. last end (us)."""
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
            torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
          and (everything or ("Memset" not in e.name and "memcpy" not in e.name.lower()))]
    ev.sort(key=lambda e: e.time_range.start)
    per = len(ev) // calls if calls else 0
    if per == 0:
        return {}
    names = [ev[i].name.split("(")[0].replace("void ", "")[:60] for i in range(per)]
    dur = np.array([[ev[c * per + i].time_range.end - ev[c * per + i].time_range.start for i in range(per)]
                    for c in range(calls)])
    span = np.array([ev[c * per + per - 1].time_range.end - ev[c * per].time_range.start for c in range(calls)])
    return {"kernels": [(n, round(float(np.median(dur[:, i])), 1)) for i, n in enumerate(names)],
            "sum": round(float(np.median(dur.sum(axis=1))), 1), "span": round(float(np.median(span)), 1)}


def diagnose(k: FffOptimized, layer, w, x, B):
    """Which level of the v4 staged path first differs from the reference (its acts workspace)."""
    plan = k.plans.get(B)
    if plan is None or "acts" not in plan.tensors:
        return
    acts = plan.tensors["acts"][: B * layer.levels].view(B, layer.levels).cpu().numpy()
    _, logits, _ = layer.walk(x, w)
    ref = gelu64(logits[:, 0, :])
    for lvl in range(layer.levels):
        bad = np.abs(acts[:, lvl] - ref[:, lvl]) > 1e-3 * (1 + np.abs(ref[:, lvl]))
        log(f"      level {lvl:2d}: {bad.mean():.4f} of rows off (acts vs reference)")


def check_kernel(k, layer, w, x, xt, dtype, ref=None):
    """Third call's output against the reference; the first call must equal it (state reset)."""
    ref = ref or Reference.compute(layer, w, x)
    y1 = k(xt).float().cpu().numpy()
    k(xt)
    y3 = k(xt).float().cpu().numpy()
    same = bool(np.array_equal(y1, y3, equal_nan=True))
    chk = check_output(y3, ref, dtype, "fff")
    return chk, same, ref


def _variants(layer, B, dtype):
    """The kernels a shape is checked with: the default, the v3 baseline (fp32, few batches) and
    the staged v4 pipeline forced where the one-launch paths would otherwise run."""
    for name in ("fff-cuda", "fff-cuda-v3", "v4 staged"):
        if name == "fff-cuda-v3" and (dtype == "bfloat16" or B not in (1, 777)):
            continue
        if name == "v4 staged" and B < 256:
            continue
        yield name


def _check_shape(layer, w, x, ref, B, dtype, name):
    if name == "v4 staged":
        from fffbench.backends.cuda_kernels import CudaKernel

        kern = CudaKernel(FffOptimized(layer, w, "cuda", dtype, small_max=0, tiny_max=0), "cuda", dtype)
    else:
        kern = fb.get_backend(name).build(layer, w, device="cuda", dtype=dtype)
    xt = torch.as_tensor(x).to("cuda", TDT[dtype])
    chk, same, _ = check_kernel(kern.fn, layer, w, x, xt, dtype, ref)
    ok = chk.passed and same
    msg = f"err={chk.rel_err:.1e} agree={chk.path_agreement:.4f}" + ("" if same else " CALLS DIFFER")
    ROWS.append(dict(section="shapes", layer=layer.label, batch=B, dtype=dtype, backend=name,
                     ok=ok, rel_err=chk.rel_err, agree=chk.path_agreement, reason=chk.reason,
                     impl=kern.describe()))
    if not ok or (B in (1, 4096) and name != "fff-cuda-v3" and layer.depth == 11):
        log(f"  {'ok  ' if ok else 'FAIL'} {layer.label:22s} B={B:5d} {dtype:8s} {name:11s} {msg} "
            f"{chk.reason} | {kern.describe()[:90]}")
    if not ok and name != "fff-cuda-v3":
        diagnose(kern.fn, layer, w, x, B)


def section_shapes(quick):
    log("== shapes: fff-cuda (v4 default) and fff-cuda-v3 against float64")
    shapes = [fb.FFF(width=768, depth=11), fb.FFF(width=768, depth=0), fb.FFF(width=768, depth=3),
              fb.FFF(width=768, depth=5), fb.FFF(width=512, depth=7), fb.FFF(width=256, depth=12),
              fb.FFF(width=1024, depth=9), fb.FFF(width=768, depth=14), fb.FFF(width=256, depth=5, trees=3),
              fb.FFF(width=100, depth=5, trees=3), fb.FFF(width=128, depth=4, out_width=37)]
    batches = [1, 7, 256, 257, 777, 4096] if not quick else [1, 777, 4096]
    for layer in shapes:
        w = layer.init_weights(5)
        for B in batches:
            if layer.depth >= 14 and B > 1000:
                continue
            x = fb.make_input("gaussian", B, layer.width, seed=B)
            ref = Reference.compute(layer, w, x)
            for dtype in ("float32", "bfloat16"):
                if dtype == "bfloat16" and B not in (1, 777, 4096):
                    continue
                for name in _variants(layer, B, dtype):
                    try:
                        _check_shape(layer, w, x, ref, B, dtype, name)
                    except Exception as e:  # keep going: one broken case must not hide the others
                        log(f"  ERROR {layer.label} B={B} {dtype} {name}: {type(e).__name__}: {e}")
                        ROWS.append(dict(section="shapes", layer=layer.label, batch=B, dtype=dtype, backend=name,
                                         ok=False, reason=f"{type(e).__name__}: {e}"))
    n_bad = sum(1 for r in ROWS if r["section"] == "shapes" and not r["ok"])
    log(f"  shapes: {n_bad} failures of {sum(1 for r in ROWS if r['section'] == 'shapes')}")


#: (label, FffOptimized options) timed at B = 16384; "v4" is the default configuration
MAIN_VARIANTS = [("v3", dict(variant="v3")),
                 ("v4", dict(variant="v4")),
                 ("v4 W1 first", dict(variant="v4", w1first=True)),
                 ("v4 W1 first, no k-split", dict(variant="v4", w1first=True, ksplit=(1, 1, 1))),
                 ("v4 W1 first, k-split first+middle", dict(variant="v4", w1first=True, ksplit=(2, 2, 1))),
                 ("v4.2 row-tile output", dict(variant="v4", w1_bulk=False, colsplit=False)),
                 ("v4.2 + W1 bulk copy", dict(variant="v4", w1_bulk=True, colsplit=False)),
                 ("v4.2 + column-split output", dict(variant="v4", w1_bulk=False, colsplit=True)),
                 ("v4.2 + W1 bulk + column-split", dict(variant="v4", w1_bulk=True, colsplit=True))]


def sm_clock():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetClockInfo(pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.NVML_CLOCK_SM)
    except Exception:
        return -1


def section_probe(B=16384):
    """What the x access patterns stream with loads alone (no arithmetic)."""
    import ctypes

    from fffbench.backends.cuda_kernels import _lib_v4, _stream

    lib = _lib_v4()
    log("== probe: x read by access pattern (loads only)")
    x32 = torch.randn(B, 768, device="cuda")
    for dtype in ("float32", "bfloat16"):
        xt = x32.to(TDT[dtype])
        rb = 768 * xt.element_size()
        out = torch.empty(B * 32, dtype=torch.int32, device="cuda")
        confs = [(0, 2, 1, 16), (0, 4, 1, 16), (0, 8, 1, 16), (0, 8, 4, 16), (1, 8, 1, 16), (1, 16, 1, 16),
                 (1, 32, 1, 16), (1, 16, 1, 4)]
        line = []
        for pat, depth, g, rpw in confs:
            def call(pat=pat, depth=depth, g=g, rpw=rpw, xt=xt, rb=rb, out=out):
                err = lib.fff_v4_probe(pat, depth, g, ctypes.c_void_p(xt.data_ptr()), B, rb, rpw,
                                       ctypes.c_void_p(out.data_ptr()), _stream())
                assert err == 0, err
            us = kernel_breakdown(call)["sum"]
            gbs = B * rb / us / 1e3
            label = (f"frag D{depth} G{g}" if pat == 0 else f"rows512 D{depth} rpw{rpw}")
            ROWS.append(dict(section="probe", dtype=dtype, conf=label, us=us, gbs=gbs))
            line.append(f"{label}: {us:5.1f} us {gbs:5.0f} GB/s")
        log(f"  {dtype:8s} " + " | ".join(line))
        yt = torch.empty_like(xt)
        cp = kernel_breakdown(lambda xt=xt, yt=yt: yt.copy_(xt), everything=True)["sum"]
        log(f"  {dtype:8s} copy x -> y (kernel time): {cp:5.1f} us = {2 * B * rb / cp / 1e3:5.0f} GB/s read+write")
        ROWS.append(dict(section="probe", dtype=dtype, conf="copy", us=cp, gbs=2 * B * rb / cp / 1e3))
        fl = kernel_breakdown(lambda yt=yt: yt.fill_(0.5), everything=True)["sum"]  # the last stage's y stream alone
        log(f"  {dtype:8s} fill y (kernel time): {fl:5.1f} us = {B * rb / fl / 1e3:5.0f} GB/s write")
        ROWS.append(dict(section="probe", dtype=dtype, conf="fill", us=fl, gbs=B * rb / fl / 1e3))
        # y written as the last stage writes it: 64 rows per block, in row order or in a random row
        # order (the sorted groups' rows are scattered over y), whole rows or 256-byte pieces per step
        line = []
        for order, rows in (("in order", torch.arange(B, device="cuda", dtype=torch.int32)),
                            ("random rows", torch.randperm(B, device="cuda").to(torch.int32))):
            for pieces in (0, 1):
                def wcall(pieces=pieces, rows=rows, yt=yt, rb=rb):
                    err = lib.fff_v4_wprobe(pieces, ctypes.c_void_p(yt.data_ptr()), ctypes.c_void_p(rows.data_ptr()),
                                            B, rb, _stream())
                    assert err == 0, err
                us = kernel_breakdown(wcall)["sum"]
                label = f"{order}, {'256-byte pieces' if pieces else 'whole rows'}"
                ROWS.append(dict(section="probe", dtype=dtype, conf="write " + label, us=us, gbs=B * rb / us / 1e3))
                line.append(f"{label}: {us:5.1f} us {B * rb / us / 1e3:5.0f} GB/s")
        log(f"  {dtype:8s} write y, 64 rows per block: " + " | ".join(line))


def section_main(B, variants):
    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(0)
    x = fb.make_input("gaussian", B, 768, seed=1)
    ref = Reference.compute(layer, w, x)
    log(f"== main: B={B} d=768 1x11")
    for dtype in ("float32", "bfloat16"):
        xt = torch.as_tensor(x).to("cuda", TDT[dtype])
        y0 = FffOptimized(layer, w, "cuda", dtype, w1_bulk=False, colsplit=False)(xt).float()  # v4.2's output
        for label, opts in variants:
            try:
                k = FffOptimized(layer, w, "cuda", dtype, **opts)
                chk, same, _ = check_kernel(k, layer, w, x, xt, dtype, ref)
                yv = k(xt).float()
                vs_default = float((yv - y0).norm() / y0.norm())
                row_off = float(((yv - y0).norm(dim=1) > 1e-2 * y0.norm(dim=1)).float().mean())
                call = functools.partial(k, xt)
                gy = graph_output(call)
                gchk = check_output(gy, ref, dtype, "fff")
                eager, graph = bench(call), bench(call, graph=True)
                host = host_cost(call)
                bd = kernel_breakdown(call)
                ok = chk.passed and same and gchk.passed
                ROWS.append(dict(section="main", dtype=dtype, variant=label, batch=B, eager_us=eager, graph_us=graph, host_us=host,
                                 ok=ok, rel_err=chk.rel_err, agree=chk.path_agreement, graph_ok=gchk.passed,
                                 same_calls=same, reason=chk.reason, kernels=bd, impl=k.describe(),
                                 vs_default=vs_default, rows_off_default=row_off))
                log(f"  {dtype:8s} {label:34s} eager {eager:6.1f} graph {graph:6.1f} host {host:5.1f} us ok={ok} "
                    f"err={chk.rel_err:.1e} agree={chk.path_agreement:.4f} vs v4.2 {vs_default:.1e} "
                    f"(rows off {row_off:.4f}) {chk.reason}")
                log(f"      kernels {bd.get('kernels')} sum {bd.get('sum')} span {bd.get('span')}")
                if not ok:
                    log(f"      same_calls={same} graph_ok={gchk.passed} {gchk.reason}")
                    if opts.get("variant") == "v4":
                        diagnose(k, layer, w, x, B)
            except Exception:
                log(f"  ERROR {dtype} {label}:\n{traceback.format_exc()}")
        try:  # the public API, as the harness times it
            import triton.testing

            for name in ("fff-cuda", "fff-cuda-v3"):
                kern = fb.get_backend(name).build(layer, w, device="cuda", dtype=dtype)
                xn = kern.prepare(x)
                t = triton.testing.do_bench(lambda kern=kern, xn=xn: kern.run(xn), warmup=50, rep=300,
                                            return_mode="median") * 1e3
                ROWS.append(dict(section="do_bench", dtype=dtype, backend=name, batch=B, us=t, impl=kern.describe()))
                log(f"  do_bench {name:11s} {dtype:8s} Kernel.run median {t:7.1f} us | {kern.describe()[:100]}")
        except Exception:
            log(f"  ERROR do_bench:\n{traceback.format_exc()}")


TRACE_LABELS = {(): "default ", (("w1first", True),): "W1 first", (("w1_bulk", True),): "W1 bulk ",
                (("colsplit", True),): "colsplit", (("colsplit", True), ("w1_bulk", True)): "bulk+col"}


def trace_opts(spec: str):
    """``default,w1_bulk,colsplit,w1_bulk+colsplit`` -> option sets (boolean FffOptimized options)."""
    return [tuple(sorted((o, True) for o in item.split("+") if o != "default")) for item in spec.split(",") if item]


def section_trace(B=16384, opts_list=((), (("w1first", True),), (("w1_bulk", True),))):
    """Per-block phase times of the staged path for each option set (clock64 and globaltimer)."""
    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(0)
    x = fb.make_input("gaussian", B, 768, seed=1)
    log("== trace: per-block phases of the default staged path (us; mean / max over active blocks)")
    for dtype, opts in [(d, o) for d in ("float32", "bfloat16") for o in opts_list]:
        xt = torch.as_tensor(x).to("cuda", TDT[dtype])
        k = FffOptimized(layer, w, "cuda", dtype, trace=True, **dict(opts))
        for _ in range(3):
            k(xt)
        torch.cuda.synchronize()
        mhz = sm_clock()
        tr = k.plans[B].tensors["trace"].view(8, 1024, 8).cpu().numpy().astype(np.float64)
        cyc = 1.0 / (mhz if mhz > 0 else 1980)  # us per cycle
        for st in range(3):  # stages [0,4), [4,8), [8,12)
            t = tr[st]
            launched = t[:, 0] > 0
            act = launched & (t[:, 7] > 0)
            gt0, gt1 = t[launched, 0], t[launched, 1]
            span = (gt1.max() - gt0.min()) / 1e3
            ramp = (np.sort(gt0)[-1] - gt0.min()) / 1e3
            ph = {"assign": t[act, 3] - t[act, 2], "W1 in": t[act, 4] - t[act, 3],
                  "logits+walk": t[act, 5] - t[act, 4]}
            if st == 2:
                ph["output"] = t[act, 6] - t[act, 5]
            ph["block"] = t[act, 7] - t[act, 2]
            parts = " | ".join(f"{n} {v.mean() * cyc:5.2f}/{v.max() * cyc:5.2f}" for n, v in ph.items())
            log(f"  {dtype:8s} {TRACE_LABELS.get(tuple(opts), str(opts)):8s} stage {st}: {int(launched.sum())} blocks ({int(act.sum())} with rows), span "
                f"{span:5.1f} us, last block starts {ramp:4.1f} us after the first | {parts}")
            ROWS.append(dict(section="trace", dtype=dtype, opts=str(opts), stage=st, span_us=span, ramp_us=ramp, blocks=int(launched.sum()),
                             active=int(act.sum()), **{n: float(v.mean() * cyc) for n, v in ph.items()},
                             **{n + "_max": float(v.max() * cyc) for n, v in ph.items()}))


def section_small():
    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(0)
    log("== small batches (graph / eager, us)")
    t = torch.zeros(1, device="cuda")
    floor = bench(lambda: t.add_(1), graph=True, reps=300)
    log(f"  graph replay of one tiny torch kernel (launch floor): {floor:.1f} us, SM clock {sm_clock()} MHz")
    ROWS.append(dict(section="small", variant="launch floor", graph_us=floor))
    for dtype in ("float32", "bfloat16"):
        for B in (1, 64, 256, 1024, 4096, 8192):
            x = fb.make_input("gaussian", B, 768, seed=B)
            xt = torch.as_tensor(x).to("cuda", TDT[dtype])
            ref = Reference.compute(layer, w, x)
            big = 1 << 30
            confs = [("v3", dict(variant="v3")), ("v4 default", dict(variant="v4")),
                     ("staged", dict(variant="v4", small_max=0, tiny_max=0))]
            if B >= 256:
                confs.append(("warp/row", dict(variant="v4", small_max=big, tiny_max=0, spec=1)))
            if B <= 1024:
                confs.append(("block/row", dict(variant="v4", small_max=big, tiny_max=big)))
            line = []
            for label, opts in confs:
                try:
                    k = FffOptimized(layer, w, "cuda", dtype, **opts)
                    chk, same, _ = check_kernel(k, layer, w, x, xt, dtype, ref)
                    call = functools.partial(k, xt)
                    g, e = bench(call, graph=True, reps=200), bench(call, reps=200)
                    ok = chk.passed and same
                    ROWS.append(dict(section="small", dtype=dtype, batch=B, variant=label, graph_us=g, eager_us=e,
                                     ok=ok, rel_err=chk.rel_err, agree=chk.path_agreement, clock=sm_clock()))
                    line.append(f"{label}: {g:5.1f}/{e:5.1f}{'' if ok else ' FAIL ' + chk.reason}")
                except Exception as ex:
                    line.append(f"{label}: ERROR {type(ex).__name__}: {ex}")
            log(f"  {dtype:8s} B={B:5d} " + " | ".join(line) + f"  [{sm_clock()} MHz]")


def section_dense(B=16384):
    log("== dense FF and streaming anchors")
    x = fb.make_input("gaussian", B, 768, seed=1)
    for dtype in ("float32", "bfloat16"):
        ff = fb.FF(width=768, hidden=3072)
        k = fb.get_backend("ff-dense").build(ff, ff.init_weights(0), device="cuda", dtype=dtype)
        us = bench(functools.partial(k.run, k.prepare(x)), reps=50)
        gus = bench(functools.partial(k.run, k.prepare(x)), reps=40, graph=True, per_graph=5)
        ROWS.append(dict(section="dense", dtype=dtype, backend="ff-dense", hidden=3072, us=us, graph_us=gus))
        log(f"  ff-dense H=3072 {dtype:8s} eager {us:8.1f} us  graph {gus:8.1f} us")



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--sections", default="shapes,main,small,dense")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and batches")
    ap.add_argument("--variants", default="", help="comma-separated labels of MAIN_VARIANTS (default: all)")
    ap.add_argument("--trace-opts", default="default,w1first,w1_bulk",
                    help="option sets the trace section runs: comma-separated, each 'default' or options joined by '+'")
    args = ap.parse_args()
    log(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    t0 = time.time()
    sections = args.sections.split(",")
    variants = [v for v in MAIN_VARIANTS if not args.variants or v[0] in args.variants.split(",")]
    for name in sections:
        t = time.time()
        try:
            {"shapes": lambda: section_shapes(args.quick), "main": lambda: section_main(args.batch, variants),
             "small": section_small, "dense": section_dense, "probe": section_probe,
             "trace": lambda: section_trace(opts_list=trace_opts(args.trace_opts))}[name]()
        except Exception:
            log(f"ERROR in section {name}:\n{traceback.format_exc()}")
        log(f"   [{name}: {time.time() - t:.0f} s]")
        with open(os.path.join(args.out, "cuda.json"), "w") as f:
            json.dump(ROWS, f, indent=1, default=str)
    log(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
