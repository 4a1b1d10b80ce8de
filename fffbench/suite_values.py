"""Reading one value of a suite document, checked, with a one-line ``file:line: message`` error:
mappings with known keys (a close match suggested for a typo), integers and numbers in range,
choices, booleans, and sweep axes (a value or a non-empty list). Shared by :mod:`fffbench.suite`
and :mod:`fffbench.suite_model`."""
from __future__ import annotations

import difflib
import math

from fffbench.yamldoc import Doc


def _where(path) -> str:
    return ".".join(str(p) for p in path)


def _keys(doc: Doc, value, allowed: set, path: tuple, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.fail(path, f"'{_where(path) or what}' must be a mapping of {what} keys, got {type(value).__name__}")
    for k in value:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            doc.fail(path + (k,), f"unknown key '{k}' in {what}{hint}; expected one of: {', '.join(sorted(allowed))}",
                     key=True)
    return value


def _int(doc, v, path, lo: int, hi: int | None = None):
    if isinstance(v, bool) or not isinstance(v, int):
        doc.fail(path, f"'{_where(path)}' must be an integer >= {lo}, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        doc.fail(path, f"'{_where(path)}' must be between {lo} and {hi}, got {v}" if hi is not None
                 else f"'{_where(path)}' must be >= {lo}, got {v}")
    return v


def _num(doc, v, path, lo: float, hi: float, strict: bool = False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        doc.fail(path, f"'{_where(path)}' must be a number, got {v!r}")
    if not math.isfinite(v) or v < lo or v > hi or (strict and v == lo):
        doc.fail(path, f"'{_where(path)}' must be a finite number {'>' if strict else '>='} {lo:g} and <= {hi:g}, "
                       f"got {v!r}")
    return float(v)


def _choice(doc, v, path, choices):
    if not isinstance(v, (str, int)) or isinstance(v, bool) or v not in choices:
        doc.fail(path, f"'{_where(path)}' must be one of {', '.join(map(str, choices))}, got {v!r}")
    return v


def _bool(doc, v, path):
    if not isinstance(v, bool):
        doc.fail(path, f"'{_where(path)}' must be true or false, got {v!r}")
    return v


def _axis(doc, d: dict, key: str, path: tuple, default, item) -> tuple:
    """A sweep axis: a scalar or a non-empty list, each element checked by ``item``."""
    v = d.get(key, default)
    values = v if isinstance(v, list) else [v]
    p = path + (key,)
    if not values:
        doc.fail(p, f"'{_where(p)}' must not be an empty list")
    return tuple(item(doc, x, p + ((i,) if isinstance(v, list) else ())) for i, x in enumerate(values))


__all__ = ["_axis", "_bool", "_choice", "_int", "_keys", "_num", "_where"]
