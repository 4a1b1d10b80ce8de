"""The backend registry: one decorator per backend, discovered by importing ``fffbench.backends``.

A backend module declares everything the runner needs (family, paper level, devices, dtypes and an
availability check that returns a reason), so adding a backend is adding one file. Third-party
packages can register through the ``fffbench.backends`` entry-point group; modules named in
``$FFFBENCH_PLUGINS`` (comma-separated, importable) are imported too, in every process, which is
how a backend outside any package (or a test's) reaches the worker processes.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fffbench.vocab import FAMILIES, LEVELS

PLUGINS_ENV = "FFFBENCH_PLUGINS"

_REGISTRY: dict[str, Backend] = {}
_discovered = False


class Kernel:
    """A built backend. ``prepare`` puts an input in the backend's native form (not timed),
    ``run`` is the call that is timed, ``to_numpy`` brings an output back (not timed), and
    ``describe`` names what the kernel runs on (its BLAS, build, tuned parameters, kernel path),
    which the runner stores in each row's ``impl`` column.

    Calling the kernel does all three: numpy in gives numpy out, a torch tensor in gives a torch
    tensor out on the tensor's device.
    """

    device = "cpu"

    def describe(self) -> str:
        return ""

    def prepare(self, x: Any) -> Any:
        return x

    def run(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_numpy(self, y: Any) -> np.ndarray:
        return np.asarray(y)

    def synchronize(self) -> None:
        """Wait for queued device work; CPU kernels are synchronous."""

    def __call__(self, x: Any):
        y = self.run(self.prepare(x))
        self.synchronize()
        if _is_tensor(x):
            import torch

            if isinstance(y, torch.Tensor):
                return y.to(device=x.device)
            return torch.from_numpy(np.asarray(self.to_numpy(y))).to(device=x.device)
        return self.to_numpy(y)


def _is_tensor(x) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch for numpy callers."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


@dataclass(frozen=True)
class Backend:
    name: str
    family: str
    level: str | dict
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    builder: Callable[..., Kernel]
    check: Callable[[str], str | None] | None = None
    description: str = ""
    module: str = field(default="", compare=False)

    def level_on(self, device: str) -> str:
        """The paper level this backend implements on ``device`` (torch's dense layer is the CPU's
        Level 3 and the GPU's native fused layer)."""
        return self.level.get(device, "optimized") if isinstance(self.level, dict) else self.level

    def unavailable_reason(self, device: str = "cpu", dtype: str = "float32") -> str | None:
        """None when the backend can run on ``device`` with ``dtype``, else a one-line reason."""
        if device not in self.devices:
            return f"{self.name} runs on {', '.join(self.devices)}, not {device}"
        if dtype not in self.dtypes:
            return f"{self.name} supports {', '.join(self.dtypes)}, not {dtype}"
        if self.check is not None:
            try:
                return self.check(device, dtype) if _arity(self.check) > 1 else self.check(device)
            except Exception as e:  # an availability probe must never crash a run
                return f"availability check failed: {type(e).__name__}: {e}"
        return None

    def build(self, layer, weights, device: str = "cpu", dtype: str = "float32", threads: int | None = None) -> Kernel:
        """The built kernel. ``threads`` is the CPU thread count it must use (default: the CPUs this
        process may run on); builders that declare a ``threads`` keyword receive it."""
        if layer.family != self.family:
            raise ValueError(f"{self.name} implements {self.family.upper()} layers, got {layer.family.upper()}")
        reason = self.unavailable_reason(device, dtype)
        if reason:
            raise RuntimeError(f"{self.name} is unavailable: {reason}")
        kw = {}
        if _takes_threads(self.builder):
            kw["threads"] = threads or _affinity()
        return self.builder(layer, weights, device=device, dtype=dtype, **kw)


def _arity(fn) -> int:
    """Positional parameters of an availability check: ``(device)`` or ``(device, dtype)``."""
    import inspect

    try:
        return len([p for p in inspect.signature(fn).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        return 1


def _takes_threads(fn) -> bool:
    import inspect

    params = inspect.signature(fn).parameters
    return "threads" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _affinity() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def register_backend(name: str, *, family: str, level: str | dict, devices=("cpu",), dtypes=("float32",),
                     available: Callable[[str], str | None] | None = None, description: str = ""):
    """Decorator registering ``builder(layer, weights, *, device, dtype[, threads]) -> Kernel`` as a
    backend (``threads``, when the builder declares it, is the case's CPU thread count).
    ``available(device)`` or ``available(device, dtype)`` returns None, or why it cannot run."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    for lv in (level.values() if isinstance(level, dict) else [level]):
        if lv not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {lv!r}")

    def deco(builder):
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"backend {name!r} is registered twice")
        _REGISTRY[name] = Backend(name, family, level, tuple(devices), tuple(dtypes), builder, available,
                                  description or (builder.__doc__ or "").strip().split("\n")[0],
                                  builder.__module__)
        return builder

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import fffbench.backends as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="fffbench.backends"):
        ep.load()
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def get_backend(name: str) -> Backend:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def backend_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def list_backends():
    """Every backend with its declaration and, per device, whether it is available and why not."""
    import pandas as pd

    _discover()
    rows = []
    for b in sorted(_REGISTRY.values(), key=lambda b: (b.family, b.name)):
        for dev in b.devices:
            reason = b.unavailable_reason(dev, b.dtypes[0])
            rows.append({"backend": b.name, "family": b.family, "level": b.level_on(dev), "device": dev,
                         "dtypes": ",".join(b.dtypes), "available": reason is None, "reason": reason or "",
                         "description": b.description, "module": b.module})
    return pd.DataFrame(rows)
