"""The numbers of the real-model tables: end to end (what share of an encoder's time is its
feedforward, and how much of a layer speedup the encoder keeps), routing statistics per layer, and
how each FFF backend's time moves with the routing of real inputs.

Pure functions of stored runs (:mod:`fffbench.runs`), like :mod:`fffbench.report`; no torch, no
backend registry. Definitions:

- **feedforward share** of an encoder row: ``layers x t_layer / t_encoder``, where ``t_layer`` is
  the stored layer row of the same backend, layer shape, tokens (the encoder's batch), width,
  device, dtype, threads, regime and checkpoint; where there are several (the layers 0, 7, 15 of
  a checkpoint), their geometric mean, on the most real input measured (a capture, else norm2,
  else Gaussian rows). It estimates the share; a value above 100% says the layer timed alone and
  inside the model differ (caches, the other layers' traffic).
- **encoder speedup**: the BERT encoder's time over this encoder's (paired: both are measured in
  the same worker processes); the BERT baseline is the fastest correct BERT encoder of the group.
- **layer speedup**: the BERT baseline's FF layer over this backend's FFF layer, per model layer on
  the same input (paired where measured together), geometric mean over the layers.
- **Amdahl bound**: the encoder speedup that layer speedup allows, ``1 / ((1 - s) + s / S)`` with
  ``s`` the BERT encoder's feedforward share and ``S`` the layer speedup; **FF-free limit**
  ``1 / (1 - s)``: the encoder speedup with a feedforward that costs nothing.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fffbench.runs import Runs, fastest, geomean, layer_label, layer_rows, where

_ENC_GROUP = ["run", "device", "dtype", "batch", "width", "seed", "threads", "regime", "model", "model_layers",
              "seq_len", "heads", "checkpoint"]
_MATCH = ["run", "backend", "device", "dtype", "threads", "batch", "width", "regime"]


def _set(v) -> bool:
    return v is not None and v == v and v != ""


def _same(a, b) -> bool:
    return (not _set(a) and not _set(b)) or a == b


def input_rank(kind) -> int:
    """Real inputs first: a capture, then norm2 rows, then Gaussian rows, then anything else."""
    kind = str(kind)
    return 0 if kind.startswith("activations") else 1 if kind == "norm2" else 2 if kind == "gaussian" else 3


def _shape_match(r, enc) -> bool:
    if r["family"] != enc["family"]:
        return False
    if r["family"] == "ff":
        return r["hidden"] == enc["hidden"]
    return r["depth"] == enc["depth"] and r["trees"] == enc["trees"]


def layer_rows_of(layers: list[dict], enc: dict, backend: str | None = None) -> list[dict]:
    """The correct layer rows an encoder row's feedforward is measured by (same backend, shape,
    tokens, width, device, dtype, threads, regime, checkpoint), on the most real input there is."""
    backend = backend or enc["backend"]
    sel = [r for r in layers if r["status"] == "ok" and all(r[k] == enc[k] for k in _MATCH if k != "backend")
           and r["backend"] == backend and _shape_match(r, enc) and _same(r.get("checkpoint"), enc.get("checkpoint"))]
    if not sel:
        return []
    best = min(input_rank(r["input"]) for r in sel)
    return [r for r in sel if input_rank(r["input"]) == best]


def _layer_speedup(runs: Runs, ff_rows: list[dict], fff_rows: list[dict]) -> float:
    """Geometric mean over model layers (and inputs) of the FF layer's time over the FFF layer's."""
    ratios = []
    for den in fff_rows:
        num = next((r for r in ff_rows if r["input"] == den["input"] and _same(r.get("layer_index"),
                                                                              den.get("layer_index"))), None)
        if num is not None:
            ratios.append(runs.ratio(num, den)[0])
    if not ratios and ff_rows and fff_rows:
        return geomean([r["median_s"] for r in ff_rows]) / geomean([r["median_s"] for r in fff_rows])
    return geomean(ratios)


def _model_name(r) -> str:
    if r["family"] == "ff":
        return f"BERT (FF H={int(r['hidden'])})"
    return f"UltraFastBERT-{int(r['trees'])}x{int(r['depth'])}"


def end_to_end_table(runs: Runs) -> pd.DataFrame:
    """One line per encoder row: its time, its feedforward's share, and its speedups (module docstring)."""
    df = runs.df[runs.df["model"].notna()] if "model" in runs.df else runs.df.iloc[0:0]
    if df.empty:
        return pd.DataFrame()
    layers = layer_rows(runs.df).to_dict("records")
    out = []
    for _, grp in df.groupby(_ENC_GROUP, dropna=False, sort=False):
        rows = sorted(grp.to_dict("records"), key=lambda r: (r["family"] != "ff", r["backend"]))
        base, _ = fastest(rows, "ff")
        base_layers = layer_rows_of(layers, base) if base is not None else []
        base_share = _share(base, base_layers)
        for r in rows:
            out.append(_line(runs, r, base, base_layers, base_share, layers))
    return pd.DataFrame(out)


