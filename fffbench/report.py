"""The paper-facing tables of stored runs: Table 2 by level, best against best, the paper's figures
beside their one measured value, and the suite's declared comparisons.

Pure functions of stored rows (nothing is measured), returning DataFrames of numbers;
:mod:`fffbench.render` lays them out and :mod:`fffbench.plots` draws them. Rows are selected and
ratios formed by :mod:`fffbench.runs` (paired where the rows were measured together). A paper
figure (:mod:`fffbench.paper`) appears beside exactly one measured value: the ratio of the rows
its definition names, computed once by :func:`figure_values`; a table cell or a comparison shows
the figure only when its two rows are exactly those.
"""
from __future__ import annotations

import math

import pandas as pd

from fffbench import paper
from fffbench.roofline import floor_seconds, roofline_limit
from fffbench.runs import Runs, comparison_pairs, fastest, geomean, groups, layer_rows, pair, pick, warm, where
from fffbench.vocab import column_label, column_order, device_name


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


def _fastest_s(rows) -> float:
    """The smallest median among the correct rows of ``rows`` (NaN when none was timed)."""
    return min((float(r["median_s"]) for r in rows if r.get("status") == "ok" and r["median_s"] == r["median_s"]),
               default=math.nan)


def _paper_cols(f) -> dict:
    return {"paper": f.value if f else math.nan, "paper_secondary": bool(f and f.secondary),
            "paper_source": f.source if f else "", "figure": f.key if f else None}


# --- the paper's figures: one definition, one measured value -------------------------------------------

def _setting_groups(runs: Runs):
    """Per run, the one group of rows in the paper's setting (default regime; gaussian input, the
    lowest seed and the most threads where a run has several)."""
    best = {}
    for key, grp in groups(warm(layer_rows(runs.df))):
        if not paper.in_setting(key):
            continue
        rank = (key["input"] == "gaussian", -key["seed"], key["threads"])
        if key["run"] not in best or rank > best[key["run"]][0]:
            best[key["run"]] = (rank, key, grp)
    return {run: (key, grp) for run, (_, key, grp) in best.items()}


def figure_rows(fig, rows: list[dict]):
    """(numerator row, denominator row) of ``fig``'s definition among the rows of one group."""
    on = where(rows, device=fig.device)
    return pick(_ff(on, fig.hidden), fig.numerator), pick(_fff(on, fig.depth, fig.trees), fig.denominator)


def figure_values(runs: Runs) -> pd.DataFrame:
    """Every figure of :data:`fffbench.paper.FIGURES` and its one measured value per run."""
    setting = _setting_groups(runs)
    out = []
    for f in paper.FIGURES:
        base = {"figure": f.key, "what": f.what, "paper": f.value, "secondary": f.secondary, "source": f.source,
                "device": f.device}
        found = False
        for run, (key, grp) in setting.items():
            rows = grp.to_dict("records")
            if f.kind == "limit":
                if not _ff(rows, f.hidden) or not _fff(rows, f.depth, f.trees):
                    continue
                out.append(base | {"run": run, "machine": runs.machine(run), "batch": key["batch"],
                                   "threads": key["threads"], "measured": f.hidden / (f.trees * (f.depth + 1)),
                                   "note": "computed from the layer shapes"})
                found = True
                continue
            on = where(rows, device=f.device)
            if not _ff(on, f.hidden) or not _fff(on, f.depth, f.trees):
                continue
            num, den = figure_rows(f, rows)
            p = pair(runs, num, den)
            notes = []
            for side, name, r, fam_rows in (("FF", f.numerator, num, _ff(on, f.hidden)),
                                            ("FFF", f.denominator, den, _fff(on, f.depth, f.trees))):
                if r is None:
                    got = where(fam_rows, backend=name) if name not in paper.BEST else []
                    notes.append(f"{side} {name}: " + ("not run" if not got and name not in paper.BEST else
                                                       "/".join(sorted({str(g['status']) for g in got})) or
                                                       "no correct row"))
                elif r["status"] != "ok":
                    notes.append(f"{side} {name}: {r['status']}")
            gemm, bw = runs.ceilings(run, f.device, key["dtype"])
            out.append(base | {"run": run, "machine": runs.machine(run), "batch": key["batch"],
                               "threads": key["threads"]} | p
                       | {"measured": p["speedup"], "note": "; ".join(notes),
                          "neuron_limit": f.hidden / (f.trees * (f.depth + 1)),
                          "roofline_limit": roofline_limit(_one(_ff(on, f.hidden), "flops"),
                                                           _one(_fff(on, f.depth, f.trees), "bytes"), gemm, bw,
                                                           _one(_ff(on, f.hidden), "bytes"),
                                                           _fastest_s(_fff(on, f.depth, f.trees)))})
            found = True
        if not found:
            need = f"FF H={f.hidden} and FFF {f.trees}x{f.depth}"
            if f.kind != "limit":
                need += (f" on {device_name(f.device)} at B={paper.SETTING['batch']}, d={paper.SETTING['width']}, "
                         f"{paper.SETTING['dtype']}")
            out.append(base | {"measured": math.nan, "note": f"not in this run (needs {need})"})
    return pd.DataFrame(out)


