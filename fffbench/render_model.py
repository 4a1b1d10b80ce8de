"""The report's real-model sections, laid out from :mod:`fffbench.model_report`'s numbers: end to
end, routing per layer, and routing against time. Runs without encoder rows or routing records get
none of them."""
from __future__ import annotations

import math

import pandas as pd

from fffbench import model_report as MR
from fffbench.render import Section, fmt_x, num, sections
from fffbench.runs import Runs
from fffbench.timing.regime import Regime
from fffbench.vocab import device_name, plural


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _pct(v, digits: int = 3) -> str:
    return f"{v * 100:.{digits}g}%" if _ok(v) else ""


def _time(ms, digits: int = 4) -> str:
    """``21.5 s`` or ``98.12 ms``: an encoder call takes seconds on a CPU, milliseconds on a GPU."""
    if not _ok(ms):
        return ""
    return f"{ms / 1e3:.{digits}g} s" if ms >= 1e3 else f"{ms:.{digits}g} ms"


def end_to_end_section(e2e: pd.DataFrame) -> list[Section]:
    if e2e.empty:
        return []
    out = []
    keys = ["run", "device", "dtype", "batch", "seq_len", "layers", "threads", "regime"]
    for key, g in e2e.groupby(keys, sort=False, dropna=False):
        key = dict(zip(keys, key))
        t = pd.DataFrame({
            "model": g["model"], "feedforward backend": g["backend"],
            "encoder time [95% CI]": [f"{_time(m)} [{_time(lo, 3)}, {_time(hi, 3)}]" if s == "ok" else f"{s}: {n}"[:90]
                                    for m, lo, hi, s, n in zip(g["encoder_ms"], g["ci_low_ms"], g["ci_high_ms"],
                                                               g["status"], g["note"])],
            "feedforward layer time": [f"{_time(m)} ({plural(int(n), 'layer row')}, {i} input)" if _ok(m) else ""
                                     for m, n, i in zip(g["layer_ms"], g["layer_rows"], g["layer_input"])],
            "feedforward share": g["ff_share"].map(_pct),
            "layer speedup": g["layer_speedup"].map(lambda v: fmt_x(v)),
            "encoder speedup [95% CI]": [fmt_x(v, lo, hi) + ("" if p or not _ok(v) else "°") for v, lo, hi, p in
                                         zip(g["encoder_speedup"], g["ci_low"], g["ci_high"], g["paired"])],
            "Amdahl bound": g["amdahl_bound"].map(lambda v: fmt_x(v)),
            "tokens agreeing": g["token_agreement"].map(lambda v: _pct(v, 4)),
        })
        first = g.iloc[0]
        regime = Regime.parse(key["regime"]).label
        title = (f"{device_name(key['device'])}, {key['dtype']}, {key['batch'] // key['seq_len']} sequences of "
                 f"{key['seq_len']} tokens, {key['layers']} layers, {plural(int(key['threads']), 'thread')}"
                 + (f", {regime}" if regime else "") + (f" ({key['run']})" if e2e["run"].nunique() > 1 else ""))
        limit = first["ff_free_limit"]
        notes = [f"Baseline: the BERT encoder with {first['baseline']} "
                 f"({_time(first['baseline_ms'])}), whose feedforward is {_pct(first['baseline_share'])} of its "
                 f"time: with a feedforward that cost nothing it would be {fmt_x(limit)} faster, whatever the "
                 f"layer speedup." if _ok(first["baseline_share"]) else
                 "No BERT encoder (or no matching FF layer row) was timed: shares and bounds need both."]
        out.append(Section("end_to_end", title, t, g, notes, level=3))
    head = Section("end_to_end", "End to end: how much of the layer speedup the model keeps", pd.DataFrame(),
                   e2e, [
                       ("The crammed-BERT encoder (embedding, pre-LN layers of fused-QKV attention through "
                        "scaled_dot_product_attention, output projection and feedforward, final norm) with each "
                        "backend as every layer's feedforward: BERT with a dense FF, UltraFastBERT with an FFF."),
                       ("Feedforward share: layers x the backend's layer time at the same tokens (geometric mean over "
                        "the model layers measured, on the most real input: capture, else norm2, else Gaussian) over "
                        "the encoder's time. Layer speedup: the BERT baseline's FF layer over this FFF layer. Encoder "
                        "speedup: BERT encoder time over this encoder's (paired: measured in the same worker "
                        "processes; ° unpaired). Amdahl bound: 1 / ((1 - s) + s / layer speedup), s the BERT "
                        "feedforward share."),
                       ("Tokens agreeing: share of output tokens within tolerance of the float64 encoder (a flipped "
                        "FFF decision changes its token and, through attention, its sequence a little); each layer "
                        "was checked strictly on the states this call computed.")], level=2)
    return [head] + out


