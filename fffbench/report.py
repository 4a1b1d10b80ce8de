"""Tables computed from stored runs: the paper's Table 2, best against best, absolute times, the
paper's figures beside their measured counterparts, and the suite's own comparisons.

Everything here is a pure function of stored rows (nothing is measured), returning DataFrames of
numbers; :mod:`fffbench.render` turns them into Markdown, CSV or LaTeX and :mod:`fffbench.plots`
into figures, so tests can check every number against the stored samples.

A speedup is ``median(FF) / median(FFF)`` with a bootstrap interval from the raw samples; "fastest"
is the fastest *correct* (status ok) backend of a family on the same device, dtype, batch, width,
input, seed and thread count, in the same regime (L2 state and launch mode; CPU rows count as warm
and eager), so a GPU suite timed in several regimes gets one table per regime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fffbench.registry import LEVELS
from fffbench.roofline import floor_seconds, roofline_limit
from fffbench.runs import GROUP, Runs, fastest, geomean, groups, layer_label, load, pair, warm, where  # noqa: F401

# --- the paper's figures (the one place they live) ------------------------------------------------

@dataclass(frozen=True)
class PaperFigure:
    """A speedup the paper (or a secondary source) reports, and the measurement it corresponds to.

    ``level`` is the FF side's level (the Table 2 column); ``fff_level`` the FFF side's: ``None``
    for the same level, ``"best"`` for the fastest FFF, or another level. ``kind="limit"`` is the
    neuron ratio (no device, no level).
    """

    key: str
    value: float
    what: str
    source: str
    device: str | None
    level: str | None
    hidden: int
    fff_level: str | None = None
    secondary: bool = False
    kind: str = "speedup"
    depth: int = 11
    trees: int = 1


#: the setting every figure was measured in (UltraFastBERT-1x11, BERT-base width, 128 x 128 tokens)
PAPER_SETTING = {"width": 768, "batch": 16384, "dtype": "float32"}
PAPER = (
    PaperFigure("cpu-78x", 78, "best FFF vs best FF (MKL sgemm, CPU Level 3)",
                "abstract, arXiv 2311.10770", "cpu", "cpu-l3", 4095, fff_level="best"),
    PaperFigure("gpu-bmm-40x", 40, "FFF PyTorch BMM vs FF PyTorch BMM (GPU)",
                "abstract, arXiv 2311.10770v2", "cuda", "pytorch-bmm", 3072),
    PaperFigure("limit-341x", 341, "neuron ratio 4095 / 12", "the authors (arXiv 2311.10770)",
                None, None, 4095, kind="limit"),
    PaperFigure("cpu-l2-255x", 255, "CPU Level 2, FF vs FFF (fair)", "secondary source",
                "cpu", "cpu-l2", 4095, secondary=True),
    PaperFigure("naive-cuda-118x", 118, "naive CUDA, FF vs FFF (fair)", "secondary source",
                "cuda", "naive-cuda", 3072, secondary=True),
    PaperFigure("native-vs-bmm-3.15x", 3.15, "FFF PyTorch BMM vs native fused FF (GPU)", "secondary source",
                "cuda", "gpu-native", 3072, fff_level="pytorch-bmm", secondary=True),
)

LEVEL_NAMES = {"cpu-l1": "Level 1", "cpu-l2": "Level 2", "cpu-l3": "Level 3", "gpu-native": "native fused",
               "pytorch-bmm": "PyTorch BMM", "naive-cuda": "naive CUDA", "optimized": "optimized"}
DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU"}


def column_label(device: str, level: str) -> str:
    return f"{DEVICE_NAMES.get(device, device)} {LEVEL_NAMES.get(level, level)}"


def _column_order(device: str, level: str):
    return (list(DEVICE_NAMES).index(device) if device in DEVICE_NAMES else 9,
            LEVELS.index(level) if level in LEVELS else 99, level)


def _ff(rows, hidden):
    return where(rows, family="ff", hidden=hidden)


def _fff(rows, depth, trees):
    return where(rows, family="fff", depth=depth, trees=trees)


def _configs(grp):
    ff = sorted(grp.loc[grp["family"] == "ff", "hidden"].dropna().unique())
    fff = grp[grp["family"] == "fff"].drop_duplicates(["depth", "trees"]).sort_values(["neurons_total", "trees"])
    return [int(h) for h in ff], [(int(r.depth), int(r.trees)) for r in fff.itertuples()]


def _one(rows, col):
    """The first value of ``col`` among ``rows`` (records) that is set (e.g. the layer's FLOPs)."""
    return next((float(r[col]) for r in rows if r[col] == r[col] and r[col] is not None), math.nan)


def paper_figure(key: dict, device, level, hidden, depth, trees, fff_level=None, kind="speedup"):
    """The paper's figure for exactly this comparison in exactly the paper's setting, or None."""
    if any(key.get(k) != v for k, v in PAPER_SETTING.items()) and kind != "limit":
        return None
    for f in PAPER:
        if (f.kind == kind and f.hidden == hidden and (f.depth, f.trees) == (depth, trees)
                and (kind == "limit" or (f.device == device and f.level == level and f.fff_level == fff_level))):
            return f
    return None


def _paper_cols(f: PaperFigure | None) -> dict:
    return {"paper": f.value if f else math.nan, "paper_secondary": bool(f and f.secondary),
            "paper_source": f.source if f else ""}


# --- Table 2 ---------------------------------------------------------------------------------------

def level_table(runs: Runs) -> pd.DataFrame:
    """The paper's Table 2, one line per cell (long format).

    For every group, every baseline FF width ``H`` (one table each), every configuration (the FF
    widths, then the FFF trees) and every (device, level) column that has a correct row: the
    baseline FF at that level over the configuration at that level. Where one family has no
    implementation at a level (CPU Level 3, GPU native: no FFF exists) the fastest correct backend
    of that family on the device stands in, as in the paper (``vs`` says which).
    """
    out = []
    for key, grp in groups(runs.df):
        ok = grp[grp["status"] == "ok"]
        cols = sorted(set(zip(ok["device"], ok["level"])), key=lambda c: _column_order(*c))
        hiddens, trees = _configs(grp)
        machine = runs.machine(key["run"])
        grp = grp.to_dict("records")
        for base in hiddens:
            base_rows = _ff(grp, base)
            base_flops = _one(base_rows, "flops")
            configs = [("ff", h, None, None) for h in hiddens] + [("fff", None, d, t) for d, t in trees]
            for fam, h, depth, tr in configs:
                rows = _ff(grp, h) if fam == "ff" else _fff(grp, depth, tr)
                used = h if fam == "ff" else int(rows[0]["neurons_used"])
                label = f"FF H={h}" if fam == "ff" else f"FFF {tr}x{depth}"
                lim = paper_figure(key, None, None, base, depth, tr, kind="limit") if fam == "fff" else None
                common = key | {"machine": machine, "baseline_hidden": base, "config": label, "config_family": fam,
                                "hidden": h, "depth": depth, "trees": tr, "neuron_limit": base / used,
                                "paper_limit": lim.value if lim else math.nan}
                for device, level in cols:
                    b, r = where(base_rows, device=device), where(rows, device=device)
                    cell = _cell(runs, key, b, r, fam, device, level, base_flops, base, depth, tr)
                    out.append(common | {"device": device, "level": level, "column": column_label(device, level)}
                               | cell)
    return pd.DataFrame(out)


def _cell(runs, key, base_rows, rows, fam, device, level, base_flops, base, depth, trees) -> dict:
    num, num_note = fastest(base_rows, "ff", level)
    den, den_note = fastest(rows, fam, level)
    vs = ""
    if fam == "fff" and (num_note == "none") != (den_note == "none"):
        if num_note == "none":  # e.g. an FFF-only level: the fastest FF stands in
            (num, num_note), vs = fastest(base_rows, "ff"), "best FF"
        else:                   # CPU Level 3, GPU native: no FFF exists, the fastest FFF stands in
            (den, den_note), vs = fastest(rows, "fff"), "best FFF"
    notes = [f"{side}: {n}" for side, n in (("FF", num_note), (fam.upper(), den_note)) if n and n != "none"]
    gemm, bw = runs.ceilings(key["run"], device, key["dtype"])
    if fam == "fff":
        roof = roofline_limit(base_flops, _one(rows, "bytes"), gemm, bw)
    else:
        flops, nbytes = _one(rows, "flops"), _one(rows, "bytes")
        roof = (floor_seconds(base_flops, _one(base_rows, "bytes"), gemm, bw) / floor_seconds(flops, nbytes, gemm, bw)
                if not (math.isnan(bw) or math.isnan(gemm)) else math.nan)
    fig = None
    if fam == "fff":
        fig = paper_figure(key, device, level, base, depth, trees, fff_level="best" if vs == "best FFF" else None)
    blank = num_note == "none" and den_note == "none"
    return (pair(runs, num, den) | {"vs": vs, "note": "not run at this level" if blank else "; ".join(notes),
                                    "roofline_limit": roof} | _paper_cols(fig))


# --- best against best, absolute times, the paper's figures ------------------------------------------

def best_table(runs: Runs) -> pd.DataFrame:
    """Fastest correct FFF against fastest correct FF, per device and (FF width, FFF tree)."""
    out = []
    for key, grp in groups(runs.df):
        hiddens, trees = _configs(grp)
        for device in sorted(set(grp.loc[grp["status"] == "ok", "device"]), key=lambda d: _column_order(d, "")):
            on = where(grp.to_dict("records"), device=device)
            gemm, bw = runs.ceilings(key["run"], device, key["dtype"])
            for h in hiddens:
                ffr = _ff(on, h)
                num, nn = fastest(ffr, "ff")
                for depth, tr in trees:
                    fr = _fff(on, depth, tr)
                    den, dn = fastest(fr, "fff")
                    fig = next((f for f in PAPER if f.fff_level == "best" and
                                paper_figure(key, device, f.level, h, depth, tr, "best") is f), None)
                    if fig is not None and (num is None or num["level"] != fig.level):
                        fig = None  # the paper's best FF is its Level 3 / native layer; ours must be too
                    out.append(key | {"machine": runs.machine(key["run"]), "device": device, "ff_hidden": h,
                                      "fff": f"{tr}x{depth}", "depth": depth, "trees": tr}
                               | pair(runs, num, den)
                               | {"neuron_limit": h / (tr * (depth + 1)),
                                  "roofline_limit": roofline_limit(_one(ffr, "flops"), _one(fr, "bytes"), gemm, bw),
                                  "note": "; ".join(f"{s}: {n}" for s, n in (("FF", nn), ("FFF", dn)) if n)}
                               | _paper_cols(fig))
    return pd.DataFrame(out)


def geomean_summary(best: pd.DataFrame) -> pd.DataFrame:
    """Geometric mean (and range) of the best-against-best speedups per run and device."""
    if best.empty:
        return pd.DataFrame(columns=["run", "machine", "device", "n", "geomean", "min", "max"])
    rows = []
    for (run, machine, device), g in best.groupby(["run", "machine", "device"], sort=False):
        s = g["speedup"].dropna()
        rows.append({"run": run, "machine": machine, "device": device, "n": len(s), "geomean": geomean(s),
                     "min": s.min() if len(s) else math.nan, "max": s.max() if len(s) else math.nan})
    return pd.DataFrame(rows)


def absolute_table(runs: Runs) -> pd.DataFrame:
    """Every timed row: median and its interval, achieved GB/s and GFLOP/s as fractions of the
    run's measured ceilings, and the roofline floor (the larger of compute and memory time)."""
    df = runs.df[runs.df["status"] == "ok"]
    out = []
    for _, r in df.iterrows():
        gemm, bw = runs.ceilings(r["run"], r["device"], r["dtype"])
        floor = floor_seconds(r["flops"], r["bytes"], gemm, bw) if not math.isnan(bw) else math.nan
        out.append({"run": r["run"], "machine": r["machine"], "device": r["device"], "dtype": r["dtype"],
                    "batch": r["batch"], "width": r["width"], "threads": r["threads"], "layer": layer_label(r),
                    "backend": r["backend"], "level": r["level"], "regime": r["regime"],
                    "median_ms": r["median_s"] * 1e3, "ci_low_ms": r["ci_low_s"] * 1e3,
                    "ci_high_ms": r["ci_high_s"] * 1e3, "n": int(r["n_samples"]), "noisy": bool(r["noisy"]),
                    "gbps": r["gbps"], "bw_frac": r["gbps"] * 1e9 / bw, "gflops": r["gflops"],
                    "gemm_frac": r["gflops"] * 1e9 / gemm, "floor_ms": floor * 1e3,
                    "x_floor": r["median_s"] / floor})
    return pd.DataFrame(out)


def untimed_table(runs: Runs) -> pd.DataFrame:
    """Rows that were not timed (skipped, wrong, error), counted per device, backend and reason."""
    df = runs.df[runs.df["status"] != "ok"]
    cols = ["run", "device", "backend", "status", "reason"]
    if df.empty:
        return pd.DataFrame(columns=cols + ["rows"])
    return df.fillna({"reason": ""}).groupby(cols, sort=False).size().rename("rows").reset_index()


def paper_table(runs: Runs, levels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each figure of :data:`PAPER` beside its measured counterpart in the paper's setting (one row
    per matching group; a row with a note when the run does not contain that setting)."""
    levels = level_table(runs) if levels is None else levels
    out = []
    for f in PAPER:
        base = {"figure": f.key, "what": f.what, "paper": f.value, "secondary": f.secondary, "source": f.source,
                "device": f.device}
        found = set()
        for key, grp in groups(warm(runs.df)):  # the paper timed warm caches and eager launches
            if f.kind != "limit" and any(key[k] != v for k, v in PAPER_SETTING.items()):
                continue
            if f.kind == "limit" and key["run"] in found:
                continue  # a neuron ratio does not depend on the batch: once per run
            on = grp.to_dict("records")
            on = on if f.device is None else where(on, device=f.device)
            ffr, fr = _ff(on, f.hidden), _fff(on, f.depth, f.trees)
            if not ffr or not fr:
                continue
            row = base | {"run": key["run"], "machine": runs.machine(key["run"]), "batch": key["batch"],
                          "threads": key["threads"], "neuron_limit": f.hidden / (f.trees * (f.depth + 1))}
            if f.kind == "limit":
                row |= {"measured": row["neuron_limit"], "note": "computed from the layer shapes"}
            else:
                num, nn = fastest(ffr, "ff", f.level)
                den, dn = fastest(fr, "fff", None if f.fff_level == "best" else (f.fff_level or f.level))
                cell = levels[(levels["run"] == key["run"]) & (levels["batch"] == key["batch"])
                              & (levels["baseline_hidden"] == f.hidden) & (levels["config"] == f"FFF {f.trees}x{f.depth}")
                              & (levels["device"] == f.device) & (levels["level"] == f.level)]
                row |= pair(runs, num, den) | {"measured": math.nan, "note": "; ".join(
                    f"{s}: {'not run' if n == 'none' else n}" for s, n in (("FF", nn), ("FFF", dn)) if n)}
                row["measured"] = row["speedup"]
                row["roofline_limit"] = cell["roofline_limit"].iloc[0] if len(cell) else math.nan
            out.append(row)
            found.add(key["run"])
        if not found:
            need = f"FF H={f.hidden} and FFF {f.trees}x{f.depth}"
            if f.kind != "limit":
                need += (f" on {DEVICE_NAMES.get(f.device, f.device)} at B={PAPER_SETTING['batch']}, "
                         f"d={PAPER_SETTING['width']}, {PAPER_SETTING['dtype']}")
            out.append(base | {"measured": math.nan, "note": f"not in this run (needs {need})"})
    return pd.DataFrame(out)




# --- the environment footnote ---------------------------------------------------------------------------

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
    blas = sorted({f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads, "
                   f"{b.get('threading_layer')})" for b in env.get("blas") or []})
    if blas:
        items.append(("BLAS", "; ".join(blas)))
    for g in env.get("gpus") or []:
        parts = [(g.get("name"), "{}"), (g.get("capability"), "sm {}"), (g.get("sm_count"), "{} SMs"),
                 (g.get("memory_gib"), "{} GiB"), (g.get("driver"), "driver {}"), (g.get("cuda"), "CUDA {}"),
                 (g.get("max_clocks_mhz"), "max clocks (SM, memory) {}")]
        items.append((f"GPU {g.get('index', 0)}", ", ".join(f.format(v) for v, f in parts if v is not None)))
    for dev, c in (env.get("ceilings") or {}).items():
        if "error" in c:
            items.append((f"ceilings {dev}", f"not measured: {c['error']}"))
            continue
        gemm = ", ".join(f"{k} {v:.4g}" for k, v in (c.get("gemm_gflops") or {}).items())
        at = f" at {c['threads']} thread{'s' if c['threads'] != 1 else ''}" if "threads" in c else ""
        items.append((f"ceilings {dev}", f"copy {c.get('copy_gbps', math.nan):.4g} GB/s, GEMM {gemm} GFLOP/s{at}"))
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
    parts = [d.get("machine"), d.get("GPU 0"), d.get("BLAS"), d.get("ceilings cpu") and "CPU " + d["ceilings cpu"],
             d.get("ceilings cuda") and "GPU " + d["ceilings cuda"],
             ", ".join(f"{k} {v[k]}" for k in ("torch", "numpy") if v.get(k)), d.get("git") and "git " + d["git"]]
    return "; ".join(p for p in parts if p)


# the suite's comparisons and the end-of-run summary live in their own modules; kept importable here
from fffbench.comparisons import comparison_table, suite_comparisons, times_table  # noqa: F401


def print_summary(df: pd.DataFrame, comparisons, machine: str, console=None) -> None:
    """The end-of-run tables (see :func:`fffbench.render.print_summary`)."""
    from fffbench.render import print_summary as _print

    _print(df, comparisons, machine, console)
