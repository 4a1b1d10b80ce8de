"""Routing statistics from a float64 walk: known routings give known numbers."""
import numpy as np

import fffbench as fb
from fffbench.routing import RoutingLog, bf16_round, paths, stats


def _stats(layer, w, x):
    return stats(layer, x, *layer.walk(x, w), w)


def test_everyone_left_and_uniform_routing():
    layer = fb.FFF(width=8, depth=3, trees=2)
    w = layer.init_weights(1)
    w["b1"][:] = -1.0                                   # zero input: every logit -1, every row goes left
    s = _stats(layer, w, np.zeros((64, 8), np.float32))
    assert s["entropy_bits"] == 0 and s["effective_leaves"] == 1 and s["max_leaf_share"] == 1
    assert [lv["distinct"] for lv in s["levels"]] == [1, 1, 1, 1] and s["empty_leaf_share"] == 7 / 8
    assert s["levels"][0]["right_share"] == 0 and s["near_zero_fp32"] == 0 and s["bf16_path_agreement"] == 1
    assert s["leaf_counts"] == [[64, 0, 0, 0, 0, 0, 0, 0]] * 2
    x = fb.make_input("gaussian", 20000, 8, 2)
    s = _stats(layer, layer.init_weights(3), x)
    assert s["entropy_ratio"] > 0.9 and s["levels"][-1]["distinct"] == 8 and s["levels"][-1]["possible"] == 8
    assert s["levels"][3]["uniform"] == np.float64(8 * (1 - (7 / 8) ** 20000))
    assert 0.98 < s["bf16_path_agreement"] < 1 and s["near_tie_rows_bf16"] > s["near_tie_rows_fp32"]


def test_paths_match_the_walk_and_bf16_rounding():
    layer = fb.FFF(width=16, depth=4, trees=3)
    w, x = layer.init_weights(0), fb.make_input("gaussian", 300, 16, 0)
    np.testing.assert_array_equal(paths(x, w["w1"], w["b1"], layer.levels), layer.walk(x, w)[0])
    v = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5e-3], np.float32)
    np.testing.assert_array_equal(bf16_round(v), np.array([1.0, 1.0, 1 + 2 ** -6, -0.00250244140625], np.float32))


def test_log_records_each_walk_once():
    layer = fb.FFF(width=8, depth=2, trees=1)
    w, x = layer.init_weights(0), fb.make_input("gaussian", 50, 8, 0)
    out = []

    class C:
        family, model, layer_index = "fff", None, 3
    C.layer = layer
    log = RoutingLog(out.append)
    hook = log.hook(C, "k1", {"input": "gaussian"})
    hook(3, x, *layer.walk(x, w), w)
    assert len(out) == 1 and out[0]["key"] == "k1" and out[0]["layer_index"] == 3 and out[0]["input"] == "gaussian"
    assert log.hook(C, "k1", {}) is None
