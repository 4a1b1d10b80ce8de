"""Stored runs as the tables need them, and the choices every table makes: which rows may be
compared, which is the fastest, and what the ratio of two rows is.

The report (:mod:`fffbench.report`), the plots, ``compare`` and the runner's declared comparisons
all select rows and form ratios here, so they cannot disagree. Comparable rows are defined once,
from the axes in :mod:`fffbench.vocab`: a table compares rows of one run, regime and workload
(the device aside: Table 2 sets devices side by side); a ratio's two rows must also have the same
output width and bias.

A ratio of two rows measured in the same worker processes is *paired* (formed round by round, see
:func:`fffbench.timing.stats.paired_ratio`); a stored ratio record of the run is used as it is.
Rows measured apart (or in runs stored before worker processes) get the ratio of their medians
with an interval from their samples, and are marked unpaired.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fffbench import paper
from fffbench.timing.regime import Regime
from fffbench.timing.stats import RERUN_WIDENING, as_rerun, log_ratio_test, paired_ratio, ratio_ci, t_quantile
from fffbench.vocab import LAYER_AXES, REGIME_AXES, WORKLOAD_AXES

#: the axes two rows of one table share (one Table 2 per combination; devices sit side by side); the
#: layers of a checkpoint each get their own tables
GROUP = ["run", *REGIME_AXES] + [a for a in WORKLOAD_AXES if a != "device"] + ["width", "dout", "bias", "checkpoint",
                                                                                "layer_index"]
#: what makes a row a model's (an encoder) rather than a layer's, and which layer of a model it is
MODEL_AXES = ("model", "model_layers", "seq_len", "heads", "layer_index", "checkpoint_sha256")
#: the axes on which a case of one run is matched with the same case of another (``compare``)
CASE = [*LAYER_AXES, *WORKLOAD_AXES, "backend", *REGIME_AXES, *MODEL_AXES]
NUMERIC = ["hidden", "depth", "trees", "median_s", "iqr_s", "min_s", "mean_s", "std_s", "ci_low_s", "ci_high_s",
           "n_samples", "flops", "bytes", "gflops", "gbps", "rel_err", "path_agreement", "n_processes"]


def _set(v) -> bool:
    return v is not None and v == v


def layer_label(r) -> str:
    """``FF H=3072``, ``FFF 1x11``; a model layer ``FFF 1x11 L7``; an encoder ``BERT encoder (FF H=3072)``."""
    label = f"FF H={int(r['hidden'])}" if r["family"] == "ff" else f"FFF {int(r['trees'])}x{int(r['depth'])}"
    if _set(r.get("model")):
        name = "BERT" if r["family"] == "ff" else "UltraFastBERT"
        return f"{name} encoder ({label})"
    return label + (f" L{int(r['layer_index'])}" if _set(r.get("layer_index")) else "")


def layer_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of single layers (not of an encoder): the paper's tables compare layers."""
    return df[df["model"].isna()] if "model" in df else df


@dataclass
class Runs:
    """Stored runs ready for the tables: rows (with samples), each run's run.json and stored
    ratios, by label (the run directory's name, so a copied run stays distinct from its original)."""

    df: pd.DataFrame
    envs: dict[str, dict]
    paths: dict[str, str] = field(default_factory=dict)
    stored_ratios: dict = field(default_factory=dict)
    _ratios: dict = field(default_factory=dict, repr=False)
    #: routing records (routing.jsonl, :mod:`fffbench.routing`), each with its run's label as ``run``
    routing: list = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.envs)

    def machine(self, run: str) -> str:
        return self.envs[run].get("machine") or "unknown machine"

    def ceilings(self, run: str, device: str, dtype: str, at: str = "ceilings") -> tuple[float, float]:
        """(GEMM FLOP/s at ``dtype``, copy bytes/s) measured on ``device``; NaN where not recorded."""
        c = (self.envs[run].get(at) or {}).get(device) or {}
        gemm = (c.get("gemm_gflops") or {}).get(dtype)
        bw = c.get("copy_gbps")
        return (gemm * 1e9 if gemm else math.nan), (bw * 1e9 if bw else math.nan)

    def comparisons(self, run: str) -> list:
        """The run's declared comparisons (validated, as run.json records them)."""
        return [paper.Comparison.from_dict(c) for c in self.envs[run].get("comparisons") or []]

    def ratio(self, num, den) -> tuple[float, float, float, bool]:
        """``num / den`` of two rows with its 95% interval, and whether it was paired (cached)."""
        key = (num["run"], num["row_id"], den["run"], den["row_id"])
        if key[:2] == key[2:]:
            return 1.0, 1.0, 1.0, True  # a row against itself (a baseline): exactly 1
        if key not in self._ratios:
            self._ratios[key] = _ratio(self, num, den)
        return self._ratios[key]