def _share(r, layer_rs) -> float:
    if r is None or r["status"] != "ok" or not layer_rs:
        return math.nan
    return int(r["model_layers"]) * geomean([x["median_s"] for x in layer_rs]) / r["median_s"]


def _line(runs: Runs, r: dict, base, base_layers, base_share: float, layers) -> dict:
    mine = layer_rows_of(layers, r) if r["status"] == "ok" else []
    line = {"run": r["run"], "machine": runs.machine(r["run"]), "device": r["device"], "dtype": r["dtype"],
            "batch": int(r["batch"]), "seq_len": int(r["seq_len"]), "sequences": int(r["batch"]) // int(r["seq_len"]),
            "layers": int(r["model_layers"]), "threads": r["threads"], "regime": r["regime"],
            "checkpoint": r.get("checkpoint"), "model": _model_name(r), "family": r["family"], "backend": r["backend"],
            "status": r["status"], "note": (r.get("reason") or "") if r["status"] != "ok" else "",
            "encoder_ms": r["median_s"] * 1e3, "ci_low_ms": r["ci_low_s"] * 1e3, "ci_high_ms": r["ci_high_s"] * 1e3,
            "layer_ms": geomean([x["median_s"] for x in mine]) * 1e3 if mine else math.nan,
            "layer_input": mine[0]["input"] if mine else None, "layer_rows": len(mine),
            "ff_share": _share(r, mine), "baseline": base["backend"] if base is not None else None,
            "baseline_ms": base["median_s"] * 1e3 if base is not None else math.nan,
            "baseline_share": base_share, "encoder_speedup": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "paired": False, "layer_speedup": math.nan, "amdahl_bound": math.nan,
            "ff_free_limit": 1.0 / (1.0 - base_share) if 0 <= base_share < 1 else math.nan,
            "rel_err": r.get("rel_err"), "token_agreement": r.get("token_agreement"),
            "path_agreement": r.get("path_agreement")}
    if r["status"] == "ok" and base is not None:
        line["encoder_speedup"], line["ci_low"], line["ci_high"], line["paired"] = runs.ratio(base, r)
        if r["family"] == "fff" and mine:
            bl = [x for x in base_layers if x["input"] == mine[0]["input"]] or base_layers
            line["layer_speedup"] = _layer_speedup(runs, bl, mine)
        elif r["row_id"] == base["row_id"]:
            line["layer_speedup"] = 1.0
        s, S = base_share, line["layer_speedup"]
        if math.isfinite(s) and math.isfinite(S) and S > 0:
            line["amdahl_bound"] = 1.0 / ((1.0 - s) + s / S)
    return line


# --- routing ------------------------------------------------------------------------------------

