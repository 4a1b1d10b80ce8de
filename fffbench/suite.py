"""Suites: YAML files that define a sweep, validated strictly before anything is built.

Every error names the file, the line and what was expected, in one line (:class:`SuiteError`), so
a typo in a 2-hour sweep is caught before the first case runs. Hostile input is refused before it
costs memory: the YAML reader's own limits (:mod:`fffbench.yamldoc`), the number of cases
(computed from the axes before one is built, at most ``max_cases``), and each case's memory
(weights, input, output and float64 reference) against what the machine has available. See
``suites/paper.yaml`` for a commented example of every key.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from fffbench import paper
from fffbench import suite_model as M
from fffbench.layers import FF, FFF
from fffbench.paper import Comparison
from fffbench.registry import backend_names, get_backend
from fffbench.suite_values import _axis, _bool, _choice, _int, _keys, _num
from fffbench.timing import RANGES, TimingConfig
from fffbench.timing.regime import L2_STATES, LAUNCHES
from fffbench.vocab import DEVICES, DTYPES, ITEMSIZE
from fffbench.yamldoc import Doc, DocumentError

#: sweeps larger than this are refused unless the caller raises the limit (``--max-cases``)
MAX_CASES = 100_000
MAX_NAME = 64


class SuiteError(ValueError):
    """A suite that cannot be run; ``str(e)`` is ``file:line: message``."""


_TOP = {"name", "description", "sweep", "ff", "fff", "encoder", "backends", "timing", "comparisons"}
_SWEEP = {"batch", "width", "dtype", "device", "input", "seed", "threads"}
_FF = {"hidden", "out_width", "bias"}
_FFF = {"depth", "trees", "out_width", "bias"} | M.FFF_KEYS
_TIMING = {f.name for f in fields(TimingConfig)}
_COMPARISON = {"label", "numerator", "denominator", "hidden", "device", "figure"}
BEST = paper.BEST


def max_threads() -> int:
    """The largest thread count a suite may ask for: a few times this machine's CPUs (more only
    oversubscribes, and some BLAS builds abort beyond their compiled maximum)."""
    return max(8, 4 * (os.cpu_count() or 1))


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable), where the OS says."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --- the suite --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One workload: a layer, a batch of inputs, a dtype, a device and a thread count.

    ``threads`` is what the suite said: a count, or ``"all"`` (the CPUs the run may use, resolved
    once when the run starts and recorded in run.json, so every row of a run and its resumptions
    agree on it)."""

    family: str
    width: int
    batch: int
    dtype: str
    device: str
    input: str
    seed: int
    threads: int | str
    hidden: int | None = None
    depth: int | None = None
    trees: int | None = None
    out_width: int | None = None
    bias: bool = True
    # the real model (see fffbench.suite_model): the checkpoint the weights (or inputs) come from, the
    # model layer the case is, and for an encoder case the model and its shape (its layer is the feedforward)
    checkpoint: str | None = None
    layer_index: int | None = None
    model: str | None = None
    seq_len: int | None = None
    model_layers: int | None = None
    heads: int | None = None

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
        model = "" if not self.model else f"-{self.model}{self.model_layers}-S{self.seq_len}-h{self.heads}"
        index = "" if self.layer_index is None else f"-L{self.layer_index}"
        ckpt = "" if not self.checkpoint else f"-ckpt:{Path(self.checkpoint).name or self.checkpoint}"
        return (f"{self.family}-d{self.width}-{shape}{out}{nb}-B{self.batch}-{self.dtype}-{self.device}"
                f"-{self.input}-s{self.seed}-t{self.threads}{model}{index}{ckpt}")

    def thread_count(self, all_cpus: int) -> int:
        return all_cpus if self.threads == "all" else int(self.threads)

    def memory_bytes(self) -> dict[str, float]:
        """What the harness holds for this case (float32 weights and their float64 copy for the
        reference, input, the reference output and its temporaries), by part, in bytes."""
        if self.model:
            from fffbench.encoder import EncoderSpec

            spec = EncoderSpec(self.width, self.heads, self.model_layers, self.seq_len, 32768)
            return spec.memory_bytes(self.batch, self.layer)
        dout = self.out_width or self.width
        if self.family == "ff":
            weights = float(self.hidden) * (self.width + 1 + dout)
            temps = 16.0 * self.batch * self.hidden
        else:
            weights = float(self.trees) * (2.0 ** (self.depth + 1) - 1) * (self.width + 1 + dout)
            temps = 8.0 * self.batch * (3 * self.width + 4 * self.trees * (self.depth + 1))
        return {"weights": 12.0 * weights, "input": 12.0 * self.batch * self.width,
                "reference": 8.0 * self.batch * dout + temps,
                "device copies": 3.0 * ITEMSIZE[self.dtype] * (weights + self.batch * (self.width + dout))}


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
    encoder_backends: tuple[str, ...] | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8", "surrogateescape")).hexdigest()

    def backends_for(self, family: str) -> list[str]:
        return [b for b in self.backends if get_backend(b).family == family]

    def backends_for_case(self, case: Case) -> list[str]:
        """The backends of a case's family; for an encoder case, those of ``encoder.backends``."""
        chosen = self.encoder_backends if case.model and self.encoder_backends else self.backends
        return [b for b in chosen if get_backend(b).family == case.family]


