"""pytest-benchmark timings of every available backend on a small shape.

Not part of the default test run (``testpaths = tests``); run with:

    pytest benchmarks --benchmark-only

These are for quick local comparisons while developing a backend; the numbers that matter come
from ``fffbench run`` (correctness gate, pinned threads, stored samples and environment).
"""
import pytest

import fffbench as fb

BATCH, WIDTH = 1024, 256
LAYERS = {"ff": fb.FF(width=WIDTH, hidden=1023), "fff": fb.FFF(width=WIDTH, depth=9)}


def _available():
    df = fb.list_backends()
    df = df[(df.device == "cpu") & df.available]
    return sorted(n for n in df.backend if not n.startswith("test-"))


@pytest.mark.parametrize("name", _available())
def test_backend_speed(benchmark, name):
    backend = fb.get_backend(name)
    layer = LAYERS[backend.family]
    weights = layer.init_weights(seed=0)
    kernel = backend.build(layer, weights, device="cpu", dtype="float32")
    x = kernel.prepare(fb.make_input("gaussian", BATCH, WIDTH))
    benchmark.extra_info.update(backend=name, family=backend.family, layer=layer.label, batch=BATCH)
    benchmark(kernel.run, x)
