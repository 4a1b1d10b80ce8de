"""CUDA backends: the sources compile wherever nvcc exists (CI too); on a GPU every CUDA backend
matches the float64 reference on awkward shapes, bf16 reports path agreement, graphs capture."""
import numpy as np
import pytest

import fffbench as fb
from fffbench.backends import _nvcc
from fffbench.correctness import Reference, check_output

CUDA_BACKENDS = ["ff-cuda-naive", "fff-cuda-naive", "fff-cuda", "fff-cuda-v3"]


@pytest.mark.skipif(_nvcc.find_nvcc() is None, reason="nvcc not found")
def test_cuda_source_compiles_for_hopper(tmp_path):
    lib = _nvcc.build("fff_cuda.cu", "90", out_dir=tmp_path)
    assert lib.exists() and lib.stat().st_size > 10_000
    assert _nvcc.build("fff_cuda.cu", "90", out_dir=tmp_path) == lib  # cached: no rebuild
    assert _nvcc.build("fff_cuda_v4.cu", "90", out_dir=tmp_path).stat().st_size > 10_000


def test_cuda_backends_declared_and_skipped_without_gpu():
    import torch

    for name in CUDA_BACKENDS:
        b = fb.get_backend(name)
        assert b.devices == ("cuda",)
        reason = b.unavailable_reason("cuda", "float32")
        if not torch.cuda.is_available():
            assert reason and "CUDA" in reason
        assert "runs on cuda" in b.unavailable_reason("cpu", "float32")
    assert fb.get_backend("fff-cuda-naive").level_on("cuda") == "naive-cuda"


def test_v4_stages():
    from fffbench.backends.cuda_kernels import v4_stages

    assert v4_stages(12) == [(0, 4), (4, 4), (8, 4)]
    assert v4_stages(1) == [(0, 1)] and v4_stages(15)[-1] == (12, 3)


def test_split_level_choice():
    from fffbench.backends.cuda_kernels import split_level

    assert split_level(16384, 12) == 7 and split_level(1024, 12) == 3 and split_level(100, 12) == 0
    assert split_level(16384, 3) == 3


def _poisoned_run(fn, x):
    import torch

    junk = torch.full((64 * 2 ** 20,), float("nan"), device="cuda")  # freed blocks hold NaN
    del junk
    return fn(x)


SHAPES = [fb.FFF(width=768, depth=11), fb.FFF(width=768, depth=0), fb.FFF(width=256, depth=5, trees=3),
          fb.FFF(width=100, depth=5, trees=3), fb.FFF(width=128, depth=4, out_width=37), fb.FF(width=100, hidden=37),
          fb.FF(width=768, hidden=256)]


@pytest.mark.gpu
@pytest.mark.parametrize("name", CUDA_BACKENDS)
@pytest.mark.parametrize("layer", SHAPES, ids=lambda l: l.label.replace(" ", "_"))
@pytest.mark.parametrize("batch", [1, 777, 16384])
def test_cuda_backend_matches_reference(name, layer, batch):
    b = fb.get_backend(name)
    if b.family != layer.family or (name == "ff-cuda-naive" and batch > 1000):
        pytest.skip("other family, or too slow for a test")
    w = layer.init_weights(seed=batch)
    x = fb.make_input("gaussian", batch, layer.width, seed=batch + 1)
    y = _poisoned_run(b.build(layer, w, device="cuda", dtype="float32"), x)
    res = check_output(y, Reference.compute(layer, w, x), "float32", layer.family)
    assert res.passed, res.reason


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch", [1, 300, 16384])
@pytest.mark.parametrize("variant,opts", [("v1", {}), ("v2-staged", {}), ("v3", {}), ("v3", dict(rows_per_warp=2)),
                                          ("v3", dict(rows_per_warp=4)), ("v4", {}), ("v4", dict(pdl=True)),
                                          ("v4", dict(small_max=0, tiny_max=0)),
                                          ("v4", dict(small_max=1 << 30, tiny_max=0, spec=3)),
                                          ("v4", dict(tiles=(2, 3, 2), ksplit=(2, 2, 2), hints=(0, 0))),
                                          ("v4", dict(w1_bulk=True, small_max=0, tiny_max=0)),
                                          ("v4", dict(w1_bulk=False, small_max=0, tiny_max=0)),
                                          ("v4", dict(w1_bulk=False, colsplit=True, tiles=(2, 3, 3))),
                                          ("v4", dict(w1_bulk=True, w1first=True, tiles=(2, 3, 2), ksplit=(2, 2, 2))),
                                          ("v4", dict(colsplit=True, small_max=0, tiny_max=0)),
                                          ("v4", dict(colsplit=True, w1_bulk=True, tiles=(2, 3, 3))),
                                          ("v4", dict(colsplit=True, tiles=(4, 4, 1), small_max=0, tiny_max=0))])
def test_fff_cuda_variants_match_reference(dtype, batch, variant, opts):
    import torch

    from fffbench.backends.cuda_kernels import FffOptimized

    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(3)
    x = fb.make_input("gaussian", batch, 768, seed=4)
    k = FffOptimized(layer, w, "cuda", dtype, variant=variant, **opts)
    y = k(torch.as_tensor(x).to("cuda", {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]))
    y2 = k(torch.as_tensor(x).to("cuda", {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]))
    res = check_output(y2.float().cpu().numpy(), Reference.compute(layer, w, x), dtype, "fff")
    assert res.passed, res.reason
    assert torch.equal(y, y2), "a second call differs: per-call state was not reset"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layer", [fb.FFF(width=256, depth=12), fb.FFF(width=512, depth=7), fb.FFF(width=1024, depth=9),
                                   fb.FFF(width=768, depth=5)], ids=lambda l: l.label.replace(" ", "_"))