def routing_table(runs: Runs) -> pd.DataFrame:
    """One line per routing record: a layer on an input (or a model layer inside an encoder)."""
    out = []
    for rec in runs.routing:
        levels = rec.get("levels") or []
        mid = levels[len(levels) // 2] if levels else {}
        leaf = levels[-1] if levels else {}
        ckpt = rec.get("checkpoint")
        out.append({"run": rec.get("run"), "source": rec.get("source"), "model": rec.get("model"),
                    "checkpoint": Path(str(ckpt)).name if _set(ckpt) else "random weights",
                    "layer_index": rec.get("layer_index"), "input": "tokens (in the encoder)"
                    if rec.get("source") == "encoder" else rec.get("input"), "rows": rec.get("rows"),
                    "shape": f"{rec.get('trees')}x{rec.get('depth')}", "depth": rec.get("depth"),
                    "trees": rec.get("trees"), "leaves": rec.get("leaves"),
                    "entropy_bits": rec.get("entropy_bits"), "entropy_max_bits": rec.get("entropy_max_bits"),
                    "entropy_ratio": rec.get("entropy_ratio"), "effective_leaves": rec.get("effective_leaves"),
                    "max_leaf_share": rec.get("max_leaf_share"), "empty_leaf_share": rec.get("empty_leaf_share"),
                    "mid_level": mid.get("level"), "mid_distinct": mid.get("distinct"),
                    "mid_possible": mid.get("possible"), "mid_max_share": mid.get("max_share"),
                    "leaf_distinct": leaf.get("distinct"), "leaf_possible": leaf.get("possible"),
                    "leaf_uniform": leaf.get("uniform"), "root_right_share": levels[0].get("right_share")
                    if levels else None, "near_zero_fp32": rec.get("near_zero_fp32"),
                    "near_zero_bf16": rec.get("near_zero_bf16"), "near_tie_rows_bf16": rec.get("near_tie_rows_bf16"),
                    "bf16_path_agreement": rec.get("bf16_path_agreement"), "key": rec.get("key")})
    if not out:
        return pd.DataFrame()
    t = pd.DataFrame(out)
    t["_layer"] = t["layer_index"].fillna(-1)
    t = t.sort_values(["run", "source", "checkpoint", "_layer", "input"], kind="stable", key=lambda c: c.map(str)
                      if c.dtype == object else c)
    return t.drop(columns="_layer").reset_index(drop=True)


def routing_time_table(runs: Runs) -> pd.DataFrame:
    """Each FFF backend's time on each input of a model layer against its time on Gaussian rows of
    the same layer: the cost (or gain) of real routing for that kernel."""
    df = layer_rows(runs.df)
    df = df[(df["family"] == "fff") & (df["status"] == "ok") & df["layer_index"].notna()] if len(df) else df
    if df.empty:
        return pd.DataFrame()
    keys = ["run", "device", "dtype", "batch", "width", "threads", "regime", "checkpoint", "layer_index", "depth",
            "trees", "backend"]
    out = []
    for key, grp in df.groupby(keys, dropna=False, sort=True):
        rows = grp.to_dict("records")
        gauss = next(iter(where(rows, input="gaussian")), None)
        if gauss is None:
            continue
        for r in sorted(rows, key=lambda x: input_rank(x["input"])):
            if r["input"] == "gaussian":
                continue
            ratio, lo, hi, paired = runs.ratio(r, gauss)
            out.append(dict(zip(keys, key)) | {"layer": layer_label(r), "input": r["input"],
                                               "gaussian_ms": gauss["median_s"] * 1e3, "input_ms": r["median_s"] * 1e3,
                                               "ratio": ratio, "ci_low": lo, "ci_high": hi, "paired": paired})
    return pd.DataFrame(out)


def leaf_shares(rec: dict) -> np.ndarray:
    """A routing record's leaf shares, largest first, averaged over its trees (empty without counts)."""
    counts = rec.get("leaf_counts")
    if not counts:
        return np.array([])
    c = np.sort(np.asarray(counts, dtype=float), axis=1)[:, ::-1]
    return (c / c.sum(axis=1, keepdims=True)).mean(axis=0)


__all__ = ["end_to_end_table", "input_rank", "layer_rows_of", "leaf_shares", "routing_table", "routing_time_table"]
