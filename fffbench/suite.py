"""Suites: YAML files that define a sweep, parsed with line numbers and validated strictly.

Every error names the file, the line and what was expected, in one line (:class:`SuiteError`), so
a typo in a 2-hour sweep is caught before the first case runs. See ``suites/paper.yaml`` for a
commented example of every key.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from fffbench.layers import FF, FFF, INPUT_KINDS
from fffbench.registry import DEVICES, DTYPES, backend_names, get_backend
from fffbench.timing import TimingConfig


class SuiteError(ValueError):
    """A suite that cannot be run; ``str(e)`` is ``file:line: message``."""


# --- YAML with line numbers -------------------------------------------------------------------

class _Doc:
    """Plain Python values of a YAML document plus the line of every key and value."""

    def __init__(self, path: str, text: str):
        self.path = path
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            line = mark.line + 1 if mark else 1
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            ctx, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
            if ctx and cmark and cmark.line + 1 != line:
                problem += f" ({ctx} started on line {cmark.line + 1})"
            raise SuiteError(f"{path}:{line}: invalid YAML: {problem}") from None
        self.lines: dict[tuple, int] = {}
        self._ctor = yaml.constructor.SafeConstructor()
        self.data = self._convert(node, ()) if node is not None else None

    def _convert(self, node, where: tuple):
        self.lines[where] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for k, v in node.value:
                key = self._ctor.construct_object(k, deep=True)
                if key in out:
                    raise SuiteError(f"{self.path}:{k.start_mark.line + 1}: key {key!r} appears twice")
                out[key] = self._convert(v, where + (key,))
                self.lines[where + (key, "<key>")] = k.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, where + (i,)) for i, v in enumerate(node.value)]
        return self._ctor.construct_object(node, deep=True)

    def line(self, where: tuple, key: bool = False) -> int:
        where = tuple(where)
        while where:
            if key and where + ("<key>",) in self.lines:
                return self.lines[where + ("<key>",)]
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return self.lines.get((), 1)

    def fail(self, where, msg: str, key: bool = False):
        raise SuiteError(f"{self.path}:{self.line(where, key)}: {msg}")


# --- schema ---------------------------------------------------------------------------------

_TOP = {"name", "description", "sweep", "ff", "fff", "backends", "timing", "comparisons"}
_SWEEP = {"batch", "width", "dtype", "device", "input", "seed", "threads"}
_FF = {"hidden", "out_width", "bias"}
_FFF = {"depth", "trees", "out_width", "bias"}
_TIMING = {"budget_s", "warmup_s", "min_reps", "max_reps", "repetitions", "min_sample_s", "max_call_s", "l2",
           "launch"}
_COMPARISON = {"label", "numerator", "denominator", "hidden", "device", "paper"}
_PAPER = {"value", "source", "secondary"}
BEST = {"best-ff": "ff", "best-fff": "fff"}


def _where(path):
    return ".".join(str(p) for p in path)


def _keys(doc: _Doc, value, allowed: set, path: tuple, what: str) -> dict:
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


def _int(doc, v, path, minimum: int):
    if isinstance(v, bool) or not isinstance(v, int):
        doc.fail(path, f"'{_where(path)}' must be an integer >= {minimum}, got {v!r}")
    if v < minimum:
        doc.fail(path, f"'{_where(path)}' must be >= {minimum}, got {v}")
    return v


def _num(doc, v, path, minimum: float, strict: bool = False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        doc.fail(path, f"'{_where(path)}' must be a number, got {v!r}")
    if v < minimum or (strict and v == minimum):
        doc.fail(path, f"'{_where(path)}' must be {'>' if strict else '>='} {minimum}, got {v}")
    return float(v)


def _choice(doc, v, path, choices):
    if v not in choices:
        doc.fail(path, f"'{_where(path)}' must be one of {', '.join(map(str, choices))}, got {v!r}")
    return v


def _axis(doc, d: dict, key: str, path: tuple, default, item) -> tuple:
    """A sweep axis: a scalar or a non-empty list, each element checked by ``item``."""
    v = d.get(key, default)
    values = v if isinstance(v, list) else [v]
    if not values:
        doc.fail(path + (key,), f"'{_where(path + (key,))}' must not be an empty list")
    p = path + (key,)
    return tuple(item(doc, x, p + ((i,) if isinstance(v, list) else ()), ) for i, x in enumerate(values))


def _bool(doc, v, path):
    if not isinstance(v, bool):
        doc.fail(path, f"'{_where(path)}' must be true or false, got {v!r}")
    return v


# --- the suite ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    label: str
    numerator: str      # FF-side backend name or "best-ff"; speedup = time(numerator) / time(denominator)
    denominator: str    # FFF-side backend name or "best-fff"
    hidden: int | None = None
    device: str | None = None  # restrict to one device (the paper's figures are per device)
    paper_value: float | None = None
    paper_source: str = ""
    paper_secondary: bool = False


@dataclass(frozen=True)
class Case:
    """One workload: a layer, a batch of inputs, a dtype, a device and a thread count."""

    family: str
    width: int
    batch: int
    dtype: str
    device: str
    input: str
    seed: int
    threads: int
    hidden: int | None = None
    depth: int | None = None
    trees: int | None = None
    out_width: int | None = None
    bias: bool = True

    @property
    def layer(self):
        if self.family == "ff":
            return FF(width=self.width, hidden=self.hidden, out_width=self.out_width, bias=self.bias)
        return FFF(width=self.width, depth=self.depth, trees=self.trees, out_width=self.out_width, bias=self.bias)

    @property
    def case_id(self) -> str:
        shape = f"H{self.hidden}" if self.family == "ff" else f"D{self.depth}K{self.trees}"
        out = f"-o{self.out_width}" if self.out_width else ""
        nb = "" if self.bias else "-nobias"
        return (f"{self.family}-d{self.width}-{shape}{out}{nb}-B{self.batch}-{self.dtype}-{self.device}"
                f"-{self.input}-s{self.seed}-t{self.threads}")


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    text: str
    backends: tuple[str, ...]
    cases: tuple[Case, ...]
    timing: TimingConfig
    comparisons: tuple[Comparison, ...] = ()
    description: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def backends_for(self, family: str) -> list[str]:
        return [b for b in self.backends if get_backend(b).family == family]


def load_suite(path) -> Suite:
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SuiteError(f"{path}:0: cannot read suite: {e.strerror}") from None
    return parse_suite(text, path)


def parse_suite(text: str, path: str = "<suite>") -> Suite:
    doc = _Doc(path, text)
    top = doc.data
    if not isinstance(top, dict):
        doc.fail((), "a suite must be a YAML mapping with at least 'name' and 'backends'")
    _keys(doc, top, _TOP, (), "the suite")
    for required in ("name", "backends"):
        if required not in top:
            doc.fail((), f"missing required key '{required}'")
    name = top["name"]
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        doc.fail(("name",), f"'name' must be a word of letters, digits, '-' and '_', got {name!r}")

    known = backend_names()
    backends = top["backends"]
    if not isinstance(backends, list) or not backends:
        doc.fail(("backends",), "'backends' must be a non-empty list of backend names")
    for i, b in enumerate(backends):
        if b not in known:
            close = difflib.get_close_matches(str(b), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            doc.fail(("backends", i), f"unknown backend {b!r}{hint}; known: {', '.join(known)}")

    sw = _keys(doc, top.get("sweep"), _SWEEP, ("sweep",), "sweep")
    p = ("sweep",)
    batch = _axis(doc, sw, "batch", p, 16384, lambda d, v, q: _int(d, v, q, 1))
    width = _axis(doc, sw, "width", p, 768, lambda d, v, q: _int(d, v, q, 1))
    dtype = _axis(doc, sw, "dtype", p, "float32", lambda d, v, q: _choice(d, v, q, DTYPES))
    device = _axis(doc, sw, "device", p, "cpu", lambda d, v, q: _choice(d, v, q, DEVICES))
    inputs = _axis(doc, sw, "input", p, "gaussian", lambda d, v, q: _choice(d, v, q, INPUT_KINDS))
    seed = _axis(doc, sw, "seed", p, 0, lambda d, v, q: _int(d, v, q, 0))
    threads = _axis(doc, sw, "threads", p, "all",
                    lambda d, v, q: (os.cpu_count() or 1) if v == "all" else _int(d, v, q, 1))

    layers: list[dict] = []
    families = {get_backend(b).family for b in backends}
    for fam, allowed in (("ff", _FF), ("fff", _FFF)):
        spec = _keys(doc, top.get(fam), allowed, (fam,), fam)
        if fam in families and fam not in top:
            doc.fail((), f"the suite runs {fam.upper()} backends but has no '{fam}' section")
        if fam not in top:
            continue
        q = (fam,)
        out_width = spec.get("out_width")
        if out_width is not None:
            _int(doc, out_width, q + ("out_width",), 1)
        bias = _bool(doc, spec.get("bias", True), q + ("bias",))
        if fam == "ff":
            for h in _axis(doc, spec, "hidden", q, 3072, lambda d, v, r: _int(d, v, r, 1)):
                layers.append(dict(family="ff", hidden=h, out_width=out_width, bias=bias))
        else:
            depths = _axis(doc, spec, "depth", q, 11, lambda d, v, r: _int(d, v, r, 0))
            trees = _axis(doc, spec, "trees", q, 1, lambda d, v, r: _int(d, v, r, 1))
            for dp, t in itertools.product(depths, trees):
                layers.append(dict(family="fff", depth=dp, trees=t, out_width=out_width, bias=bias))

    cases = tuple(Case(width=w, batch=b, dtype=dt, device=dv, input=i, seed=s, threads=t, **lay)
                  for lay, w, b, dt, dv, i, s, t in itertools.product(layers, width, batch, dtype, device, inputs,
                                                                     seed, threads))
    return Suite(name=name, path=path, text=text, backends=tuple(backends), cases=cases,
                 timing=_timing(doc, top.get("timing")), comparisons=_comparisons(doc, top, backends),
                 description=str(top.get("description", "")))


def _timing(doc, value) -> TimingConfig:
    t = _keys(doc, value, _TIMING, ("timing",), "timing")
    q = ("timing",)
    kw = {}
    for k in ("budget_s", "min_sample_s", "max_call_s"):
        if k in t:
            kw[k] = _num(doc, t[k], q + (k,), 0.0, strict=True)
    if "warmup_s" in t:
        kw["warmup_s"] = _num(doc, t["warmup_s"], q + ("warmup_s",), 0.0)
    for k in ("min_reps", "max_reps", "repetitions"):
        if k in t:
            kw[k] = _int(doc, t[k], q + (k,), 1)
    if "l2" in t:
        kw["l2"] = _axis(doc, t, "l2", q, "warm", lambda d, v, r: _choice(d, v, r, ("warm", "flush")))
    if "launch" in t:
        kw["launch"] = _axis(doc, t, "launch", q, "eager", lambda d, v, r: _choice(d, v, r, ("eager", "graph")))
    if kw.get("min_reps", 1) > kw.get("max_reps", 10 ** 9):
        doc.fail(q + ("min_reps",), "'timing.min_reps' must not exceed 'timing.max_reps'")
    return TimingConfig(**kw)


def _comparisons(doc, top, backends) -> tuple[Comparison, ...]:
    value = top.get("comparisons") or []
    if not isinstance(value, list):
        doc.fail(("comparisons",), "'comparisons' must be a list of mappings")
    out = []
    for i, c in enumerate(value):
        q = ("comparisons", i)
        c = _keys(doc, c, _COMPARISON, q, "a comparison")
        for k in ("label", "numerator", "denominator"):
            if k not in c:
                doc.fail(q, f"comparison {i + 1} lacks '{k}'")
        for k, fam in (("numerator", "ff"), ("denominator", "fff")):
            b = c[k]
            if b in BEST:
                if BEST[b] != fam:
                    doc.fail(q + (k,), f"'{k}' must be an {fam.upper()} backend or 'best-{fam}', got {b!r}")
            elif b not in backends:
                doc.fail(q + (k,), f"'{k}' names {b!r}, which is not in this suite's 'backends'")
            elif get_backend(b).family != fam:
                doc.fail(q + (k,), f"'{k}' must be an {fam.upper()} backend (speedup = FF time / FFF time), "
                                   f"{b!r} is {get_backend(b).family.upper()}")
        hidden = _int(doc, c["hidden"], q + ("hidden",), 1) if c.get("hidden") is not None else None
        device = _choice(doc, c["device"], q + ("device",), DEVICES) if c.get("device") is not None else None
        paper = _keys(doc, c.get("paper"), _PAPER, q + ("paper",), "paper")
        value_ = _num(doc, paper["value"], q + ("paper", "value"), 0.0, strict=True) if "value" in paper else None
        secondary = _bool(doc, paper.get("secondary", False), q + ("paper", "secondary"))
        out.append(Comparison(str(c["label"]), c["numerator"], c["denominator"], hidden, device, value_,
                              str(paper.get("source", "")), secondary))
    return tuple(out)