def _processes(row) -> dict:
    procs = row.get("processes")
    if not isinstance(procs, list):
        return {}
    return {p["process"]: (p["samples"], p["rounds"]) for p in procs if p["samples"]}


def _ratio(runs: Runs, num, den) -> tuple[float, float, float, bool]:
    stored = runs.stored_ratios.get((num["run"], num["row_id"], den["row_id"]))
    if stored is not None and stored.get("attempt") == num.get("attempt") == den.get("attempt"):
        lo, hi = stored["ci_low"], stored["ci_high"]
        if stored.get("interval") is None and (stored.get("n_processes") or 0) > 1:  # stored before re-run intervals
            lo, hi = as_rerun(stored["ratio"], lo, hi)
        return stored["ratio"], lo, hi, True
    same = (num["run"] == den["run"] and isinstance(num.get("attempt"), str) and num.get("attempt") == den.get("attempt"))
    if same:
        r = paired_ratio(_processes(num), _processes(den))
        if r["n_pairs"]:
            return r["ratio"], r["ci_low"], r["ci_high"], True
    pa, pb = _processes(num), _processes(den)
    if len(pa) > 1 and len(pb) > 1:  # unpaired, measured in several processes: Welch on process medians
        ma = [float(np.median(s)) for s, _ in pa.values()]
        mb = [float(np.median(s)) for s, _ in pb.values()]
        t = log_ratio_test(mb, ma)
        r = math.exp(t["log_ratio"])
        if math.isfinite(t["se"]):  # a re-run interval: both runs' errors, as for paired ratios
            half = t_quantile(0.975, t["df"]) * t["se"] * RERUN_WIDENING
            return r, r * math.exp(-half), r * math.exp(half), False
        return r, math.nan, math.nan, False
    a, b = num.get("samples"), den.get("samples")
    if isinstance(a, list) and isinstance(b, list) and a and b:
        return (*_bootstrap(tuple(a), tuple(b)), False)
    return num["median_s"] / den["median_s"], math.nan, math.nan, False


@functools.lru_cache(maxsize=20000)
def _bootstrap(a: tuple, b: tuple) -> tuple[float, float, float]:
    """The bootstrap of two rows' samples, remembered: every table of every report of a run (and the
    README's) asks for the same pairs, and a bootstrap of thousands of samples is not free."""
    return ratio_ci(a, b)


def load(*dirs) -> Runs:
    """Every row of the run directories ``dirs`` with samples, their environment records and
    stored ratios. A sharded run measured on several machines (hosts, or GPU models) becomes one
    run per machine, labelled ``<run>@<host>`` (see :mod:`fffbench.shards.merge`)."""
    from fffbench.shards.merge import machines
    from fffbench.store import RunStore

    if not dirs:
        raise ValueError("no run directory given")
    frames, envs, paths, ratios, routing = [], {}, {}, {}, []
    for d in dirs:
        store = RunStore.open(d)
        stored = store.ratios()
        route = store.routing()
        for suffix, env, f in machines(store, store.frame(samples=True)):
            name = Path(d).resolve().name + (f"@{suffix}" if suffix else "")
            label, i = name, 2
            while label in envs:
                label, i = f"{name}#{i}", i + 1
            env = dict(env)
            if "comparisons" not in env:
                env["comparisons"] = legacy_comparisons(store.path / "suite.yaml")
            envs[label], paths[label] = env, str(Path(d))
            for r in stored:
                ratios[(label, r["numerator"], r["denominator"])] = r
            routing += [r | {"run": label} for r in route]
            f = f.copy()
            f.insert(0, "run", label)
            frames.append(f)
    return Runs(prepare(pd.concat(frames, ignore_index=True)), envs, paths, ratios, routing=routing)


