"""When each device was busy: every row's measurement interval, per host and device, and a check
that no two measurements ever overlapped on one device.

Every row stores ``started_at`` and ``finished_at``; in a sharded run they bracket the time the
row held its device (see :mod:`fffbench.devlock`), so these intervals are the evidence that shards
never disturbed each other: on one GPU no two intervals may overlap, and a CPU measurement (which
holds the whole host) may overlap no other measurement on its host. Also the run's wall time
against the sum of its measurement times (the parallel speed-up the shards bought).
"""
from __future__ import annotations

import pandas as pd


def device_key(row) -> str:
    """The physical device a row held: ``cpu``, or ``cuda:<GPU UUID or index>``."""
    if row["device"] == "cpu":
        return "cpu"
    gpu = row.get("device_uuid") or row.get("device_index")
    return f"cuda:{gpu}" if isinstance(gpu, str) and gpu else "cuda:?"


def intervals(df: pd.DataFrame) -> pd.DataFrame:
    """One line per measurement: host, device key, shard, start, end, seconds, case, backend,
    regime. The timed rows of one group are measured together, interleaved in the same worker
    processes (:mod:`fffbench.measure`), so they are one measurement and one interval, named by
    their group and their count of rows."""
    cols = ["host", "device_key", "shard", "start", "end", "seconds", "case_id", "backend", "regime", "status"]
    units: dict[tuple, dict] = {}
    for i, r in enumerate(df.to_dict("records")):
        start = pd.to_datetime(r.get("started_at"), utc=True, format="ISO8601")
        end = pd.to_datetime(r.get("finished_at"), utc=True, format="ISO8601")
        if pd.isna(start) or pd.isna(end):
            continue
        group, attempt = r.get("group"), r.get("attempt")
        together = isinstance(group, str) and isinstance(attempt, str) and r.get("status") == "ok"
        key = (r.get("host") or "?", device_key(r), r.get("shard"), f"{group}|{attempt}" if together else i)
        u = units.setdefault(key, {"host": key[0], "device_key": key[1], "shard": r.get("shard"), "start": start,
                                   "end": end, "case_id": r["case_id"], "backend": r["backend"],
                                   "regime": r["regime"], "status": r["status"], "n": 0, "group": group})
        u["start"], u["end"], u["n"] = min(u["start"], start), max(u["end"], end), u["n"] + 1
        if u["n"] > 1:
            u["case_id"], u["backend"] = u["group"], f"{u['n']} rows measured together"
    out = pd.DataFrame(list(units.values()), columns=cols + ["n", "group"])
    if out.empty:
        return pd.DataFrame(columns=cols)
    out["seconds"] = (out["end"] - out["start"]).dt.total_seconds()
    return out[cols].sort_values(["host", "device_key", "start", "end"]).reset_index(drop=True)


def _overlaps(iv: pd.DataFrame) -> list[tuple[dict, dict]]:
    """Pairs of intervals (sorted by start) where the later one starts before an earlier one ended."""
    pairs, latest = [], None
    for r in iv.sort_values(["start", "end"]).to_dict("records"):
        if latest is not None and r["start"] < latest["end"]:
            pairs.append((latest, r))
        if latest is None or r["end"] > latest["end"]:
            latest = r
    return pairs


def overlaps(iv: pd.DataFrame) -> list[tuple[dict, dict]]:
    """Overlapping measurements on one device (a GPU, or the CPU), and CPU measurements that overlap
    any measurement on their host."""
    out = []
    for _, g in iv.groupby(["host", "device_key"], sort=True):
        out += _overlaps(g)
    for _, g in iv.groupby("host", sort=True):
        cpu = g[g["device_key"] == "cpu"]
        for c in cpu.to_dict("records"):
            other = g[(g["device_key"] != "cpu") & (g["start"] < c["end"]) & (g["end"] > c["start"])]
            out += [(c, o) for o in other.to_dict("records")]
    return out


def device_summary(iv: pd.DataFrame) -> pd.DataFrame:
    """Per host and device: measurements, shards, busy seconds, first start, last end, and the busy
    fraction: busy seconds over the run's span (its first measurement to its last, on any device)."""
    rows = []
    span = (iv["end"].max() - iv["start"].min()).total_seconds() if len(iv) else 0.0
    for (host, key), g in iv.groupby(["host", "device_key"], sort=True):
        busy = g["seconds"].sum()
        rows.append({"host": host, "device": key, "rows": len(g),
                     "shards": ",".join(str(int(s)) for s in sorted(g["shard"].dropna().unique())) or "-",
                     "busy_s": busy, "first": g["start"].min(), "last": g["end"].max(),
                     "busy_frac": busy / span if span else float("nan"), "overlaps": len(_overlaps(g))})
    return pd.DataFrame(rows)


def wall(iv: pd.DataFrame) -> tuple[float, float]:
    """(wall seconds from the first start to the last end, sum of all measurement seconds)."""
    if iv.empty:
        return 0.0, 0.0
    return (iv["end"].max() - iv["start"].min()).total_seconds(), float(iv["seconds"].sum())


def _t(ts) -> str:
    return ts.strftime("%H:%M:%S.%f")[:-3]


def render(df: pd.DataFrame, show_intervals: bool = False, since: str | None = None) -> tuple[str, bool]:
    """The text ``fffbench shards`` prints about timings, and whether no measurements overlapped;
    ``since`` (ISO time, e.g. when the run was created) adds the wall time from then to the last row."""
    iv = intervals(df)
    lines = []
    summary = device_summary(iv)
    if len(summary):
        lines.append("Devices (busy: the sum of the measurement intervals, and its share of the run's span):")
        for r in summary.to_dict("records"):
            lines.append(f"  {r['host']} {r['device']}: {r['rows']} measurements from shard(s) {r['shards']}, busy "
                         f"{r['busy_s']:.1f} s ({r['busy_frac']:.0%}) between {_t(r['first'])} and {_t(r['last'])} "
                         f"UTC, {r['overlaps']} overlap(s)")
    if show_intervals:
        for (host, key), g in iv.groupby(["host", "device_key"], sort=True):
            lines.append(f"Intervals on {host} {key}:")
            for r in g.to_dict("records"):
                shard = "-" if pd.isna(r["shard"]) else int(r["shard"])
                lines.append(f"  {_t(r['start'])} - {_t(r['end'])}  shard {shard}  {r['seconds']:8.3f} s  "
                             f"{r['case_id']} {r['backend']} {r['regime']} ({r['status']})")
    bad = overlaps(iv)
    for a, b in bad[:20]:
        lines.append(f"OVERLAP on {a['host']}: {a['device_key']} {a['case_id']} {a['backend']} (shard {a['shard']}, "
                     f"{_t(a['start'])}-{_t(a['end'])}) and {b['device_key']} {b['case_id']} {b['backend']} "
                     f"(shard {b['shard']}, {_t(b['start'])}-{_t(b['end'])})")
    span, busy = wall(iv)
    if len(iv):
        lines.append(f"Wall time {span:.1f} s from the first measurement to the last; measurements sum to {busy:.1f} s "
                     f"({busy / span if span else float('nan'):.2f}x in parallel).")
        if since:
            total = (iv["end"].max() - pd.Timestamp(since).tz_convert("UTC")).total_seconds()
            lines.append(f"Run wall time {total:.1f} s from its start ({since}) to the last row stored "
                         "(including start-up, ceilings and any resumption).")
    lines.append("No two measurements overlapped on any device." if not bad else
                 f"{len(bad)} overlapping pair(s) of measurements.")
    return "\n".join(lines), not bad
