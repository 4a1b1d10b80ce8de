"""A case's data: weights, inputs and the float64 reference, made once and shared.

Weights and inputs are pure functions of the case (its layer, seed, input kind, batch and width),
so each worker process makes its own in a fraction of a second. The float64 reference is the
expensive part (a float64 walk of every row); it is computed once per case by the process that
plans the run and written to the run directory's ``cache/`` as ``.npy`` files, which the worker
that checks a backend's output maps from disk. The reference does not depend on the dtype, the
device or the thread count, so the CPU and GPU cases of one layer and batch share one file, and so
do the shards of a run. Files are written whole (temporary name, then rename), so a reader never
sees half of one, and removed once no pending measurement needs them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from fffbench.correctness import Reference
from fffbench.layers import make_input


def reference_key(case) -> str:
    """What the reference depends on: the layer, its weights' seed, and the input rows."""
    layer = case.layer
    spec = {"layer": repr(layer), "seed": case.seed, "input": case.input, "batch": case.batch, "width": case.width}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def weights_of(case) -> dict:
    return case.layer.init_weights(case.seed)


def input_of(case) -> np.ndarray:
    return make_input(case.input, case.batch, case.width, case.seed)


class ReferenceCache:
    """References of cases as ``.npy`` files under ``directory`` (made on demand, atomic)."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def paths(self, case) -> tuple[Path, Path]:
        key = reference_key(case)
        return self.directory / f"{key}.y.npy", self.directory / f"{key}.margin.npy"

    def ensure(self, case) -> Path:
        """Compute and store the reference of ``case`` unless present; returns the ``.y.npy`` path."""
        y_path, m_path = self.paths(case)
        if y_path.exists() and m_path.exists():
            return y_path
        self.directory.mkdir(parents=True, exist_ok=True)
        ref = Reference.compute(case.layer, weights_of(case), input_of(case))
        for path, arr in ((m_path, ref.margin), (y_path, ref.y)):  # y last: its presence means both are whole
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return y_path

    def discard(self, case) -> None:
        for p in self.paths(case):
            p.unlink(missing_ok=True)


def load_reference(y_path, width: int) -> Reference:
    """A reference stored by :meth:`ReferenceCache.ensure`, mapped from disk."""
    y_path = Path(y_path)
    margin = y_path.with_name(y_path.name.replace(".y.npy", ".margin.npy"))
    return Reference(np.load(y_path, mmap_mode="r"), np.load(margin), width)