def routing_section(table: pd.DataFrame) -> list[Section]:
    if table.empty:
        return []
    t = pd.DataFrame({
        "layer": [("enc. " if s == "encoder" else "") + (f"L{int(i)}" if _ok(i) else "—")
                  for s, i in zip(table["source"], table["layer_index"])],
        "weights": table["checkpoint"], "input": table["input"], "rows": table["rows"], "FFF": table["shape"],
        "leaf entropy (bits of max)": [f"{num(e)} of {num(m)} ({_pct(r)})" for e, m, r in
                                       zip(table["entropy_bits"], table["depth"], table["entropy_ratio"])],
        "effective leaves": [f"{num(e)} of {int(n)}" for e, n in zip(table["effective_leaves"], table["leaves"])],
        "largest leaf": table["max_leaf_share"].map(_pct),
        "empty leaves": table["empty_leaf_share"].map(_pct),
        "distinct nodes, mid level": [f"{num(d)}/{int(p)} (level {int(lv)}, largest {_pct(s)})" if _ok(d) else ""
                                      for d, p, lv, s in zip(table["mid_distinct"], table["mid_possible"],
                                                             table["mid_level"], table["mid_max_share"])],
        "distinct leaves (uniform)": [f"{num(d)}/{int(p)} ({num(u)})" if _ok(d) else "" for d, p, u in
                                      zip(table["leaf_distinct"], table["leaf_possible"], table["leaf_uniform"])],
        "near-zero logits fp32 / bf16": [f"{_pct(a)} / {_pct(b)}" for a, b in zip(table["near_zero_fp32"],
                                                                                 table["near_zero_bf16"])],
        "bf16 path agreement": table["bf16_path_agreement"].map(lambda v: _pct(v, 4)),
    })
    if table["run"].nunique() > 1:
        t.insert(0, "run", table["run"])
    return [Section("routing", "Routing per layer", t, table, [
        ("Computed from the float64 walk of each FFF case (a layer on an input, or each layer inside the float64 "
         "encoder), not timed. Leaf entropy in bits against uniform routing (depth bits); effective leaves 2^H; "
         "largest leaf: share of rows in the most visited leaf, averaged over trees."),
        ("Distinct nodes: how many nodes of a level the batch visits, against what uniform random routing would "
         "visit (a kernel that buckets rows by subtree loads each visited subtree once: fewer, larger buckets on "
         "skewed routing)."),
        ("Near-zero logits: share of visited logits within rounding distance of zero (the correctness gate's "
         "decisive threshold) at fp32 / bf16. bf16 path agreement: share of rows whose path is unchanged with "
         "input, W1 and b1 rounded to bfloat16.")])]


def routing_time_section(table: pd.DataFrame) -> list[Section]:
    if table.empty:
        return []
    t = pd.DataFrame({
        "device": table["device"].map(device_name), "dtype": table["dtype"], "batch": table["batch"],
        "layer": table["layer"], "backend": table["backend"], "input": table["input"],
        "Gaussian ms": table["gaussian_ms"].map(lambda v: num(v, 4)), "input ms": table["input_ms"].map(lambda v: num(v, 4)),
        "time / Gaussian time [95% CI]": [fmt_x(v, lo, hi) + ("" if p else "°") for v, lo, hi, p in
                                          zip(table["ratio"], table["ci_low"], table["ci_high"], table["paired"])],
    })
    return [Section("routing_time", "Routing against time: each FFF backend on real routing", t, table, [
        ("Each backend's time on a model layer's own inputs over its time on Gaussian rows of the same layer (> 1: "
         "real routing costs it time). ° unpaired: the inputs are different workloads, measured in different "
         "worker processes.")], level=3)]


def model_sections(runs: Runs) -> list[Section]:
    """The real-model sections of the report, in reading order (none for runs without them)."""
    return (end_to_end_section(MR.end_to_end_table(runs)) + routing_section(MR.routing_table(runs))
            + routing_time_section(MR.routing_time_table(runs)))


def report_sections(runs: Runs) -> list[Section]:
    """Every section of the report: :func:`fffbench.render.sections` with the real-model sections
    before the environment (the last section)."""
    secs = sections(runs)
    return secs[:-1] + model_sections(runs) + secs[-1:]


__all__ = ["end_to_end_section", "model_sections", "report_sections", "routing_section", "routing_time_section"]