def test_fff_cuda_w1_bulk_matches_reference(dtype, layer):
    """The staged path with W1 by bulk copy (every width's kernels, short last stages)."""
    import torch

    from fffbench.backends.cuda_kernels import FffOptimized

    w = layer.init_weights(7)
    x = fb.make_input("gaussian", 777, layer.width, seed=8)
    k = FffOptimized(layer, w, "cuda", dtype, w1_bulk=True, small_max=0, tiny_max=0)
    xt = torch.as_tensor(x).to("cuda", {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
    y, y2 = k(xt), k(xt)
    res = check_output(y2.float().cpu().numpy(), Reference.compute(layer, w, x), dtype, "fff")
    assert res.passed, res.reason
    assert torch.equal(y, y2), "a second call differs: per-call state was not reset"
    if torch.cuda.get_device_capability()[0] >= 9:
        assert "bulk copy (one" in k.describe()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layer", [fb.FFF(width=256, depth=12), fb.FFF(width=512, depth=7), fb.FFF(width=1024, depth=9),
                                   fb.FFF(width=768, depth=5), fb.FFF(width=768, depth=14), fb.FFF(width=768, depth=11)],
                         ids=lambda l: l.label.replace(" ", "_"))
def test_fff_cuda_colsplit_matches_default(dtype, layer):
    """The last stage's output split over y's columns (every width's kernels, short and deep last
    stages): the row-tile output's (colsplit=False) within fp32 rounding, and in bf16 every row on
    the same path (a row on another path would be off by O(1))."""
    import torch

    from fffbench.backends.cuda_kernels import FffOptimized

    w = layer.init_weights(9)
    batch = 4096 if layer.depth == 11 else 777
    x = fb.make_input("gaussian", batch, layer.width, seed=10)
    xt = torch.as_tensor(x).to("cuda", {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
    k = FffOptimized(layer, w, "cuda", dtype, colsplit=True, w1_bulk=layer.depth == 5, small_max=0, tiny_max=0)
    y, y2 = k(xt), k(xt)
    y0 = FffOptimized(layer, w, "cuda", dtype, colsplit=False, small_max=0, tiny_max=0)(xt).float()
    res = check_output(y2.float().cpu().numpy(), Reference.compute(layer, w, x), dtype, "fff")
    assert res.passed, res.reason
    assert torch.equal(y, y2), "a second call differs: per-call state was not reset"
    assert "columns (a W2 ring per warp)" in k.describe()
    diff = y2.float() - y0
    if dtype == "float32":
        assert float(diff.norm() / y0.norm()) <= 1e-5
    else:
        assert bool((diff.norm(dim=1) <= 1e-2 * y0.norm(dim=1) + 1e-6).all()), "a row differs from the default path's"


@pytest.mark.gpu
def test_fff_cuda_colsplit_not_applied_with_ksplit_last_stage():
    """A k-split last stage keeps the default output (the column split needs one warp per tile)."""
    import torch

    from fffbench.backends.cuda_kernels import FffOptimized

    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(1)
    x = fb.make_input("gaussian", 2048, 768, seed=2)
    k = FffOptimized(layer, w, "cuda", "float32", colsplit=True, ksplit=(2, 1, 2), small_max=0, tiny_max=0)
    res = check_output(k(torch.as_tensor(x).cuda()).cpu().numpy(), Reference.compute(layer, w, x), "float32", "fff")
    assert res.passed, res.reason
    assert "column-split output asked but not applied" in k.describe()


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [333, 16384])
def test_fff_cuda_bf16_path_agreement(batch):
    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(0)
    x = fb.make_input("gaussian", batch, 768, seed=2)
    res = check_output(fb.get_backend("fff-cuda").build(layer, w, device="cuda", dtype="bfloat16")(x),
                       Reference.compute(layer, w, x), "bfloat16", "fff")
    assert res.passed, res.reason
    assert res.path_agreement > 0.97


@pytest.mark.gpu
def test_fff_cuda_non_contiguous_input_and_graph_replay():
    import torch

    layer = fb.FFF(width=768, depth=11)
    w = layer.init_weights(0)
    kern = fb.get_backend("fff-cuda").build(layer, w, device="cuda", dtype="float32")
    wide = torch.randn(4096, 1536, device="cuda")
    x = wide[:, ::2]
    ref = layer.reference(x.cpu().numpy(), w)
    np.testing.assert_allclose(kern(x).cpu().numpy(), ref, rtol=1e-4, atol=1e-4)  # a tensor in: a tensor out
    xn = kern.prepare(x)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        kern.run(xn)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            y = kern.run(xn)
    torch.cuda.current_stream().wait_stream(s)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    np.testing.assert_allclose(y.cpu().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_cuda_warm_up_waits_for_each_call(monkeypatch):
    """Launches are asynchronous: warm-up must synchronise after every call, or a slow kernel
    queues about a thousand calls inside warmup_s and the run waits minutes for them (seen on an
    H200 with the naive FF kernel, 0.74 s per call)."""
    import torch

    from fffbench.timing import TimingConfig
    from fffbench.timing.cuda import _warm

    pending = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pending.clear())

    def launch(x):
        pending.append(x)
        assert len(pending) == 1, "a call was launched before the previous one finished"

    per_call = _warm(launch, 0, TimingConfig(warmup_s=0.01))
    assert per_call > 0
