"""Comparisons a suite declares, and the paper's figures, each defined once: the value, its source, and exactly which measurement it
corresponds to (FF backend and width, FFF backend and tree, device, setting).

Every table, the end-of-run summary, the plots and the README set a figure beside the one value
:func:`fffbench.report.figure_values` computes from this definition; any other pairing of
backends is shown as its own labelled row, never beside the paper's number. A suite refers to a
figure by key (``comparisons: [{figure: cpu-78x}]``) rather than restating it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

#: the setting every figure was measured in (UltraFastBERT-1x11, BERT-base width, 128 x 128 tokens)
SETTING = {"width": 768, "batch": 16384, "dtype": "float32"}
#: the numerator/denominator that stand for "the fastest correct backend of that family"
BEST = {"best-ff": "ff", "best-fff": "fff"}


@dataclass(frozen=True)
class Figure:
    """A number the paper (or a secondary source) reports, and the measurement it corresponds to:
    ``numerator`` (FF backend or ``best-ff``) at FF width ``hidden`` over ``denominator`` (FFF
    backend or ``best-fff``) on a ``trees`` x ``depth`` tree, on ``device``, in :data:`SETTING`.
    ``kind="limit"`` is the neuron ratio, computed from the shapes."""

    key: str
    value: float
    what: str
    source: str
    device: str | None
    numerator: str | None
    denominator: str | None
    hidden: int
    secondary: bool = False
    kind: str = "speedup"
    depth: int = 11
    trees: int = 1

    @property
    def label(self) -> str:
        return f"{self.value:g}x" + (" (secondary)" if self.secondary else "")


FIGURES = (
    Figure("cpu-78x", 78, "best FFF vs FF Level 3 (MKL sgemm in C), CPU", "abstract, arXiv 2311.10770",
           "cpu", "ff-c-l3", "best-fff", 4095),
    Figure("gpu-bmm-40x", 40, "FFF PyTorch BMM vs FF PyTorch BMM, GPU", "abstract, arXiv 2311.10770v2",
           "cuda", "ff-bmm", "fff-bmm", 3072),
    Figure("limit-341x", 341, "neuron ratio 4095 / 12", "the authors (arXiv 2311.10770)",
           None, None, None, 4095, kind="limit"),
    Figure("cpu-l2-255x", 255, "CPU Level 2 in C (BLAS sgemv), FF vs FFF", "secondary source",
           "cpu", "ff-c-l2", "fff-c-l2", 4095, secondary=True),
    Figure("naive-cuda-118x", 118, "naive CUDA (one thread per row), FF vs FFF", "secondary source",
           "cuda", "ff-cuda-naive", "fff-cuda-naive", 3072, secondary=True),
    Figure("native-vs-bmm-3.15x", 3.15, "native fused FF vs FFF PyTorch BMM, GPU", "secondary source",
           "cuda", "ff-dense", "fff-bmm", 3072, secondary=True),
)
BY_KEY = {f.key: f for f in FIGURES}


@dataclass(frozen=True)
class Comparison:
    """A speedup a suite declares: time(numerator) / time(denominator) on matching workloads.
    ``figure`` names the paper's figure this comparison is the definition of."""

    label: str
    numerator: str      # FF-side backend name or "best-ff"
    denominator: str    # FFF-side backend name or "best-fff"
    hidden: int | None = None
    device: str | None = None
    figure: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


def figure(key: str) -> Figure:
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown paper figure {key!r}; known: {', '.join(BY_KEY)}") from None


def in_setting(key: dict) -> bool:
    """Whether a group of rows (``width``, ``batch``, ``dtype``...) is the paper's setting (random
    layers: not the layers of a checkpoint or of a model)."""
    unset = all(key.get(k) is None or key.get(k) != key.get(k) for k in ("checkpoint", "layer_index"))
    return unset and all(key.get(k) == v for k, v in SETTING.items())


def matching(numerator: str, denominator: str, device: str, hidden: int, depth: int, trees: int) -> Figure | None:
    """The figure defined as exactly this comparison (by name or ``best-*``), or None."""
    for f in FIGURES:
        if (f.kind == "speedup" and (f.numerator, f.denominator, f.device, f.hidden, f.depth, f.trees)
                == (numerator, denominator, device, hidden, depth, trees)):
            return f
    return None