def _chosen(setting: dict, key: dict) -> bool:
    """Whether ``key`` is the group :func:`figure_values` takes for its run."""
    chosen = setting.get(key["run"])
    return chosen is not None and all(_same(chosen[0].get(k), v) for k, v in key.items() if k in chosen[0])


def _same(a, b) -> bool:
    """Equal, or both unset (None or NaN: the checkpoint and layer of a random layer)."""
    return a == b or all(v is None or v != v for v in (a, b))


def figure_of(setting: dict, key: dict, num, den, device: str, hidden: int, depth: int, trees: int):
    """The figure whose definition is exactly this pair of rows of the run's setting group, or None
    (``setting``: :func:`_setting_groups` of the runs)."""
    if num is None or den is None or not _chosen(setting, key | {"l2": key.get("l2", "warm"),
                                                                 "launch": key.get("launch", "eager")}):
        return None
    for f in paper.FIGURES:
        if f.kind != "speedup" or (f.device, f.hidden, f.depth, f.trees) != (device, hidden, depth, trees):
            continue
        if _is(num, f.numerator) and _is(den, f.denominator):
            return f
    return None


def _is(row, name: str) -> bool:
    """Whether ``row`` is what ``name`` selects (a backend, or the fastest of a family: the caller
    passes the fastest row for ``best-*``)."""
    return row["backend"] == name or (name in paper.BEST and row.get("_fastest") is True)


# --- Table 2 -----------------------------------------------------------------------------------------

def level_table(runs: Runs) -> pd.DataFrame:
    """The paper's Table 2, one line per cell (long format).

    For every group, every baseline FF width ``H`` (one table each), every configuration (the FF
    widths, then the FFF trees) and every (device, level) column that has a correct row: the
    baseline FF at that level over the configuration at that level. Where one family has no
    implementation at a level (CPU Level 3, GPU native: no FFF exists) the fastest correct backend
    of that family on the device stands in, as in the paper (``vs`` says which).
    """
    out, setting = [], _setting_groups(runs)
    for key, grp in groups(layer_rows(runs.df)):
        ok = grp[grp["status"] == "ok"]
        cols = sorted(set(zip(ok["device"], ok["level"])), key=lambda c: column_order(*c))
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
                common = key | {"machine": machine, "baseline_hidden": base, "config": label, "config_family": fam,
                                "hidden": h, "depth": depth, "trees": tr, "neuron_limit": base / used}
                for device, level in cols:
                    b, r = where(base_rows, device=device), where(rows, device=device)
                    cell = _cell(runs, setting, key, b, r, fam, device, level, base_flops, base, depth, tr)
                    out.append(common | {"device": device, "level": level, "column": column_label(device, level)}
                               | cell)
    return pd.DataFrame(out)


def _cell(runs, setting, key, base_rows, rows, fam, device, level, base_flops, base, depth, trees) -> dict:
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
        roof = roofline_limit(base_flops, _one(rows, "bytes"), gemm, bw, _one(base_rows, "bytes"), _fastest_s(rows))
    else:
        flops, nbytes = _one(rows, "flops"), _one(rows, "bytes")
        roof = (floor_seconds(base_flops, _one(base_rows, "bytes"), gemm, bw) / floor_seconds(flops, nbytes, gemm, bw)
                if not (math.isnan(bw) or math.isnan(gemm)) else math.nan)
    fig = None
    if fam == "fff" and num is not None and den is not None:
        best_den = fastest(rows, "fff")[0]
        den_marked = den | {"_fastest": best_den is not None and best_den["row_id"] == den["row_id"]}
        fig = figure_of(setting, key, num, den_marked, device, base, depth, trees)
    blank = num_note == "none" and den_note == "none"
    return (pair(runs, num, den) | {"vs": vs, "note": "not run at this level" if blank else "; ".join(notes),
                                    "roofline_limit": roof} | _paper_cols(fig))