def load_suite(path, max_cases: int = MAX_CASES) -> Suite:
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise SuiteError(f"{path}:0: is a directory, not a suite file") from None
    except OSError as e:
        raise SuiteError(f"{path}:0: cannot read suite: {e.strerror}") from None
    return parse_suite(data, path, max_cases)


def parse_suite(text, path: str = "<suite>", max_cases: int = MAX_CASES) -> Suite:
    try:
        return _parse(Doc(path, text), max_cases)
    except DocumentError as e:
        raise SuiteError(str(e)) from None


def _parse(doc: Doc, max_cases: int) -> Suite:
    top = doc.data
    if not isinstance(top, dict):
        doc.fail((), "a suite must be a YAML mapping with at least 'name' and 'backends'")
    _keys(doc, top, _TOP, (), "the suite")
    for required in ("name", "backends"):
        if required not in top:
            doc.fail((), f"missing required key '{required}'")
    name = top["name"]
    if (not isinstance(name, str) or not name or len(name) > MAX_NAME
            or not name.replace("-", "").replace("_", "").isalnum() or not name.isascii()):
        doc.fail(("name",), f"'name' must be a word of at most {MAX_NAME} ASCII letters, digits, '-' and '_' "
                            f"(it names the run directory), got {name!r}")
    backends = _backends(doc, top["backends"])
    sw = _keys(doc, top.get("sweep"), _SWEEP, ("sweep",), "sweep")
    p = ("sweep",)
    top_threads = max_threads()
    axes = {
        "width": _axis(doc, sw, "width", p, 768, lambda d, v, q: _int(d, v, q, 1, 1 << 30)),
        "batch": _axis(doc, sw, "batch", p, 16384, lambda d, v, q: _int(d, v, q, 1, 1 << 40)),
        "dtype": _axis(doc, sw, "dtype", p, "float32", lambda d, v, q: _choice(d, v, q, DTYPES)),
        "device": _axis(doc, sw, "device", p, "cpu", lambda d, v, q: _choice(d, v, q, DEVICES)),
        "input": _axis(doc, sw, "input", p, "gaussian", M.input_choice),
        "seed": _axis(doc, sw, "seed", p, 0, lambda d, v, q: _int(d, v, q, 0, 2 ** 63 - 1)),
        "threads": _axis(doc, sw, "threads", p, "all",
                         lambda d, v, q: "all" if v == "all" else _int(d, v, q, 1, top_threads)),
    }
    layers, src = _layers(doc, top, {get_backend(b).family for b in backends}, axes["width"] if "width" in sw else None)
    axes["width"] = M.width_of(src, axes["width"])
    M.check_inputs(doc, axes["input"], src)
    section = (M.encoder_section(doc, top["encoder"], src, axes["width"], axes["batch"], backends)
               if "encoder" in top else None)
    encoders = M.encoder_layers(layers, section) if section else []
    model_axes = {k: (M.ENCODER_INPUT,) if k == "input" else v for k, v in axes.items()}
    n = len(layers) * math.prod(len(v) for v in axes.values()) + len(encoders) * math.prod(
        len(v) for v in model_axes.values())
    if n > max_cases:
        doc.fail(("sweep",), f"the sweep has {n:,} cases (layers x {' x '.join(axes)}); at most {max_cases:,} "
                             "are run (raise the limit with --max-cases)")
    names = list(axes)
    cases = tuple(Case(**dict(zip(names, combo)), **lay) for lay, *combo in
                  itertools.product([lay for lay, _ in layers], *axes.values()))
    cases += tuple(Case(**dict(zip(names, combo)), **lay) for lay, *combo in
                   itertools.product([lay for lay, _ in encoders], *model_axes.values()))
    _check_memory(doc, cases, {id(c): where for c in cases for lay, where in layers + encoders if _same_layer(c, lay)})
    return Suite(name=name, path=doc.path, text=doc.text, backends=backends, cases=cases,
                 timing=_timing(doc, top.get("timing")), comparisons=_comparisons(doc, top, backends),
                 description=str(top.get("description", "")),
                 encoder_backends=section.backends if section else None)


