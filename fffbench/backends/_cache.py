"""Where compiled kernels are cached: ``$FFFBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/fffbench``,
else ``~/.cache/fffbench``. One variable for every compiled backend (C and CUDA), so clearing or
relocating the cache is one setting."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FFFBENCH_CACHE_DIR"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fffbench"