# --- best against best -------------------------------------------------------------------------------

def best_table(runs: Runs) -> pd.DataFrame:
    """Fastest correct FFF against fastest correct FF, per device and (FF width, FFF tree)."""
    out, setting = [], _setting_groups(runs)
    for key, grp in groups(layer_rows(runs.df)):
        hiddens, trees = _configs(grp)
        for device in sorted(set(grp.loc[grp["status"] == "ok", "device"]), key=lambda d: column_order(d, "")):
            on = where(grp.to_dict("records"), device=device)
            gemm, bw = runs.ceilings(key["run"], device, key["dtype"])
            for h in hiddens:
                ffr = _ff(on, h)
                num, nn = fastest(ffr, "ff")
                for depth, tr in trees:
                    fr = _fff(on, depth, tr)
                    den, dn = fastest(fr, "fff")
                    fig = figure_of(setting, key, num and num | {"_fastest": True}, den and den | {"_fastest": True}, device,
                                    h, depth, tr)
                    out.append(key | {"machine": runs.machine(key["run"]), "device": device, "ff_hidden": h,
                                      "fff": f"{tr}x{depth}", "depth": depth, "trees": tr}
                               | pair(runs, num, den)
                               | {"neuron_limit": h / (tr * (depth + 1)),
                                  "roofline_limit": roofline_limit(_one(ffr, "flops"), _one(fr, "bytes"), gemm, bw,
                                                                  _one(ffr, "bytes"), _fastest_s(fr)),
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


# --- the suite's declared comparisons ------------------------------------------------------------------

MATCH = ["device", "dtype", "batch", "width", "input", "seed", "threads", "checkpoint", "layer_index"]


def comparison_table(runs: Runs) -> pd.DataFrame:
    """Every comparison each run's suite declares, on every matching workload (default regime)."""
    rows, setting = [], _setting_groups(runs)
    for key, grp in warm(layer_rows(runs.df)).groupby(MATCH + ["run"], dropna=False, sort=False):
        key = dict(zip(MATCH + ["run"], key))
        records = grp.to_dict("records")
        for comp in runs.comparisons(key["run"]):
            if comp.device and comp.device != key["device"]:
                continue
            for num, den, h, depth, trees in comparison_pairs(comp, records):
                rows.append(_compare(runs, setting, comp, key, h, depth, trees, num, den))
    return pd.DataFrame(rows)


def _compare(runs, setting, comp, key, hidden, depth, trees, num, den) -> dict:
    fig = paper.figure(comp.figure) if comp.figure else None
    if fig is not None and not (_chosen(setting, key | {"l2": "warm", "launch": "eager"})
                                and (fig.hidden, fig.depth, fig.trees) == (hidden, depth, trees)):
        fig = None
    out = key | {"label": comp.label, "ff_hidden": int(hidden), "fff": f"{int(trees)}x{int(depth)}",
                 "numerator": comp.numerator, "denominator": comp.denominator,
                 "neuron_limit": hidden / ((depth + 1) * trees), "note": ""} | _paper_cols(fig)
    missing = [(n, r) for n, r in ((comp.numerator, num), (comp.denominator, den)) if r is None or r["status"] != "ok"]
    out |= pair(runs, *((None, None) if missing else (num, den)))
    out["ff_backend"] = out["ff_backend"] or (num["backend"] if num is not None else None)
    out["fff_backend"] = out["fff_backend"] or (den["backend"] if den is not None else None)
    if missing:
        out["note"] = "; ".join(f"{n}: {'no correct row' if r is None else r['status']}" for n, r in missing)
    return out


__all__ = ["MATCH", "best_table", "comparison_table", "figure_of", "figure_rows", "figure_values", "geomean_summary",
           "level_table"]
