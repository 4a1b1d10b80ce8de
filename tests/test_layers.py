"""The float64 reference against an independent, literal loop implementation of the brief's math."""
import math

import numpy as np
import pytest

import fffbench as fb


def gelu(z):
    return 0.5 * z * (1 + math.erf(z / math.sqrt(2)))


def fff_loops(x, w1, b1, w2, depth):
    """Row by row, tree by tree, level by level: exactly the brief's definition."""
    K = w1.shape[0]
    y = np.zeros((x.shape[0], w2.shape[2]))
    for r in range(x.shape[0]):
        for k in range(K):
            n = 0
            for _ in range(depth + 1):
                z = sum(float(x[r, i]) * float(w1[k, n, i]) for i in range(x.shape[1])) + float(b1[k, n])
                y[r] += gelu(z) * w2[k, n].astype(np.float64)
                n = 2 * n + 1 + (1 if z > 0 else 0)
    return y


def ff_loops(x, w1, b1, w2):
    y = np.zeros((x.shape[0], w2.shape[1]))
    for r in range(x.shape[0]):
        for h in range(w1.shape[0]):
            z = sum(float(x[r, i]) * float(w1[h, i]) for i in range(x.shape[1])) + float(b1[h])
            y[r] += gelu(z) * w2[h].astype(np.float64)
    return y


@pytest.mark.parametrize("depth,trees,out_width,bias", [(0, 1, None, True), (3, 2, 5, True), (4, 3, None, False)])
def test_fff_reference_matches_loops(depth, trees, out_width, bias):
    layer = fb.FFF(width=9, depth=depth, trees=trees, out_width=out_width, bias=bias)
    w = layer.init_weights(seed=3)
    x = fb.make_input("gaussian", 13, 9, seed=4)
    np.testing.assert_allclose(layer.reference(x, w), fff_loops(x, w["w1"], w["b1"], w["w2"], depth), rtol=1e-12,
                               atol=1e-12)


def test_ff_reference_matches_loops():
    layer = fb.FF(width=7, hidden=11, out_width=4)
    w = layer.init_weights(seed=1)
    x = fb.make_input("gaussian", 5, 7, seed=2)
    np.testing.assert_allclose(layer.reference(x, w), ff_loops(x, w["w1"], w["b1"], w["w2"]), rtol=1e-12, atol=1e-12)


def test_weights_shapes_dtypes_and_determinism():
    layer = fb.FFF(width=10, depth=2, trees=3, out_width=4)
    w = layer.init_weights(seed=0)
    assert w["w1"].shape == (3, 7, 10) and w["b1"].shape == (3, 7) and w["w2"].shape == (3, 7, 4)
    assert all(v.dtype == np.float32 for v in w.values())
    assert all(np.array_equal(w[k], layer.init_weights(seed=0)[k]) for k in w)
    assert not np.array_equal(w["w1"], layer.init_weights(seed=1)["w1"])
    f = fb.FF(width=10, hidden=6).init_weights(seed=0)
    assert f["w1"].shape == (6, 10) and f["b1"].shape == (6,) and f["w2"].shape == (6, 10)


def test_walk_follows_heap_order():
    layer = fb.FFF(width=4, depth=3)
    nodes, logits, _ = layer.walk(fb.make_input("gaussian", 50, 4), layer.init_weights(0))
    assert (nodes[:, 0, 0] == 0).all()
    for lvl in range(3):
        expected = 2 * nodes[:, 0, lvl] + 1 + (logits[:, 0, lvl] > 0)
        assert (nodes[:, 0, lvl + 1] == expected).all()
        assert ((nodes[:, 0, lvl] >= 2 ** lvl - 1) & (nodes[:, 0, lvl] < 2 ** (lvl + 1) - 1)).all()


def test_counts_and_limits():
    layer = fb.FFF(width=768, depth=11)
    assert layer.nodes == 4095 and layer.neurons_used == 12
    assert fb.FF(width=768, hidden=4095).neurons_total / layer.neurons_used == pytest.approx(341.25)
    # compulsory bytes: x + y + all weights once (B far above the node count)
    assert layer.compulsory_bytes(16384) == 4 * (16384 * 1536 + 4095 * (768 + 1 + 768))
    assert fb.FFF(width=8, depth=20).compulsory_bytes(1) == 4 * (16 + 21 * 17)


@pytest.mark.parametrize("kind", ["gaussian", "identical", "zeros"])
def test_inputs(kind):
    x = fb.make_input(kind, 6, 5, seed=0)
    assert x.shape == (6, 5) and x.dtype == np.float32
    if kind == "identical":
        assert (x == x[0]).all() and x.std() > 0
    if kind == "zeros":
        assert not x.any()


@pytest.mark.parametrize("bad", [dict(width=0), dict(depth=-1), dict(trees=0), dict(width=2.5)])
def test_bad_specs_raise(bad):
    with pytest.raises(ValueError):
        fb.FFF(**bad)


def test_reference_rejects_wrong_width():
    layer = fb.FFF(width=8, depth=1)
    with pytest.raises(ValueError, match="shape"):
        layer.reference(np.zeros((3, 9)), layer.init_weights())
