"""A synthetic stored run in the paper's setting (B = 16384, d = 768, FFF 1x11 against FF 3072/4095),
written through the real store, for the report and plot tests.

This machine has no GPU and cannot time the paper's shapes in a test's budget, so the rows here are
made up (under the real backends' names, as the paper's figures are defined by backend): every
level of both devices, a wrong row, a skipped row, a CUDA-graph regime, measured ceilings for
both devices, and the paper suite's declared comparisons in run.json. Samples are drawn around chosen medians (roughly the brief's anchors),
so the tests can check that each table and figure shows exactly the ratios of the stored samples,
in the right cell, with the paper's figure where (and only where) it belongs.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fffbench.layers import FF, FFF
from fffbench.store import RunStore
from fffbench.timing.stats import summarize

ROOT = Path(__file__).resolve().parent.parent
MACHINE = "Synthetic Xeon (2 cores) + Synthetic H200"
CEILINGS = {"cpu": {"threads": 2, "copy_gbps": 21.4, "gemm_gflops": {"float32": 209.0}},
            "cuda": {"copy_gbps": 4270.0, "gemm_gflops": {"float32": 51000.0, "tfloat32": 364000.0}}}

#: (backend, family, device, level) -> median seconds at B = 16384 for FF H = 4095 (FF) or FFF 1x11
BACKENDS = {
    ("ff-c-l1", "ff", "cpu", "cpu-l1"): 10.0, ("fff-c-l1", "fff", "cpu", "cpu-l1"): 0.135,
    ("ff-c-l2", "ff", "cpu", "cpu-l2"): 6.0, ("fff-c-l2", "fff", "cpu", "cpu-l2"): 0.30,
    ("ff-dense", "ff", "cpu", "cpu-l3"): 1.30, ("ff-c-l3", "ff", "cpu", "cpu-l3"): 1.10,
    ("ff-bmm", "ff", "cpu", "pytorch-bmm"): 3.0, ("fff-bmm", "fff", "cpu", "pytorch-bmm"): 0.97,
    ("fff-gather", "fff", "cpu", "optimized"): 0.20,
    ("ff-dense", "ff", "cuda", "gpu-native"): 4.27e-3,
    ("ff-bmm", "ff", "cuda", "pytorch-bmm"): 51.3e-3, ("fff-bmm", "fff", "cuda", "pytorch-bmm"): 1.7e-3,
    ("ff-cuda-naive", "ff", "cuda", "naive-cuda"): 7.0, ("fff-cuda-naive", "fff", "cuda", "naive-cuda"): 26.7e-3,
    ("fff-cuda", "fff", "cuda", "optimized"): 0.26e-3,
}
#: backends timed also with CUDA graphs (much faster there: must never leak into the eager tables)
GRAPH = {"ff-dense": 0.5, "fff-cuda": 0.1}


def _seconds(median_4095: float, family: str, hidden: int | None, batch: int) -> float:
    scale = (hidden / 4095) if family == "ff" else 1.0
    return median_4095 * scale * max(batch / 16384, 1 / 64)


def make_run(root, name: str = "synthetic", batches=(1024, 16384), hiddens=(3072, 4095), n: int = 15,
             ceilings=CEILINGS, machine: str = MACHINE, seed: int = 0):
    """Write the run directory ``root/name``; returns its path."""
    env = {"host": "synthetic", "machine": machine, "cpu": {"model": "Synthetic Xeon", "logical_cores": 2},
           "gpus": [{"index": 0, "name": "Synthetic H200", "driver": "0", "cuda": "0", "max_clocks_mhz": "0, 0"}],
           "versions": {"python": "3", "torch": "0"}, "git": {"commit": "0" * 40, "dirty": False}, "argv": ["test"]}
    if ceilings is not None:
        env["ceilings"] = ceilings
    from fffbench.suite import load_suite

    env["comparisons"] = [c.to_dict() for c in load_suite(ROOT / "suites" / "paper.yaml").comparisons]
    suite = SimpleNamespace(text="name: synthetic\n", name="synthetic", path="synthetic.yaml", sha256="0" * 64)
    store = RunStore.create(root, name, env, suite)
    rng = np.random.default_rng(seed)
    layers = [FF(width=768, hidden=h) for h in hiddens] + [FFF(width=768, depth=11, trees=1)]
    for batch in batches:
        for layer in layers:
            for (backend, family, device, level), t4095 in BACKENDS.items():
                if family != layer.family:
                    continue
                regimes = ["wall/warm"] if device == "cpu" else ["cuda-events/warm-l2/eager"]
                if device == "cuda" and backend in GRAPH:
                    regimes.append("cuda-events/warm-l2/graph")
                for regime in regimes:
                    t = _seconds(t4095, family, getattr(layer, "hidden", None), batch)
                    t *= GRAPH[backend] if regime.endswith("graph") else 1.0
                    samples = list(t * np.exp(rng.normal(0, 0.02, n)))
                    store.append(_row(name, layer, batch, device, backend, family, level, regime, samples), samples)
        # a wrong row (never timed) and a skipped one
        fff = layers[-1]
        store.append(_row(name, fff, batch, "cpu", "syn-fff-bad", "fff", "optimized", "wall/warm", None,
                          status="wrong", reason="rel err 1.0 > tolerance"))
        store.append(_row(name, fff, batch, "cuda", "syn-fff-skip", "fff", "optimized", "cuda-events/warm-l2/eager",
                          None, status="skipped", reason="needs a newer GPU"))
    return store.path


def _row(run_id, layer, batch, device, backend, family, level, regime, samples, status="ok", reason=""):
    shape = f"H{layer.hidden}" if layer.family == "ff" else f"D{layer.depth}K{layer.trees}"
    case_id = f"{layer.family}-d768-{shape}-B{batch}-float32-{device}-gaussian-s0-t2"
    row = {"run_id": run_id, "row_id": f"{case_id}|{backend}|{regime}", "case_id": case_id, "suite": "synthetic",
           "family": layer.family, "width": 768, "hidden": getattr(layer, "hidden", None),
           "depth": getattr(layer, "depth", None), "trees": getattr(layer, "trees", None), "out_width": None,
           "bias": True, "neurons_total": layer.neurons_total, "neurons_used": layer.neurons_used, "batch": batch,
           "dtype": "float32", "device": device, "input": "gaussian", "seed": 0, "threads": 2, "backend": backend,
           "backend_family": family, "level": level, "regime": regime, "status": status, "reason": reason,
           "flops": layer.flops(batch), "bytes": layer.compulsory_bytes(batch, 4)}
    if samples is not None:
        s = summarize(samples)
        row |= s | {"gflops": row["flops"] / s["median_s"] / 1e9, "gbps": row["bytes"] / s["median_s"] / 1e9,
                    "timer": "synthetic", "number": 1}
    return row


def drop_ceilings(path) -> None:
    """Remove ``ceilings`` from a run's run.json, as in runs stored before ceilings were measured."""
    p = path / "run.json"
    env = json.loads(p.read_text())
    env.pop("ceilings", None)
    p.write_text(json.dumps(env))