def _backends(doc, backends) -> tuple[str, ...]:
    known = backend_names()
    if not isinstance(backends, list) or not backends:
        doc.fail(("backends",), "'backends' must be a non-empty list of backend names")
    for i, b in enumerate(backends):
        if not isinstance(b, str) or b not in known:
            close = difflib.get_close_matches(str(b), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            doc.fail(("backends", i), f"unknown backend {b!r}{hint}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(backends))


def _layers(doc, top, families, widths=None) -> tuple[list[tuple[dict, tuple]], M.Source | None]:
    """(layer fields, where in the document) for every layer the suite defines, and the source of
    its FFF layers when they are a checkpoint's (FF layers are then crossed with its layer indices)."""
    layers, src = [], None
    for fam, allowed in (("ff", _FF), ("fff", _FFF)):
        spec = _keys(doc, top.get(fam), allowed, (fam,), fam)
        if fam in families and fam not in top:
            doc.fail((), f"the suite runs {fam.upper()} backends but has no '{fam}' section")
        if fam not in top:
            continue
        if fam == "fff" and ("checkpoint" in spec or "layer" in spec):
            if "checkpoint" not in spec:
                doc.fail((fam, "layer"), "'fff.layer' needs 'fff.checkpoint' (a path, or auto)")
            if widths is not None and len(set(widths)) > 1:
                doc.fail(("sweep", "width"), "'sweep.width' must be one width with a checkpoint (it comes from it)")
            fff, src = M.fff_layers(doc, spec, (fam,), widths[0] if widths else None)
            layers += fff
        else:
            layers += _plain_layers(doc, fam, spec)
    if src is not None:  # each FF layer is the dense baseline of every model layer, on its inputs
        layers = [(dict(lay, checkpoint=src.checkpoint, layer_index=i), where) for lay, where in layers
                  if lay["family"] == "ff" for i in src.layers] + [lw for lw in layers if lw[0]["family"] == "fff"]
    return layers, src


def _plain_layers(doc, fam: str, spec: dict) -> list[tuple[dict, tuple]]:
    """FF widths, or FFF depth x trees (or ``shape`` pairs), with random weights."""
    q, layers = (fam,), []
    out_width = spec.get("out_width")
    if out_width is not None:
        _int(doc, out_width, q + ("out_width",), 1, 1 << 30)
    bias = _bool(doc, spec.get("bias", True), q + ("bias",))
    if fam == "ff":
        for h in _axis(doc, spec, "hidden", q, 3072, lambda d, v, r: _int(d, v, r, 1, 1 << 40)):
            layers.append((dict(family="ff", hidden=h, out_width=out_width, bias=bias), q + ("hidden",)))
    elif "shape" in spec:
        for dp, t in M.shapes(doc, spec, q):
            layers.append((dict(family="fff", depth=dp, trees=t, out_width=out_width, bias=bias), q + ("shape",)))
    else:
        depths = _axis(doc, spec, "depth", q, 11, lambda d, v, r: _int(d, v, r, 0, 40))
        trees = _axis(doc, spec, "trees", q, 1, lambda d, v, r: _int(d, v, r, 1, 1 << 20))
        for dp, t in itertools.product(depths, trees):
            layers.append((dict(family="fff", depth=dp, trees=t, out_width=out_width, bias=bias), q + ("depth",)))
    return layers


def _same_layer(case: Case, layer: dict) -> bool:
    return all(getattr(case, k) == v for k, v in layer.items())


def _check_memory(doc, cases, where: dict) -> None:
    """Refuse a case whose harness memory exceeds what the machine has available."""
    avail = available_memory()
    if not avail:
        return
    worst = max(cases, key=lambda c: sum(c.memory_bytes().values()), default=None)
    if worst is None:
        return
    parts = worst.memory_bytes()
    total = sum(parts.values())
    if total > avail:
        detail = ", ".join(f"{k} {v / 1e9:.3g} GB" for k, v in parts.items())
        doc.fail(where.get(id(worst), ()), f"case {worst.case_id} needs about {total / 1e9:.3g} GB ({detail}); "
                                           f"this machine has {avail / 1e9:.3g} GB available")


def _timing(doc, value) -> TimingConfig:
    t = _keys(doc, value, _TIMING, ("timing",), "timing")
    q = ("timing",)
    kw = {}
    for k in ("budget_s", "min_sample_s", "max_call_s", "target_ci"):
        if k in t:
            kw[k] = _num(doc, t[k], q + (k,), *RANGES[k], strict=True)
    for k in ("warmup_s", "max_process_s"):
        if k in t:
            kw[k] = _num(doc, t[k], q + (k,), *RANGES[k])
    for k in ("min_reps", "max_reps", "repetitions", "max_processes", "retake"):
        if k in t:
            kw[k] = _int(doc, t[k], q + (k,), *RANGES[k])
    if "processes" in t:
        kw["processes"] = "auto" if t["processes"] == "auto" else _int(doc, t["processes"], q + ("processes",),
                                                                      *RANGES["processes"])
    if "l2" in t:
        kw["l2"] = _axis(doc, t, "l2", q, "warm", lambda d, v, r: _choice(d, v, r, L2_STATES))
    if "launch" in t:
        kw["launch"] = _axis(doc, t, "launch", q, "eager", lambda d, v, r: _choice(d, v, r, LAUNCHES))
    if kw.get("min_reps", 1) > kw.get("max_reps", 10 ** 9):
        doc.fail(q + ("min_reps",), "'timing.min_reps' must not exceed 'timing.max_reps'")
    return TimingConfig(**kw)


def _figure_comparison(doc, c: dict, q: tuple) -> tuple[dict, object]:
    """A comparison that names a paper figure: its definition fills in (and must agree with) the keys."""
    if c["figure"] not in paper.BY_KEY or paper.BY_KEY[c["figure"]].kind != "speedup":
        doc.fail(q + ("figure",), f"unknown figure {c['figure']!r}; expected one of: "
                                  + ", ".join(f.key for f in paper.FIGURES if f.kind == "speedup"))
    fig = paper.BY_KEY[c["figure"]]
    for k, v in (("numerator", fig.numerator), ("denominator", fig.denominator), ("hidden", fig.hidden),
                 ("device", fig.device)):
        if k in c and c[k] != v:
            doc.fail(q + (k,), f"figure {fig.key} defines '{k}' as {v!r}, the comparison says {c[k]!r}")
    return {"label": fig.what, "numerator": fig.numerator, "denominator": fig.denominator, "hidden": fig.hidden,
            "device": fig.device} | c, fig


def _side(doc, c: dict, q: tuple, k: str, fam: str, backends) -> None:
    b = c[k]
    if b in BEST:
        if BEST[b] != fam:
            doc.fail(q + (k,), f"'{k}' must be an {fam.upper()} backend or 'best-{fam}', got {b!r}")
    elif b not in backends:
        doc.fail(q + (k,), f"'{k}' names {b!r}, which is not in this suite's 'backends'")
    elif get_backend(b).family != fam:
        doc.fail(q + (k,), f"'{k}' must be an {fam.upper()} backend (speedup = FF time / FFF time), "
                           f"{b!r} is {get_backend(b).family.upper()}")


def _comparisons(doc, top, backends) -> tuple[Comparison, ...]:
    value = top.get("comparisons") or []
    if not isinstance(value, list):
        doc.fail(("comparisons",), "'comparisons' must be a list of mappings")
    out = []
    for i, c in enumerate(value):
        q = ("comparisons", i)
        if isinstance(c, dict) and "paper" in c:
            doc.fail(q + ("paper",), "'paper' is no longer a comparison key: the paper's figures are defined once; "
                                     f"refer to one with 'figure: KEY' ({', '.join(paper.BY_KEY)})", key=True)
        c = _keys(doc, c, _COMPARISON, q, "a comparison")
        c, fig = _figure_comparison(doc, c, q) if "figure" in c else (c, None)
        for k in ("label", "numerator", "denominator"):
            if k not in c:
                doc.fail(q, f"comparison {i + 1} lacks '{k}'")
        _side(doc, c, q, "numerator", "ff", backends)
        _side(doc, c, q, "denominator", "fff", backends)
        hidden = _int(doc, c["hidden"], q + ("hidden",), 1) if c.get("hidden") is not None else None
        device = _choice(doc, c["device"], q + ("device",), DEVICES) if c.get("device") is not None else None
        out.append(Comparison(str(c["label"]), c["numerator"], c["denominator"], hidden, device,
                              fig.key if fig else None))
    return tuple(out)
