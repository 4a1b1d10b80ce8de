"""Stored runs as the tables need them: rows with raw samples, each run's environment and ceilings,
and the two choices every table makes (which rows may be compared, which is the fastest).

Kept apart from the tables so :mod:`fffbench.report`, :mod:`fffbench.plots` and
:mod:`fffbench.compare` pick rows, and compute speedups and their intervals, the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fffbench.timing.stats import ratio_ci

#: the axes two rows must share to be compared (one Table 2 per combination)
GROUP = ["run", "l2", "launch", "dtype", "batch", "width", "dout", "bias", "input", "seed", "threads"]


NUMERIC = ["hidden", "depth", "trees", "median_s", "iqr_s", "min_s", "mean_s", "std_s", "ci_low_s", "ci_high_s",
           "n_samples", "flops", "bytes", "gflops", "gbps", "rel_err", "path_agreement"]


def layer_label(r) -> str:
    if r["family"] == "ff":
        return f"FF H={int(r['hidden'])}"
    return f"FFF {int(r['trees'])}x{int(r['depth'])}"


@dataclass
class Runs:
    """Stored runs ready for the tables: rows (with raw samples), each run's run.json, by label.

    The label (``run`` column) is the run directory's name, so a copied run stays distinct from
    its original even though the rows inside keep the same ``run_id``.
    """

    df: pd.DataFrame
    envs: dict[str, dict]
    _ratios: dict = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.envs)

    def machine(self, run: str) -> str:
        return self.envs[run].get("machine") or "unknown machine"

    def ceilings(self, run: str, device: str, dtype: str) -> tuple[float, float]:
        """(GEMM FLOP/s at ``dtype``, copy bytes/s) measured on ``device``; NaN where not recorded."""
        c = (self.envs[run].get("ceilings") or {}).get(device) or {}
        gemm = (c.get("gemm_gflops") or {}).get(dtype)
        bw = c.get("copy_gbps")
        return (gemm * 1e9 if gemm else math.nan), (bw * 1e9 if bw else math.nan)

    def ratio(self, num, den) -> tuple[float, float, float]:
        """``median(num) / median(den)`` of two rows with its bootstrap interval (cached)."""
        key = (num["run"], num["row_id"], den["run"], den["row_id"])
        if key[:2] == key[2:]:
            return 1.0, 1.0, 1.0  # a row against itself (a baseline): exactly 1, no resampling noise
        if key not in self._ratios:
            a, b = num.get("samples"), den.get("samples")
            if isinstance(a, list) and isinstance(b, list) and a and b:
                self._ratios[key] = ratio_ci(a, b)
            else:
                self._ratios[key] = (num["median_s"] / den["median_s"], math.nan, math.nan)
        return self._ratios[key]


def load(*dirs) -> Runs:
    """Every row of the run directories ``dirs`` with samples, plus their environment records.

    A sharded run measured on several machines (hosts, or GPU models) becomes one run per machine,
    labelled ``<run>@<host>``, each with the environment record of that machine's shards: the
    tables then treat those machines as they treat separate runs (see :mod:`fffbench.shards.merge`).
    """
    from fffbench.shards.merge import machines
    from fffbench.store import RunStore

    if not dirs:
        raise ValueError("no run directory given")
    frames, envs = [], {}
    for d in dirs:
        store = RunStore.open(d)
        for suffix, env, f in machines(store, store.frame(samples=True)):
            name = Path(d).resolve().name + (f"@{suffix}" if suffix else "")
            label, i = name, 2
            while label in envs:
                label, i = f"{name}#{i}", i + 1
            envs[label] = dict(env)
            envs[label]["_path"] = str(Path(d))
            f = f.copy()
            f.insert(0, "run", label)
            frames.append(f)
    return Runs(prepare(pd.concat(frames, ignore_index=True)), envs)


def regime_parts(regime) -> tuple[str, str]:
    """(L2 state, launch mode) of a stored regime: ``cuda-events/flush-l2/graph`` -> (flush, graph).
    CPU wall-clock rows are warm and eager, so they share a table with the GPU's default regime."""
    parts = str(regime or "").split("/")
    l2 = next((p.removesuffix("-l2") for p in parts if p.endswith("-l2")), "warm")
    launch = "graph" if "graph" in parts else "eager"
    return l2, launch


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Columns the tables group on: ``dout`` (the output width, defaulting to the input width), and
    ``l2`` / ``launch`` split out of the regime (rows are only compared within one regime)."""
    df = df.copy()
    if "run" not in df:
        df["run"] = df["run_id"]
    for col in NUMERIC:  # a column of untimed rows only holds None: make it NaN, not object
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["dout"] = df["out_width"].where(df["out_width"].notna(), df["width"]).astype(int)
    parts = [regime_parts(r) for r in df["regime"]]
    df["l2"] = [p[0] for p in parts]
    df["launch"] = [p[1] for p in parts]
    return df


def warm(df: pd.DataFrame) -> pd.DataFrame:
    """The default regime: CPU wall clock, GPU warm L2 with eager launches."""
    return df[(df["l2"] == "warm") & (df["launch"] == "eager")]


def groups(df: pd.DataFrame):
    """(key dict, rows) per combination of :data:`GROUP` (one Table 2 each); the default regime first."""
    df = df.assign(_order=((df["l2"] != "warm") * 2 + (df["launch"] != "eager")))
    for key, grp in df.groupby(["_order"] + GROUP, dropna=False, sort=True):
        yield dict(zip(GROUP, key[1:])), grp.drop(columns="_order")


def where(rows: list[dict], **match) -> list[dict]:
    """The rows (records) whose columns equal ``match``; plain Python, as the tables select many
    small subsets and boolean indexing of a wide DataFrame costs a copy of every column each time."""
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def fastest(rows, family: str, level: str | None = None):
    """(row, note): the fastest correct row of ``family`` (at ``level``) among ``rows`` (records or a
    DataFrame); note says why there is none: 'none' when no backend of that family (and level) was
    run, else the statuses it got."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    sel = where(rows, backend_family=family, **({} if level is None else {"level": level}))
    if not sel:
        return None, "none"
    ok = where(sel, status="ok")
    if not ok:
        return None, "/".join(sorted({r["status"] for r in sel}))
    return min(ok, key=lambda r: r["median_s"]), ""


def pair(runs: Runs, num, den) -> dict:
    """The numbers of one speedup: both backends, both medians, the ratio and its interval."""
    out = {"ff_backend": None if num is None else num["backend"], "fff_backend": None if den is None else den["backend"],
           "ff_level": None if num is None else num["level"], "fff_level": None if den is None else den["level"],
           "ff_ms": math.nan, "fff_ms": math.nan, "speedup": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if num is not None and den is not None:
        out["ff_ms"], out["fff_ms"] = num["median_s"] * 1e3, den["median_s"] * 1e3
        out["speedup"], out["ci_low"], out["ci_high"] = runs.ratio(num, den)
    return out


def geomean(values) -> float:
    v = np.asarray([x for x in values if not math.isnan(x) and x > 0], dtype=float)
    return float(np.exp(np.log(v).mean())) if v.size else math.nan


