"""The native CPU backends (Numba and C): correctness on awkward shapes against the float64
reference, both schedules of the optimized kernel, bfloat16, thread counts, and the C build's
skip reasons. Speed is not asserted here; it is measured by `fffbench run`."""
import itertools
import os
import shutil

import numpy as np
import pytest

import fffbench as fb
from fffbench.backends import _cbuild
from fffbench.correctness import Reference, check_output

MINE = ["ff-c-l1", "ff-c-l2", "ff-c-l3", "ff-c-l3-alloc", "fff-c-l1", "fff-c-l2", "fff-c-opt",
        "ff-numba-l1", "ff-numba-l2", "ff-numba-l3", "fff-numba-l1", "fff-numba-l2", "fff-numba-opt"]
# 16x4: more nodes per row (trees x levels = 80) than fff-c-opt's small-batch path keeps on its stack
FFF_SHAPES = [fb.FFF(width=100, depth=0), fb.FFF(width=100, depth=5, trees=3), fb.FFF(width=100, depth=4, trees=16),
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


SCHEDULES = {
    "walk": dict(min_rows=10 ** 6),
    "bucket": dict(min_rows=4),
    "bucket-small-tiles": dict(R=8, S=2, pfd=1, min_rows=4),
    "bucket-deep-blocks": dict(R=64, S=4, blk=3, pfd=2, nt=1, unit=64, bagc=64, min_rows=4),
    "bucket-regular-stores": dict(R=16, S=3, pfd=1, nt=0, unit=16, dyn=0, bagc=0, min_rows=4),
    "walk-one-thread": dict(min_rows=10 ** 6, mt_rows=10 ** 6, group=3, pf=1),
    # xpf: phase 2 prefetches the next tile's x (and the next subtree's weights) across units
    "bucket-lookahead": dict(R=32, S=4, blk=2, xpf=1, unit=0, dyn=1, bagc=64, min_rows=4),
    "bucket-lookahead-static-units": dict(R=16, S=3, blk=1, xpf=1, pfd=2, unit=16, dyn=0, bagc=-1, min_rows=4),
    # p1g: phase 1 in groups of consecutive rows (a group size that does not divide the tile; the
    # prefetch running past the batch's end)
    "bucket-top-groups": dict(R=32, S=4, p1g=5, pfd=2, unit=0, dyn=1, bagc=0, min_rows=4),
    "bucket-top-groups-static": dict(R=16, S=3, p1g=8, pfd=0, unit=16, dyn=0, bagc=-1, min_rows=4),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_optimized_schedules(schedule, dtype):
    _available("fff-c-opt")
    from fffbench.backends import c_cpu

    layer = fb.FFF(width=96, depth=7, out_width=80)
    w = layer.init_weights(seed=1)
    kern = c_cpu.build_fff_opt(layer, w, device="cpu", dtype=dtype, threads=2, params=SCHEDULES[schedule])
    for batch in (3001, 64, 5, 1):
        x = fb.make_input("gaussian", batch, layer.width, seed=2)
        for y in (kern(x), kern.to_numpy(kern.run(kern.prepare(x)))):
            res = _check(y, layer, w, x, dtype)
            if dtype == "bfloat16":  # bf16 weights move a few near-tie rows to the other branch
                assert 0.9 < res.path_agreement <= 1.0
            else:
                assert res.rel_err < 1e-5 and res.path_agreement == 1.0


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(ln.split(":", 1)[1].split()) for ln in f if ln.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.skipif("avx2" not in _cpu_flags() or not shutil.which("gcc"), reason="needs an AVX2 CPU and gcc")
def test_optimized_kernel_avx2_tiles(tmp_path, monkeypatch):
    """The build for 16 vector registers (one-ymm register tiles, fewer rows per tile) is exact on
    every schedule too. A CPU with AVX-512 builds the 32-register tiles natively, so this build is
    compiled with AVX-512 switched off."""
    monkeypatch.setenv("FFFBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", f"{shutil.which('gcc')} -mno-avx512f")
    _available("fff-c-opt")
    from fffbench.backends import c_cpu

    assert "avx2" in _cbuild.load().isa and "avx512f" not in _cbuild.load().isa
    layer = fb.FFF(width=100, depth=7, out_width=72)
    w = layer.init_weights(seed=4)
    for dtype, schedule in itertools.product(("float32", "bfloat16"), ("walk", "bucket", "bucket-deep-blocks",
                                                                       "bucket-regular-stores", "bucket-lookahead",
                                                                       "bucket-top-groups")):
        kern = c_cpu.build_fff_opt(layer, w, device="cpu", dtype=dtype, threads=2, params=SCHEDULES[schedule])
        assert ("bf16 widened" if dtype == "bfloat16" else "fp32 avx2") in kern.describe()
        for batch in (2001, 7):
            x = fb.make_input("gaussian", batch, layer.width, seed=5)
            res = _check(kern(x), layer, w, x, dtype)
            if dtype == "float32":
                assert res.rel_err < 1e-5 and res.path_agreement == 1.0, schedule


def test_optimized_kernel_is_tuned_once_per_build(tmp_path, monkeypatch):
    """The first build tunes (and says so in its impl), the next one reads the cached parameters."""
    _available("fff-c-opt")
    from fffbench.backends import c_cpu

    monkeypatch.setenv("FFFBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(c_cpu, "TUNE_ROWS", 2048)
    layer = fb.FFF(width=64, depth=6)
    w = layer.init_weights(seed=0)
    first = fb.get_backend("fff-c-opt").build(layer, w, threads=2).describe()
    second = fb.get_backend("fff-c-opt").build(layer, w, threads=2).describe()
    assert "tuned at build" in first and "(cached)" not in first
    assert "(cached)" in second and "bucket S=" in second and "call overhead" in second
    assert first.split("; tuned")[0] == second.split("; tuned")[0]  # the same parameters
    assert list(tmp_path.glob("c-*/tune.json"))


def test_small_batch_path_reuses_its_output_and_needs_no_scratch():
    b = _available("fff-c-opt")
    layer = fb.FFF(width=64, depth=11)
    w = layer.init_weights(seed=0)
    k = b.build(layer, w, threads=2)
    x = k.prepare(fb.make_input("gaussian", 1, 64, seed=0))
    y1 = k.run(x)
    y2 = k.run(x)
    assert np.shares_memory(y1, y2)  # the same buffer: no allocation per call
    _check(k.to_numpy(y2), layer, w, np.asarray(x))


def test_call_on_numpy_copies_input_at_most_once():
    """fn(x) on a contiguous float32 array reads x in place and writes a fresh output directly."""
    b = _available("fff-c-opt")
    layer = fb.FFF(width=64, depth=5)
    w = layer.init_weights(seed=0)
    k = b.build(layer, w, threads=2)
    x = fb.make_input("gaussian", 2000, 64, seed=0)
    seen = []
    run = k._run
    k._run = lambda xx, y, s: (seen.append(xx), run(xx, y, s))[1]
    y = k(x)
    assert seen[0] is x  # no copy of the input
    assert y.flags["C_CONTIGUOUS"] and not np.shares_memory(y, k.buffers(2000)[0])
    _check(y, layer, w, x)


def test_defect_inputs_keep_outputs_right():
    """Identical and zero rows (the reference code's defects) change speed, not results."""
    b = _available("fff-c-l1")
    layer = fb.FFF(width=64, depth=6)
    w = layer.init_weights(seed=0)
    for kind in ("identical", "zeros"):
        x = fb.make_input(kind, 300, 64, seed=1)
        _check(b.build(layer, w)(x), layer, w, x)


def test_threads_follow_the_case():
    """The builder's threads keyword is what the kernel runs on (the harness passes the case's)."""
    b = _available("fff-c-opt")
    layer = fb.FFF(width=64, depth=4)
    w = layer.init_weights(seed=0)
    x = fb.make_input("gaussian", 500, 64, seed=0)
    ref = layer.reference(x, w)
    for n in (1, 2):
        k = b.build(layer, w, threads=n)
        assert k.threads == n
        np.testing.assert_allclose(k(x), ref, rtol=1e-4, atol=1e-5)
    if fb.get_backend("fff-numba-l1").unavailable_reason() is None:
        import numba

        k = fb.get_backend("fff-numba-l1").build(layer, w, threads=1)
        k.run(k.prepare(x))
        assert numba.get_num_threads() == 1


def test_c_kernels_describe_their_blas_build_and_path():
    b = _available("ff-c-l3")
    layer = fb.FF(width=32, hidden=16)
    impl = b.build(layer, layer.init_weights(0), threads=1).describe()
    assert "MKL" in impl or "OpenBLAS" in impl or "BLAS" in impl
    assert "-O3" in impl and "[" in impl  # the build and its ISA
    assert not hasattr(b.build(layer, layer.init_weights(0), threads=1), "blas")
    fff = fb.FFF(width=32, depth=3)
    opt = fb.get_backend("fff-c-opt").build(fff, fff.init_weights(0), dtype="bfloat16", threads=1).describe()
    assert "bf16" in opt and "call overhead" in opt and "MKL" not in opt


def test_dense_bf16_level3():
    """ff-c-l3 in bf16 runs on the BLAS's bf16 GEMM where it has one, else says why not."""
    from fffbench.backends import _cbuild

    b = _available("ff-c-l3")
    layer = fb.FF(width=96, hidden=80, out_width=48)
    w = layer.init_weights(seed=0)
    x = fb.make_input("gaussian", 300, 96, seed=1)
    if not _cbuild.blas().gemm_bf16:
        with pytest.raises(RuntimeError, match="no bf16 GEMM"):
            b.build(layer, w, dtype="bfloat16", threads=2)
        return
    k = b.build(layer, w, dtype="bfloat16", threads=2)
    assert "bf16 GEMM" in k.describe()
    _check(k(x), layer, w, x, "bfloat16")
    _check(k.to_numpy(k.run(k.prepare(x))), layer, w, x, "bfloat16")


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


@pytest.mark.parametrize("nbytes", [64 * 1024 + 4 * 64, 1000003])
def test_streaming_copy_copies_every_byte(nbytes):
    """The copy behind the copy floors: streaming stores on whole lines, the tail (and an odd length
    split over threads) by memcpy."""
    _available("fff-c-opt")
    from fffbench.backends._cpu import StreamingCopy

    copy = StreamingCopy(nbytes, 2)
    copy.src[:] = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    copy()
    assert np.array_equal(copy.dst, copy.src)


def test_cpu_copy_ceiling_is_the_faster_copy():
    """The run's copy ceiling is the faster of torch's copy and the streaming one, both recorded."""
    _available("fff-c-opt")
    from fffbench.ceilings import cpu_ceilings

    c = cpu_ceilings(1, copy_mib=8, gemm_n=64)
    assert c["copy_gbps_stream"] > 0 and c["copy_gbps_torch"] > 0
    assert c["copy_gbps"] == max(c["copy_gbps_torch"], c["copy_gbps_stream"])


@pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_profiling_build_times_the_bucketed_schedule(tmp_path, monkeypatch):
    """scripts/profile_cpu.py's build (-DFFFC_PROFILE) compiles, computes the same output, and
    fffc_profile hands back each phase's time stamps once (then zero: it resets them)."""
    import ctypes

    from fffbench.backends import c_cpu

    monkeypatch.setenv("FFFBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", f"{os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')} -DFFFC_PROFILE")
    layer = fb.FFF(width=64, depth=5)
    w = layer.init_weights(seed=1)
    x = fb.make_input("gaussian", 2048, 64, seed=2)
    k = c_cpu.build_fff_opt(layer, w, device="cpu", dtype="float32", threads=2, params={"S": 2, "min_rows": 1})
    lib = _cbuild.load().lib
    out = (ctypes.c_uint64 * 64)()
    lib.fffc_profile(out)
    _check(k(x), layer, w, x)
    lib.fffc_profile(out)
    phase1, phase2, bag = out[0], out[1], out[2]  # thread 0: Q_PHASE1, Q_PHASE2, Q_BAG in fffc_opt.c
    assert phase1 > 0 and phase2 >= bag > 0
    lib.fffc_profile(out)
    assert not any(out)


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_membench_compiles(tmp_path):
    """scripts/membench.c (the per-core memory paths behind notes/cpu-kernels.md's time model)
    builds for AVX-512 on any x86 compiler, whatever the CPU it runs on."""
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    src = os.path.join(os.path.dirname(__file__), "..", "scripts", "membench.c")
    r = subprocess.run([cc, "-O2", "-mavx512f", "-fopenmp", "-Wall", "-Werror", src, "-o", str(tmp_path / "mb")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "mb").exists()