def legacy_comparisons(suite_yaml: Path) -> list[dict]:
    """The comparisons of a run stored before run.json recorded them, read from its suite.yaml
    without validation (it may name backends this installation lacks). Their inline paper values
    are ignored: figures come from :mod:`fffbench.paper` only."""
    import yaml

    try:
        data = yaml.safe_load(suite_yaml.read_text()) or {}
        items = data.get("comparisons") or []
        out = []
        for c in items:
            num, den, hidden, device = c["numerator"], c["denominator"], c.get("hidden"), c.get("device")
            fig = paper.matching(num, den, device, hidden, 11, 1) if hidden else None
            out.append({"label": str(c["label"]), "numerator": num, "denominator": den, "hidden": hidden,
                        "device": device, "figure": fig.key if fig else None})
        return out
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Columns the tables group on: ``dout`` (the output width, defaulting to the input width), and
    ``l2`` / ``launch`` from the regime (rows are only compared within one regime)."""
    df = df.copy()
    if "run" not in df:
        df["run"] = df["run_id"]
    for col in NUMERIC:  # a column of untimed rows only holds None: make it NaN, not object
        if col not in df:
            df[col] = math.nan
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["dout"] = df["out_width"].where(df["out_width"].notna(), df["width"]).astype(int)
    regimes = [Regime.parse(r) for r in df["regime"]]
    df["l2"] = [r.l2 for r in regimes]
    df["launch"] = [r.launch for r in regimes]
    for col in ("samples", "processes", "attempt", "interval"):
        if col not in df:
            df[col] = None
    df["interval"] = df["interval"].astype(object)
    old = df["interval"].isna() & (df["n_processes"] > 1)  # stored before re-run intervals: widen alike
    if old.any():
        widened = [as_rerun(m, lo, hi) for m, lo, hi in zip(df.loc[old, "median_s"], df.loc[old, "ci_low_s"],
                                                             df.loc[old, "ci_high_s"])]
        df.loc[old, "ci_low_s"] = [w[0] for w in widened]
        df.loc[old, "ci_high_s"] = [w[1] for w in widened]
        df.loc[old, "interval"] = "rerun"
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
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def fastest(rows, family: str, level: str | None = None):
    """(row, note): the fastest correct row of ``family`` (at ``level``) among ``rows``; note says
    why there is none: 'none' when no backend of that family (and level) was run, else the
    statuses it got."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    sel = where(rows, backend_family=family, **({} if level is None else {"level": level}))
    if not sel:
        return None, "none"
    ok = where(sel, status="ok")
    if not ok:
        return None, "/".join(sorted({str(r["status"]) for r in sel}))
    return min(ok, key=lambda r: r["median_s"]), ""


def _dout(r) -> int:
    return int(r["out_width"]) if r.get("out_width") not in (None,) and r.get("out_width") == r.get("out_width") \
        else int(r["width"])


def pick(rows: list[dict], backend: str):
    """The row of ``backend`` among ``rows``, or the fastest correct one for 'best-ff'/'best-fff'."""
    if backend in paper.BEST:
        return fastest(rows, paper.BEST[backend])[0]
    return next(iter(where(rows, backend=backend)), None)


def comparison_pairs(comp, rows: list[dict]) -> list[tuple]:
    """(numerator row, denominator row, FF width, depth, trees) for a declared comparison among
    ``rows`` of one workload and regime: for each FF width (the comparison's, or every one) and
    each FFF tree of the same output width and bias. A side with no row gives None.

    Bias is matched like with like where the FF rows have that bias; where every FF row has the
    other one, they are the baseline: a model's own layers (crammed BERT's FF has no biases,
    UltraFastBERT's FFF has input biases) are compared as the two models have them."""
    out = []
    ff = where(rows, family="ff")
    fff = where(rows, family="fff")
    hiddens = [comp.hidden] if comp.hidden else sorted({int(r["hidden"]) for r in ff})
    trees = sorted({(int(r["depth"]), int(r["trees"]), _dout(r), bool(r["bias"])) for r in fff})
    ff_biases = {bool(r["bias"]) for r in ff}
    for h in hiddens:
        for depth, tr, dout, bias in trees:
            num_rows = [r for r in where(ff, hidden=h)
                        if _dout(r) == dout and (bool(r["bias"]) == bias or bias not in ff_biases)]
            den_rows = [r for r in where(fff, depth=depth, trees=tr) if _dout(r) == dout and bool(r["bias"]) == bias]
            out.append((pick(num_rows, comp.numerator), pick(den_rows, comp.denominator), h, depth, tr))
    return out


def pair(runs: Runs, num, den) -> dict:
    """The numbers of one speedup: both backends, both medians, the ratio, its interval and
    whether it was paired."""
    out = {"ff_backend": None if num is None else num["backend"], "fff_backend": None if den is None else den["backend"],
           "ff_level": None if num is None else num["level"], "fff_level": None if den is None else den["level"],
           "ff_ms": math.nan, "fff_ms": math.nan, "speedup": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "paired": False}
    if num is not None and den is not None:
        out["ff_ms"], out["fff_ms"] = num["median_s"] * 1e3, den["median_s"] * 1e3
        out["speedup"], out["ci_low"], out["ci_high"], out["paired"] = runs.ratio(num, den)
    return out


def geomean(values) -> float:
    v = np.asarray([x for x in values if not math.isnan(x) and x > 0], dtype=float)
    return float(np.exp(np.log(v).mean())) if v.size else math.nan


__all__ = ["CASE", "GROUP", "MODEL_AXES", "Runs", "comparison_pairs", "fastest", "geomean", "groups", "layer_label",
           "layer_rows", "load",
           "pair", "pick", "prepare", "warm", "where"]
