"""The words every layer of fffbench shares: layer families, the paper's implementation levels,
devices, dtypes, row statuses, and the axes that decide which stored rows may be compared.

A leaf module (it imports nothing of fffbench), so the suite reader, the registry and the reports
agree on these without reading a run ever importing the module that discovers backends.
"""
from __future__ import annotations

FAMILIES = ("ff", "fff")
FAMILY_NAMES = {"ff": "FF", "fff": "FFF"}

#: the paper's implementation levels (Table 2's columns), in the order the tables show them
LEVELS = ("cpu-l1", "cpu-l2", "cpu-l3", "gpu-native", "pytorch-bmm", "naive-cuda", "optimized")
LEVEL_NAMES = {"cpu-l1": "Level 1", "cpu-l2": "Level 2", "cpu-l3": "Level 3", "gpu-native": "native fused",
               "pytorch-bmm": "PyTorch BMM", "naive-cuda": "naive CUDA", "optimized": "optimized"}

DEVICES = ("cpu", "cuda")
DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU"}

DTYPES = ("float32", "bfloat16", "float16")
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}

#: what a stored row can say: timed and correct, failed the gate, could not run here, raised or crashed
STATUSES = ("ok", "wrong", "skipped", "error")

#: the shape of a layer (``dout`` is the output width, defaulting to the input width)
LAYER_AXES = ("family", "width", "dout", "bias", "hidden", "depth", "trees")
#: what the rows of one table share besides the layer: the batch of work and where it ran
WORKLOAD_AXES = ("batch", "dtype", "device", "input", "seed", "threads")
#: how a row was timed (see :mod:`fffbench.timing.regime`)
REGIME_AXES = ("l2", "launch")


def device_name(device: str) -> str:
    return DEVICE_NAMES.get(device, str(device))


def column_label(device: str, level: str) -> str:
    """A Table 2 column: ``CPU Level 2``, ``GPU PyTorch BMM``."""
    return f"{device_name(device)} {LEVEL_NAMES.get(level, level)}"


def column_order(device: str, level: str) -> tuple:
    """Sort key of Table 2's columns: devices as listed, then levels as listed."""
    return (DEVICES.index(device) if device in DEVICES else 9, LEVELS.index(level) if level in LEVELS else 99, level)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 thread``, ``2 threads``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
