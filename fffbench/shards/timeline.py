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
    """One line per stored row: host, device key, shard, start, end, seconds, case, backend, regime."""
    if df.empty:
        return pd.DataFrame(columns=["host", "device_key", "shard", "start", "end", "seconds", "case_id", "backend",
                                     "regime", "status"])
    out = pd.DataFrame({
        "host": df["host"].fillna("?"), "device_key": [device_key(r) for r in df.to_dict("records")],
        "shard": df["shard"], "start": pd.to_datetime(df["started_at"], utc=True, format="ISO8601"),
        "end": pd.to_datetime(df["finished_at"], utc=True, format="ISO8601"),
        "case_id": df["case_id"], "backend": df["backend"], "regime": df["regime"], "status": df["status"]})
    out = out.dropna(subset=["start", "end"])
    out["seconds"] = (out["end"] - out["start"]).dt.total_seconds()
    return out.sort_values(["host", "device_key", "start", "end"]).reset_index(drop=True)


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
    for (_, key), g in iv.groupby(["host", "device_key"], sort=True):
        out += _overlaps(g)
    for host, g in iv.groupby("host", sort=True):
        cpu = g[g["device_key"] == "cpu"]
        for c in cpu.to_dict("records"):
            other = g[(g["device_key"] != "cpu") & (g["start"] < c["end"]) & (g["end"] > c["start"])]
            out += [(c, o) for o in other.to_dict("records")]
    return out


def device_summary(iv: pd.DataFrame) -> pd.DataFrame:
    """Per host and device: rows, shards, busy seconds, first start, last end."""
    rows = []
    for (host, key), g in iv.groupby(["host", "device_key"], sort=True):
        rows.append({"host": host, "device": key, "rows": len(g),
                     "shards": ",".join(str(int(s)) for s in sorted(g["shard"].dropna().unique())) or "-",
                     "busy_s": g["seconds"].sum(), "first": g["start"].min(), "last": g["end"].max(),
                     "overlaps": len(_overlaps(g))})
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
        lines.append("Devices (busy: the sum of the measurement intervals):")
        for r in summary.to_dict("records"):
            lines.append(f"  {r['host']} {r['device']}: {r['rows']} rows from shard(s) {r['shards']}, busy "
                         f"{r['busy_s']:.1f} s between {_t(r['first'])} and {_t(r['last'])} UTC, "
                         f"{r['overlaps']} overlap(s)")
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
