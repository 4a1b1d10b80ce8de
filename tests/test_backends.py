"""Every backend available here against the float64 reference, on awkward shapes."""
import numpy as np
import pytest

import fffbench as fb
from fffbench.correctness import Reference, check_output

torch = pytest.importorskip("torch")

SHAPES = [
    fb.FFF(width=100, depth=0, trees=1),
    fb.FFF(width=100, depth=5, trees=3),
    fb.FFF(width=100, depth=5, trees=1, out_width=37, bias=False),
    fb.FF(width=100, hidden=37),
    fb.FF(width=100, hidden=64, out_width=21, bias=False),
]


def available(device="cpu"):
    df = fb.list_backends()
    df = df[(df.device == device) & df.available & ~df.backend.str.startswith("test-")]
    return sorted(df.backend)


def cases():
    for name in available():
        for layer in SHAPES:
            if fb.get_backend(name).family == layer.family:
                yield pytest.param(name, layer, id=f"{name}-{layer.label.replace(' ', '_')}")


@pytest.mark.parametrize("name,layer", list(cases()))
@pytest.mark.parametrize("batch", [1, 777])
def test_backend_matches_reference(name, layer, batch):
    w = layer.init_weights(seed=5)
    x = fb.make_input("gaussian", batch, layer.width, seed=batch)
    y = fb.get_backend(name).build(layer, w, device="cpu", dtype="float32")(x)
    assert isinstance(y, np.ndarray) and y.shape == (batch, layer.dout)
    res = check_output(y, Reference.compute(layer, w, x), "float32", layer.family)
    assert res.passed, res.reason
    assert res.rel_err < 1e-5


@pytest.mark.parametrize("name", available())
def test_backend_accepts_noncontiguous_numpy_and_torch(name):
    b = fb.get_backend(name)
    layer = fb.FFF(width=100, depth=5, trees=3) if b.family == "fff" else fb.FF(width=100, hidden=37)
    w = layer.init_weights(seed=2)
    wide = fb.make_input("gaussian", 61, 200, seed=9)
    x = wide[:, ::2]                       # numpy view with a column stride of 2
    assert not x.flags["C_CONTIGUOUS"]
    ref = layer.reference(x, w)
    fn = b.build(layer, w, device="cpu", dtype="float32")
    np.testing.assert_allclose(fn(x), ref, rtol=1e-4, atol=1e-5)
    xt = torch.from_numpy(np.ascontiguousarray(x.T)).T   # a transposed torch tensor
    assert not xt.is_contiguous()
    np.testing.assert_allclose(fn(xt), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in available() if fb.get_backend(n).family == "fff"
                                  and "bfloat16" in fb.get_backend(n).dtypes])
def test_bfloat16_passes_gate_with_path_agreement(name):
    layer = fb.FFF(width=256, depth=8, trees=2)
    w = layer.init_weights(seed=0)
    x = fb.make_input("gaussian", 512, 256, seed=0)
    ref = Reference.compute(layer, w, x)
    res = check_output(fb.get_backend(name).build(layer, w, dtype="bfloat16")(x), ref, "bfloat16", "fff")
    assert res.passed, res.reason
    assert 0.9 < res.path_agreement <= 1.0 and res.decisive_frac > 0.5


def test_registry_declarations():
    df = fb.list_backends()
    for name in ("ff-dense", "ff-bmm", "fff-bmm", "fff-gather"):
        b = fb.get_backend(name)
        assert b.family in ("ff", "fff") and b.devices and b.dtypes
    assert fb.get_backend("ff-dense").level_on("cpu") == "cpu-l3"
    assert fb.get_backend("ff-dense").level_on("cuda") == "gpu-native"
    assert {"backend", "family", "level", "device", "available", "reason"} <= set(df.columns)
    if not torch.cuda.is_available():
        cuda = df[(df.device == "cuda") & (df.backend == "fff-bmm")]
        assert not cuda.available.any() and "CUDA" in cuda.reason.iloc[0]


def test_unknown_backend_and_family_mismatch():
    with pytest.raises(KeyError, match="unknown backend"):
        fb.get_backend("fff-nope")
    with pytest.raises(ValueError, match="FFF layers"):
        fb.get_backend("fff-bmm").build(fb.FF(width=8, hidden=4), fb.FF(width=8, hidden=4).init_weights())
