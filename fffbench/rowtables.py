"""Tables of single rows and of the environment: absolute times against the measured ceilings,
rows that were not timed, the per-row times of the end-of-run summary, and what run.json says
about the machine and the libraries every number was measured with.

Pure functions of stored runs (:mod:`fffbench.runs`), like :mod:`fffbench.report`; formatting is
:mod:`fffbench.render`'s.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fffbench.roofline import floor_seconds
from fffbench.runs import Runs, layer_label
from fffbench.timing.regime import Regime

#: a row faster than a ceiling by more than this share is flagged (timer or ceiling is off)
ABOVE_CEILING = 1.05


def _ceiling_max(runs: Runs, run: str, device: str, dtype: str) -> tuple[float, float]:
    """The larger of the ceilings measured at the start and at the end of the run."""
    a, b = runs.ceilings(run, device, dtype), runs.ceilings(run, device, dtype, at="ceilings_end")
    def larger(x, y):
        known = [v for v in (x, y) if not math.isnan(v)]
        return max(known) if known else math.nan

    return larger(a[0], b[0]), larger(a[1], b[1])


def absolute_table(runs: Runs) -> pd.DataFrame:
    """Every timed row: median and its interval, processes, achieved GB/s and GFLOP/s as fractions
    of the run's measured ceilings, the roofline floor (the larger of compute and memory time),
    and a flag when the row was faster than a ceiling measured at the start or the end of the run."""
    df = runs.df[runs.df["status"] == "ok"]
    out = []
    for _, r in df.iterrows():
        gemm, bw = runs.ceilings(r["run"], r["device"], r["dtype"])
        top_gemm, top_bw = _ceiling_max(runs, r["run"], r["device"], r["dtype"])
        floor = floor_seconds(r["flops"], r["bytes"], gemm, bw) if not math.isnan(bw) else math.nan
        above = [name for name, v, c in (("GEMM", r["gflops"] * 1e9, top_gemm), ("copy", r["gbps"] * 1e9, top_bw))
                 if not math.isnan(c) and v > ABOVE_CEILING * c]
        out.append({"run": r["run"], "machine": r["machine"], "device": r["device"], "dtype": r["dtype"],
                    "batch": r["batch"], "width": r["width"], "threads": r["threads"], "input": r["input"],
                    "layer": layer_label(r),
                    "backend": r["backend"], "level": r["level"], "regime": r["regime"],
                    "median_ms": r["median_s"] * 1e3, "ci_low_ms": r["ci_low_s"] * 1e3,
                    "ci_high_ms": r["ci_high_s"] * 1e3, "n": int(r["n_samples"]), "noisy": bool(r["noisy"]),
                    "processes": int(r["n_processes"]) if r["n_processes"] == r["n_processes"] else 1,
                    "gbps": r["gbps"], "bw_frac": r["gbps"] * 1e9 / bw, "gflops": r["gflops"],
                    "gemm_frac": r["gflops"] * 1e9 / gemm, "floor_ms": floor * 1e3,
                    "x_floor": r["median_s"] / floor, "above_ceiling": ", ".join(above)})
    return pd.DataFrame(out)


def untimed_table(runs: Runs) -> pd.DataFrame:
    """Rows that were not timed (skipped, wrong, error), counted per device, backend and reason."""
    df = runs.df[runs.df["status"] != "ok"]
    cols = ["run", "device", "backend", "status", "reason"]
    if df.empty:
        return pd.DataFrame(columns=cols + ["rows"])
    return df.fillna({"reason": ""}).groupby(cols, sort=False).size().rename("rows").reset_index()


def times_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per stored row: layer, backend, status and the timing summary in milliseconds."""
    return pd.DataFrame({
        "device": df["device"], "dtype": df["dtype"], "batch": df["batch"], "threads": df["threads"],
        "layer": [layer_label(r) for _, r in df.iterrows()], "backend": df["backend"], "level": df["level"],
        "regime": [Regime.parse(r).label for r in df["regime"]],
        "status": df["status"], "median_ms": df["median_s"] * 1e3, "iqr_ms": df["iqr_s"] * 1e3,
        "n": df["n_samples"], "processes": df.get("n_processes", 1), "noisy": df["noisy"],
        "GB/s": df["gbps"], "GFLOP/s": df["gflops"], "rel_err": df["rel_err"], "path_agree": df["path_agreement"],
        "reason": df["reason"].fillna(""),
    }).reset_index(drop=True)


# --- the environment ------------------------------------------------------------------------------

def blas_text(env: dict) -> str:
    """The BLAS libraries of a run's process (threadpoolctl) and torch's, with their threads."""
    items = sorted({f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads"
                    + (f", {b.get('threading_layer')}" if b.get("threading_layer") else "") + ")"
                    for b in env.get("blas") or []})
    torch_blas = (env.get("libraries") or {}).get("torch_blas")
    if torch_blas:
        items.append(f"torch: {torch_blas}")
    return "; ".join(items)


