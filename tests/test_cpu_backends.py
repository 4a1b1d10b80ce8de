"""The native CPU backends (Numba and C): correctness on awkward shapes against the float64
reference, both schedules of the optimized kernel, bfloat16, thread counts, and the C build's
skip reasons. Speed is not asserted here; it is measured by `fffbench run`."""
import os
import shutil

import numpy as np
import pytest

import fffbench as fb
from fffbench.backends import _cbuild
from fffbench.correctness import Reference, check_output

MINE = ["ff-c-l1", "ff-c-l2", "ff-c-l3", "ff-c-l3-alloc", "fff-c-l1", "fff-c-l2", "fff-c-opt",
        "ff-numba-l1", "ff-numba-l2", "ff-numba-l3", "fff-numba-l1", "fff-numba-l2", "fff-numba-opt"]
FFF_SHAPES = [fb.FFF(width=100, depth=0), fb.FFF(width=100, depth=5, trees=3),
              fb.FFF(width=100, depth=5, out_width=37, bias=False)]
FF_SHAPES = [fb.FF(width=100, hidden=37), fb.FF(width=100, hidden=64, out_width=21, bias=False)]


def _available(name):
    reason = fb.get_backend(name).unavailable_reason("cpu", "float32")
    if reason:
        pytest.skip(f"{name}: {reason}")
    return fb.get_backend(name)


def _check(y, layer, w, x, dtype="float32"):
    res = check_output(y, Reference.compute(layer, w, x), dtype, layer.family)
    assert res.passed, res.reason
    return res


@pytest.mark.parametrize("name", MINE)
def test_matches_reference_on_odd_shapes(name):
    b = _available(name)
    for layer in (FFF_SHAPES if b.family == "fff" else FF_SHAPES):
        w = layer.init_weights(seed=3)
        fn = b.build(layer, w, device="cpu", dtype="float32")
        for batch in (1, 777):
            x = fb.make_input("gaussian", batch, layer.width, seed=batch)
            y = fn(x)
            assert y.shape == (batch, layer.dout) and y.dtype == np.float32
            assert _check(y, layer, w, x).rel_err < 1e-5, (name, layer.label, batch)
        xs = fb.make_input("gaussian", 50, 2 * layer.width, seed=7)[:, 1::2]  # a strided view
        assert not xs.flags["C_CONTIGUOUS"]
        _check(fn(xs), layer, w, xs)


@pytest.mark.parametrize("schedule", ["walk", "bucket", "bucket-small-tiles"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_optimized_schedules(schedule, dtype, monkeypatch):
    from fffbench.backends import c_cpu

    _available("fff-c-opt")
    opt = dict(c_cpu.OPT)
    if schedule == "walk":
        opt["min_rows_per_subtree"] = 10 ** 9
    elif schedule == "bucket-small-tiles":
        opt.update(tile=8, top_levels=2, prefetch=1)
    else:
        opt.update(min_rows_per_subtree=4)
    monkeypatch.setattr(c_cpu, "OPT", opt)
    layer = fb.FFF(width=96, depth=7, out_width=80)
    w = layer.init_weights(seed=1)
    x = fb.make_input("gaussian", 3001, layer.width, seed=2)
    kern = fb.get_backend("fff-c-opt").build(layer, w, dtype=dtype)
    res = _check(kern(x), layer, w, x, dtype)
    if dtype == "bfloat16":  # bf16 weights move a few near-tie rows to the other branch
        assert 0.9 < res.path_agreement <= 1.0
    else:
        assert res.rel_err < 1e-5 and res.path_agreement == 1.0


def test_defect_inputs_keep_outputs_right():
    """Identical and zero rows (the reference code's defects) change speed, not results."""
    b = _available("fff-c-l1")
    layer = fb.FFF(width=64, depth=6)
    w = layer.init_weights(seed=0)
    for kind in ("identical", "zeros"):
        x = fb.make_input(kind, 300, 64, seed=1)
        _check(b.build(layer, w)(x), layer, w, x)


def test_threads_follow_the_case():
    from fffbench.env import pinned_threads

    b = _available("fff-c-opt")
    layer = fb.FFF(width=64, depth=4)
    w = layer.init_weights(seed=0)
    x = fb.make_input("gaussian", 500, 64, seed=0)
    ref = layer.reference(x, w)
    for n in (1, 2):
        with pinned_threads(n):
            np.testing.assert_allclose(b.build(layer, w)(x), ref, rtol=1e-4, atol=1e-5)
    if fb.get_backend("fff-numba-l1").unavailable_reason() is None:
        import numba

        with pinned_threads(1):
            fb.get_backend("fff-numba-l1").build(layer, w)(x)
            assert numba.get_num_threads() == 1


def test_c_kernels_record_their_blas_and_build():
    b = _available("ff-c-l3")
    layer = fb.FF(width=32, hidden=16)
    k = b.build(layer, layer.init_weights(0))
    assert k.blas and ("MKL" in k.blas or "OpenBLAS" in k.blas or "BLAS" in k.blas)
    assert "-O3" in k.build_info


@pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_c_build_compiles_from_scratch(tmp_path, monkeypatch):
    """The build works on a machine with a compiler (CI has gcc): a fresh cache is filled."""
    monkeypatch.setenv("FFFBENCH_CACHE_DIR", str(tmp_path))
    build = _cbuild.load()
    assert build.path.startswith(str(tmp_path)) and os.path.exists(build.path)
    assert list(tmp_path.glob("c-*/build.json"))


def test_c_backends_skip_without_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("FFFBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-fffbench")
    for name in ("fff-c-opt", "ff-c-l3", "fff-c-l1"):
        reason = fb.get_backend(name).unavailable_reason("cpu", "float32")
        assert reason and "no-such-compiler-fffbench" in reason and "not found" in reason
    df = fb.list_backends()
    row = df[(df.backend == "fff-c-opt") & (df.device == "cpu")].iloc[0]
    assert not row.available and "not found" in row.reason


def test_c_blas_skip_reason(monkeypatch):
    """Without any BLAS the paper-level C backends are skipped with the reason; fff-c-opt needs none."""
    _available("fff-c-opt")
    monkeypatch.setattr(_cbuild, "_state", {k: v for k, v in _cbuild._state.items() if k != "blas"})
    monkeypatch.setattr(_cbuild, "_KINDS", {k: (list, v[1]) for k, v in _cbuild._KINDS.items()})
    assert "no BLAS found" in fb.get_backend("ff-c-l3").unavailable_reason()
    assert fb.get_backend("fff-c-opt").unavailable_reason() is None


def test_numba_skip_reason(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "numba", None)
    assert "numba is not installed" in fb.get_backend("fff-numba-l1").unavailable_reason()


def test_levels_declared():
    want = {"ff-c-l1": "cpu-l1", "ff-c-l2": "cpu-l2", "ff-c-l3": "cpu-l3", "ff-c-l3-alloc": "cpu-l3",
            "fff-c-l1": "cpu-l1", "fff-c-l2": "cpu-l2", "fff-c-opt": "optimized", "ff-numba-l1": "cpu-l1",
            "ff-numba-l2": "cpu-l2", "ff-numba-l3": "cpu-l3", "fff-numba-l1": "cpu-l1", "fff-numba-l2": "cpu-l2",
            "fff-numba-opt": "optimized"}
    for name, level in want.items():
        assert fb.get_backend(name).level_on("cpu") == level
