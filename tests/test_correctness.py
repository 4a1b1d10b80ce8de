"""The correctness gate fails wrong outputs and tolerates only legitimate near-tie path flips."""
import numpy as np

import fffbench as fb
from fffbench.correctness import Reference, check_output


def setup(batch=300):
    layer = fb.FFF(width=64, depth=6, trees=2)
    w = layer.init_weights(0)
    x = fb.make_input("gaussian", batch, 64, seed=1)
    return layer, w, x, Reference.compute(layer, w, x)


def test_exact_output_passes():
    *_, ref = setup()
    r = check_output(ref.y.astype(np.float32), ref, "float32", "fff")
    assert r.passed and r.path_agreement == 1.0


def test_discarded_activations_fail():
    layer, w, x, ref = setup()
    y = fb.get_backend("test-fff-no-activation").build(layer, w)(x)
    r = check_output(y, ref, "float32", "fff")
    assert not r.passed and "decisive rows" in r.reason


def test_one_corrupted_decisive_row_fails():
    *_, ref = setup()
    y = ref.y.copy()
    row = int(np.argmax(ref.margin))  # the most decisive row
    y[row] += 0.05 * np.linalg.norm(y, axis=1).mean()
    assert not check_output(y, ref, "float32", "fff").passed


def test_path_flip_allowed_only_on_near_tie_rows():
    _layer, _w, _x, ref = setup(batch=2000)
    dec = ref.decisive("bfloat16")
    assert 0 < (~dec).sum() < len(dec)
    y = ref.y.copy()
    tie = int(np.argmin(ref.margin))
    y[tie] = -y[tie]  # a different path gives a completely different row
    r = check_output(y, ref, "bfloat16", "fff")
    assert r.passed and r.path_agreement < 1.0
    y = ref.y.copy()
    firm = int(np.argmax(ref.margin))
    y[firm] = -y[firm]
    assert not check_output(y, ref, "bfloat16", "fff").passed


def test_nan_shape_and_ff():
    *_, ref = setup()
    y = ref.y.copy()
    y[3, 1] = np.nan
    assert "NaN" in check_output(y, ref, "float32", "fff").reason
    assert "shape" in check_output(y[:-1], ref, "float32", "fff").reason
    ff = fb.FF(width=16, hidden=8)
    wf = ff.init_weights(0)
    xf = fb.make_input("gaussian", 10, 16)
    rf = Reference.compute(ff, wf, xf)
    r = check_output(rf.y, rf, "float32", "ff")
    assert r.passed and np.isnan(r.path_agreement) and r.decisive_frac == 1.0


def test_zero_inputs_are_checked_not_divided_by_zero():
    layer = fb.FFF(width=32, depth=3, bias=False)
    w = layer.init_weights(0)
    x = fb.make_input("zeros", 8, 32)
    ref = Reference.compute(layer, w, x)
    assert check_output(np.zeros((8, 32)), ref, "float32", "fff").passed
    assert not check_output(np.ones((8, 32)), ref, "float32", "fff").passed