def implementations(runs: Runs, run: str) -> list[tuple[str, str]]:
    """What each backend of ``run`` ran on (its rows' ``impl``: BLAS, build, tuned parameters)."""
    df = runs.df[(runs.df["run"] == run) & runs.df["impl"].notna() & (runs.df["impl"] != "")]
    out = []
    for backend, g in df.groupby("backend", sort=True):
        impls = list(dict.fromkeys(g["impl"]))
        out.append((f"backend {backend}", impls[0] if len(impls) == 1 else " | ".join(impls[:3])))
    return out


def _ceiling_text(c: dict) -> str:
    if "error" in c:
        return f"not measured: {c['error']}"
    gemm = ", ".join(f"{k} {v:.4g}" for k, v in (c.get("gemm_gflops") or {}).items())
    at = f" at {c['threads']} thread{'s' if c['threads'] != 1 else ''}" if "threads" in c else ""
    return f"copy {c.get('copy_gbps', math.nan):.4g} GB/s, GEMM {gemm} GFLOP/s{at}"


def environment_items(env: dict) -> list[tuple[str, str]]:
    """(item, value) pairs of run.json that explain a timing: machine, CPU, threads, BLAS, GPU,
    clocks, library versions, git commit and the measured ceilings. Missing entries are left out."""
    items = [("machine", env.get("machine")), ("run id", env.get("run_id")), ("host", env.get("host")),
             ("os", env.get("os"))]
    suite = env.get("suite") or {}
    if suite:
        items.append(("suite", f"{suite.get('name')} ({suite.get('path')}, sha256 {str(suite.get('sha256'))[:12]})"))
    cpu = env.get("cpu") or {}
    if cpu:
        items.append(("CPU", (f"{cpu.get('model')}, {cpu.get('logical_cores')} logical / {cpu.get('physical_cores')} "
                             f"physical cores, affinity {cpu.get('affinity')}, {' '.join(cpu.get('flags') or [])}")))
    if env.get("threads_all"):
        items.append(("threads: all", f"{env['threads_all']} (the CPUs the run could use)"))
    items.append(("BLAS", blas_text(env)))
    for g in env.get("gpus") or []:
        parts = [(g.get("name"), "{}"), (g.get("capability"), "sm {}"), (g.get("sm_count"), "{} SMs"),
                 (g.get("memory_gib"), "{} GiB"), (g.get("driver"), "driver {}"), (g.get("cuda"), "CUDA {}"),
                 (g.get("max_clocks_mhz"), "max clocks (SM, memory) {}")]
        items.append((f"GPU {g.get('index', 0)}", ", ".join(f.format(v) for v, f in parts if v is not None)))
    for dev, c in (env.get("ceilings") or {}).items():
        end = (env.get("ceilings_end") or {}).get(dev)
        items.append((f"ceilings {dev}", _ceiling_text(c) + (f"; at the end: {_ceiling_text(end)}" if end else "")))
    versions = env.get("versions") or {}
    items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    git = env.get("git") or {}
    if git.get("commit"):
        items.append(("git", git["commit"][:12] + (" (uncommitted changes)" if git.get("dirty") else "")))
    if env.get("env_vars"):
        items.append(("environment variables", " ".join(f"{k}={v}" for k, v in env["env_vars"].items())))
    if env.get("shards"):
        where = [str(s.get("index")) + (f" (GPU {s['gpu_index']}" + (f", {s['gpu_uuid']}" if s.get("gpu_uuid") else "")
                                         + ")" if s.get("gpu_index") is not None else "") for s in env["shards"]]
        items.append(("shards", f"{', '.join(where)} on {env.get('host')}"
                                + (f", executor {env['executor']}" if env.get("executor") else "")))
    if env.get("resumed"):
        items.append(("resumed", f"{len(env['resumed'])} time(s), last at {env['resumed'][-1].get('at')}"))
    if env.get("argv"):
        items.append(("command", " ".join(Path(a).name if i == 0 else a for i, a in enumerate(env["argv"]))))
    return [(k, str(v)) for k, v in items if v not in (None, "")]


def env_footnote(env: dict) -> str:
    """One line: what a reader needs to judge the numbers (machine, threads, BLAS, key versions, commit)."""
    d = dict(environment_items(env))
    v = env.get("versions") or {}
    parts = [d.get("machine"), d.get("GPU 0"), d.get("BLAS") and "BLAS " + d["BLAS"],
             d.get("ceilings cpu") and "CPU " + d["ceilings cpu"], d.get("ceilings cuda") and "GPU " + d["ceilings cuda"],
             ", ".join(f"{k} {v[k]}" for k in ("torch", "numpy") if v.get(k)), d.get("git") and "git " + d["git"]]
    return "; ".join(p for p in parts if p)
