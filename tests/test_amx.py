"""fff-c-opt's bf16 path on AMX tiles: the packed weights' layout (checked everywhere, by emulating
the tile products in numpy) and the kernel's outputs (where the CPU and the build have AMX)."""
from __future__ import annotations

import numpy as np
import pytest

import fffbench as fb
from fffbench.backends import _amx, _cbuild
from fffbench.correctness import Reference, check_output


def _tdp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What tdpbf16ps computes: a (rows x 2K) times b packed as K pairs x cols x 2."""
    return np.einsum("rpe,pce->rc", a.reshape(a.shape[0], -1, 2), b)


@pytest.mark.parametrize("levels,blocks", [(12, [4, 4, 4]), (10, [4, 3, 3]), (8, [4, 4]), (6, [3, 3]),
                                           (5, [3, 2]), (16, [4, 4, 4, 4])])
def test_blocks_cover_the_tree(levels, blocks):
    assert _amx.blocks_for(levels) == blocks


def test_packed_w1_gives_every_block_nodes_logits():
    rng = np.random.default_rng(0)
    d, blocks = 64, [3, 3, 2]
    n = (1 << sum(blocks)) - 1
    w1 = rng.standard_normal((n, d)).astype(np.float32)
    x = rng.standard_normal((5, d)).astype(np.float32)
    packed, off, lb = _amx.pack_w1(w1, blocks), 0, 0
    assert packed.size == sum(1 << s for s in (0, 3, 6)) * (d // 32) * 512
    for nl in blocks:
        for sub in range(1 << lb):
            tiles = packed[off:off + (d // 32) * 512].reshape(d // 32, 16, 16, 2)
            z = sum(_tdp(x[:, 32 * k:32 * k + 32], tiles[k]) for k in range(d // 32))
            root = (1 << lb) - 1 + sub
            for m in range(16):
                k = (m + 1).bit_length() - 1
                if k < nl:
                    node = ((root + 1) << k) - 1 + m - ((1 << k) - 1)
                    np.testing.assert_allclose(z[:, m], x @ w1[node], rtol=1e-5, atol=1e-5)
                else:
                    assert not z[:, m].any()  # padding columns are zero
            off += (d // 32) * 512
        lb += nl
    assert off == packed.size


def test_packed_w2_rows_are_the_ancestors_then_the_block():
    rng = np.random.default_rng(1)
    dout, blocks = 48, [4, 3]
    n = (1 << 7) - 1
    w2 = rng.standard_normal((n, dout)).astype(np.float32)
    packed = _amx.pack_w2(w2, blocks).reshape(1 << 4, dout // 16, 16, 16, 2)
    for sub in (0, 5, 15):
        rows = packed[sub].transpose(1, 3, 0, 2).reshape(32, dout)  # pair, elem -> K; tile, col -> out
        node = (1 << 4) - 1 + sub
        anc = []
        while node:
            node = (node - 1) // 2
            anc.append(node)
        np.testing.assert_array_equal(rows[:4], w2[anc[::-1]])
        root = (1 << 4) - 1 + sub
        block = [root, 2 * root + 1, 2 * root + 2] + [2 * c + e for c in (2 * root + 1, 2 * root + 2) for e in (1, 2)]
        np.testing.assert_array_equal(rows[4:11], w2[block])
        assert not rows[11:].any()


def test_unsupported_layers_say_why():
    assert "bf16 only" in _amx.unsupported(fb.FFF(width=64, depth=11), "float32")
    if "amx" not in _cbuild.load().isa:
        pytest.skip("no AMX in this build")
    assert "one tree" in _amx.unsupported(fb.FFF(width=64, depth=11, trees=2), "bfloat16")
    assert "one tree" in _amx.unsupported(fb.FFF(width=64, depth=3), "bfloat16")
    assert "multiples of 32" in _amx.unsupported(fb.FFF(width=100, depth=11), "bfloat16")
    assert _amx.unsupported(fb.FFF(width=64, depth=11), "bfloat16") is None


def _amx_available():
    from fffbench.backends import c_cpu

    reason = fb.get_backend("fff-c-opt").unavailable_reason("cpu", "bfloat16")
    reason = reason or _amx.unsupported(fb.FFF(width=64, depth=11), "bfloat16")
    if reason:
        pytest.skip(reason)
    return c_cpu


# (layer, parameters): three and two blocks, uneven blocks, an output width with a 32-column tail,
# units smaller than a subtree's rows, phase-1 groups with and without the staging copy, prefetch
# on and off; batches that are not multiples of 16 or of a group
AMX_CASES = [(fb.FFF(width=64, depth=11), {"chunk": 64, "amxpf": 3}),
             (fb.FFF(width=96, depth=7, out_width=96), {"chunk": 1024, "agroup": 128, "amxpf": 0}),
             (fb.FFF(width=64, depth=9, out_width=32), {"chunk": 64, "amxpf": 2}),
             (fb.FFF(width=128, depth=5, bias=False), {"agroup": 512, "amxpf": 1})]


@pytest.mark.parametrize("case", range(len(AMX_CASES)))
def test_amx_path_matches_reference(case):
    c_cpu = _amx_available()
    layer, params = AMX_CASES[case]
    w = layer.init_weights(seed=case)
    kern = c_cpu.build_fff_opt(layer, w, device="cpu", dtype="bfloat16", threads=2, params={"amx": 1} | params)
    assert "AMX tiles" in kern.describe()
    for batch in (3001, 1024):
        x = fb.make_input("gaussian", batch, layer.width, seed=batch)
        assert kern.amx_for(batch)
        for y in (kern(x), kern.to_numpy(kern.run(kern.prepare(x)))):
            res = check_output(y, Reference.compute(layer, w, x), "bfloat16", "fff")
            assert res.passed, res.reason
            assert res.path_agreement > 0.9


def test_bf16_kernel_says_whether_it_takes_the_amx_path():
    from fffbench.backends import c_cpu

    reason = fb.get_backend("fff-c-opt").unavailable_reason("cpu", "bfloat16")
    if reason:
        pytest.skip(reason)
    layer = fb.FFF(width=64, depth=6)
    kern = c_cpu.build_fff_opt(layer, layer.init_weights(seed=0), device="cpu", dtype="bfloat16", threads=2,
                               params={"amx": 0})
    assert "AMX path not taken: " in kern.describe() and not kern.amx_for(4096)
    fp32 = c_cpu.build_fff_opt(layer, layer.init_weights(seed=0), device="cpu", dtype="float32", threads=2,
                               params={"amx": 1})
    assert "AMX" not in fp32.describe().split("]", 1)[1] and not fp32.amx_for(4096)
