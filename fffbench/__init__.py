"""fffbench: an honest benchmark harness for fast feedforward (FFF) layers."""
from fffbench.layers import FF, FFF, make_input
from fffbench.registry import Kernel, get_backend, list_backends, register_backend

__version__ = "0.2.0"


def load_checkpoint(path, depth: int | None = None, trees: int | None = None):
    """An UltraFastBERT checkpoint (folder or ``.safetensors`` file); see :mod:`fffbench.checkpoint`."""
    from fffbench.checkpoint import load_checkpoint as load

    return load(path, depth=depth, trees=trees)


def load_run(*paths, samples: bool = False):
    """Rows of one or several stored runs as one pandas DataFrame (see :mod:`fffbench.store`)."""
    from fffbench.store import load_runs

    return load_runs(paths, samples=samples)


__all__ = ["FF", "FFF", "Kernel", "get_backend", "list_backends", "load_checkpoint", "load_run", "make_input",
           "register_backend"]
