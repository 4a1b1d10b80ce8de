"""The real model in suites, runs and reports: checkpoint layers, model inputs, the encoder against a
plain torch model, its gate, routing records, the end-to-end table, and skipping without a checkpoint."""
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ufbmodel import UltraFastBERT

from fffbench import casedata, members
from fffbench.checkpoint import ENV
from fffbench.runner import group_key, plan
from fffbench.suite import SuiteError, parse_suite

ROOT = Path(__file__).resolve().parent.parent
FAST = "timing: {budget_s: 0.01, warmup_s: 0, min_reps: 2, processes: 1}\n"


@pytest.fixture(scope="module")
def model():
    return UltraFastBERT(layers=2, depth=2, trees=3, width=16, heads=2, vocab=60, seed=2)


@pytest.fixture(scope="module")
def ckpt_dir(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("m") / "UltraFastBERT-tiny")


@pytest.fixture(scope="module")
def capture(model, ckpt_dir):
    """A capture made as scripts/capture_activations.py makes it (its hooks on this model)."""
    spec = importlib.util.spec_from_file_location("capture_activations", ROOT / "scripts" / "capture_activations.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ids = torch.randint(1, 60, (12, 8), generator=torch.Generator().manual_seed(0))
    tensors = script.capture(model, ids, outputs=True)
    out = ckpt_dir.parent / "capture.safetensors"
    script.save(tensors, out, {"format": "fffbench-activations"})
    return out, tensors


def suite(text: str, path: str = "s.yaml"):
    return parse_suite("name: m\n" + text + FAST, path)


# --- suites --------------------------------------------------------------------------------------

def test_checkpoint_suite_takes_shapes_from_the_checkpoint(ckpt_dir):
    s = suite(f"sweep: {{batch: 24, threads: 1, input: [gaussian, norm2]}}\nff: {{hidden: 8, bias: false}}\n"
              f"fff: {{checkpoint: {ckpt_dir}, layer: [0, 1]}}\nencoder: {{seq_len: 8}}\n"
              "backends: [test-ff-numpy, test-fff-numpy]\n")
    fff = [c for c in s.cases if c.family == "fff" and not c.model]
    assert {(c.depth, c.trees, c.width, c.layer_index) for c in fff} == {(2, 3, 16, 0), (2, 3, 16, 1)}
    ff = [c for c in s.cases if c.family == "ff" and not c.model]
    assert {c.layer_index for c in ff} == {0, 1} and all(c.checkpoint == str(ckpt_dir) for c in ff)
    enc = [c for c in s.cases if c.model]
    assert len(enc) == 2 and {c.input for c in enc} == {"tokens"} and {c.model_layers for c in enc} == {2}
    assert {c.heads for c in enc} == {2} and all(c.layer_index is None for c in enc)
    assert len({c.case_id for c in s.cases}) == len(s.cases)
    assert all("-L" in c.case_id and "ckpt:UltraFastBERT-tiny" in c.case_id for c in fff)
    tasks = plan(s)
    keys = {group_key(t) for t in tasks}
    # gaussian rows of every layer share a group; norm2 rows are a workload per layer; encoders their own
    assert len(keys) == 1 + 2 + 1
    enc_keys = {group_key(t) for t in tasks if t.case.model}
    assert len(enc_keys) == 1 and not enc_keys & {group_key(t) for t in tasks if not t.case.model}


def test_existing_case_ids_do_not_change():
    s = suite("sweep: {batch: 4, width: 8, threads: 1}\nfff: {depth: 1}\nbackends: [test-fff-numpy]\n")
    assert s.cases[0].case_id == "fff-d8-D1K1-B4-float32-cpu-gaussian-s0-t1"


def test_shape_lists(ckpt_dir):
    s = suite("sweep: {batch: 4, width: 8, threads: 1}\nfff: {shape: [1x11, 2x10, 128x4]}\nbackends: [fff-bmm]\n")
    assert [(c.trees, c.depth) for c in s.cases] == [(1, 11), (2, 10), (128, 4)]


@pytest.mark.parametrize("body, line, message", [
    ("fff: {{checkpoint: {ckpt}, depth: 3}}\n", 3, "'fff.depth' is 3, but checkpoint"),
    ("fff: {{checkpoint: {ckpt}, layer: [0, 2]}}\n", 3, "layer 2 does not exist: the model has layers 0 to 1"),
    ("fff: {{depth: 2, layer: 1}}\n", 3, "'fff.layer' needs 'fff.checkpoint'"),
    ("fff: {{shape: [2x3], trees: 2}}\n", 3, "'fff.trees' and 'fff.shape' exclude each other"),
    ("fff: {{shape: [2y3]}}\n", 3, "must be TREESxDEPTH"),
    ("fff: {{checkpoint: {ckpt}, bias: false}}\n", 3, "'fff.bias' must be true with a checkpoint"),
    ("fff: {{checkpoint: {ckpt}}}\nencoder: {{seq_len: 7}}\n", 2, "batch 24 is not a multiple of encoder.seq_len"),
    ("fff: {{checkpoint: {ckpt}}}\nencoder: {{seq_len: 8, layers: 3}}\n", 4, "checkpoint"),
    ("fff: {{checkpoint: {ckpt}}}\nencoder: {{seq_len: 8, heads: 3}}\n", 4, "multiple of encoder.heads"),
    ("fff: {{checkpoint: {ckpt}}}\nencoder: {{seq_len: 8, backends: [fff-bmm]}}\n", 4, "not in this suite's 'backends'"),
])
def test_bad_model_suites(ckpt_dir, body, line, message):
    text = "name: m\nsweep: {batch: 24, threads: 1}\n" + body.format(ckpt=ckpt_dir) + "backends: [test-fff-numpy]\n"
    with pytest.raises(SuiteError) as e:
        parse_suite(text, "bad.yaml")
    assert str(e.value).startswith(f"bad.yaml:{line}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_model_inputs_need_a_checkpoint_and_width_comes_from_it(ckpt_dir):
    with pytest.raises(SuiteError, match=r"s.yaml:2: input 'norm2' is the input of a model's layer"):
        suite("sweep: {batch: 4, width: 8, input: norm2}\nfff: {depth: 1}\nbackends: [test-fff-numpy]\n")
    with pytest.raises(SuiteError, match=r"s.yaml:2: 'sweep.width' is 8, but checkpoint .* has width 16"):
        suite(f"sweep: {{batch: 4, width: 8}}\nfff: {{checkpoint: {ckpt_dir}}}\nbackends: [test-fff-numpy]\n")


def test_auto_checkpoint(ckpt_dir, monkeypatch):
    text = "sweep: {batch: 4, threads: 1}\nfff: {checkpoint: auto, layer: [0, 15]}\nbackends: [test-fff-numpy]\n"
    monkeypatch.delenv(ENV, raising=False)
    s = suite(text)  # random weights of the published shapes
    assert {(c.depth, c.trees, c.width, c.checkpoint) for c in s.cases} == {(11, 1, 768, None)}
    assert casedata.unavailable_reason(s.cases[0]) is None
    monkeypatch.setenv(ENV, str(ckpt_dir))
    with pytest.raises(SuiteError, match="layer 15 does not exist"):
        suite(text)
    s = suite("sweep: {batch: 4, threads: 1}\nfff: {checkpoint: auto, layer: 1}\nbackends: [test-fff-numpy]\n")
    assert s.cases[0].checkpoint == str(ckpt_dir) and s.cases[0].depth == 2


def test_missing_checkpoint_rows_are_skipped_with_the_reason(tmp_path):
    from fffbench.session import run_suite

    s = suite(f"sweep: {{batch: 128, threads: 1, input: [gaussian, norm2]}}\nff: {{hidden: 8}}\n"
              f"fff: {{checkpoint: {tmp_path / 'nowhere'}, layer: [3]}}\nencoder: {{}}\n"
              "backends: [test-ff-numpy, test-fff-numpy]\n")
    assert {(c.depth, c.trees, c.width) for c in s.cases if c.family == "fff"} == {(11, 1, 768)}
    df = run_suite(s, out_root=tmp_path / "runs", ceilings=False).frame()
    assert len(df) == len(plan(s)) and (df.status == "skipped").all()
    assert df.reason.str.contains("checkpoint unavailable: .*nowhere: no such checkpoint").all()
    assert df.checkpoint.notna().all() and df.checkpoint_sha256.isna().all()


# --- data, the encoder and its gate --------------------------------------------------------------

def _cases(ckpt_dir, extra=""):
    return suite(f"sweep: {{batch: 96, threads: 1, input: [norm2]}}\nff: {{hidden: 8, bias: false}}\n"
                 f"fff: {{checkpoint: {ckpt_dir}, layer: [1]}}\nencoder: {{seq_len: 8}}\n{extra}"
                 "backends: [ff-dense, test-ff-numpy, fff-gather, test-fff-numpy, test-fff-no-activation]\n").cases


def test_inputs_and_weights_come_from_the_checkpoint(ckpt_dir, model, capture):
    layer_case = next(c for c in _cases(ckpt_dir) if c.family == "fff" and not c.model)
    w = casedata.weights_of(layer_case)
    sd = model.state_dict()
    np.testing.assert_array_equal(w["b1"].ravel(), sd["encoder.layers.1.ffn.linear_in.bias"].numpy())
    x = casedata.input_of(layer_case)
    gauss = np.random.default_rng([0, 3]).standard_normal((96, 16), dtype=np.float32)
    norm2 = model.encoder.layers[1].norm2.double()(torch.from_numpy(gauss).double()).detach().numpy()
    np.testing.assert_allclose(x, norm2, rtol=1e-5, atol=1e-5)
    path, tensors = capture
    act = layer_case.__class__(**{**layer_case.__dict__, "input": f"activations:{path}"})
    np.testing.assert_array_equal(casedata.input_of(act), tensors["layers.1.ffn_input"].numpy()[:96])
    too_many = act.__class__(**{**act.__dict__, "batch": 200})
    assert "96 tokens captured, the case needs 200" in casedata.unavailable_reason(too_many)
    # the capture's outputs are the training code's FFF on those inputs: fffbench's reference matches them
    ref = layer_case.layer.reference(tensors["layers.1.ffn_input"].numpy(), w)
    np.testing.assert_allclose(ref, tensors["layers.1.ffn_output"].numpy(), rtol=0, atol=1e-5)
    assert casedata.reference_key(act) != casedata.reference_key(layer_case)


def test_encoder_matches_a_plain_torch_model(ckpt_dir, model):
    enc = next(c for c in _cases(ckpt_dir) if c.model and c.family == "fff")
    ids = casedata.input_of(enc)
    want = model.encoder.double()(torch.from_numpy(ids)).detach().numpy()
    model.encoder.float()
    ref = casedata.compute_reference(enc)
    np.testing.assert_allclose(ref.y, want, rtol=0, atol=1e-6)  # the module keeps its position code in float32
    w = casedata.weights_of(enc)
    for backend in ("fff-gather", "test-fff-numpy"):
        k = members.build(enc, backend, w, 1)
        y = k.to_numpy(k.run(k.prepare(ids)))
        assert np.abs(y - want).max() < 1e-4
        assert k.states is not None and len(k.states["o"]) == 2


def _gate(case, backend):
    w, ids = casedata.weights_of(case), casedata.input_of(case)
    ref = casedata.compute_reference(case)
    k = members.build(case, backend, w, 1)
    y = k.run(k.prepare(ids))
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/r.y.npy", ref.y)
        np.save(f"{d}/r.margin.npy", ref.margin)
        return members.check(case, k, y, f"{d}/r.y.npy")


def test_encoder_gate(ckpt_dir):
    cases = _cases(ckpt_dir)
    bert = next(c for c in cases if c.model and c.family == "ff")
    ufb = next(c for c in cases if c.model and c.family == "fff")
    ok = _gate(bert, "ff-dense")
    assert ok.passed and ok.rel_err < 1e-5 and ok.token_agreement == 1.0
    ok = _gate(ufb, "fff-gather")
    assert ok.passed and ok.path_agreement == 1.0 and ok.token_agreement == 1.0
    bad = _gate(ufb, "test-fff-no-activation")
    assert not bad.passed and bad.reason.startswith("layer 0 feedforward: ")


def test_random_published_encoder_is_the_published_shape(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    s = suite("sweep: {batch: 256, threads: 1}\nff: {hidden: 3072, bias: false}\nfff: {checkpoint: auto, layer: 0}\n"
              "encoder: {seq_len: 128}\nbackends: [ff-dense, fff-gather]\n")
    enc = [c for c in s.cases if c.model]
    assert {(c.model_layers, c.heads, c.seq_len, c.width) for c in enc} == {(16, 12, 128, 768)}
    spec = casedata.encoder_spec(enc[0])
    assert spec.vocab == 32768 and spec.head_dim == 64
    mem = enc[0].memory_bytes()
    assert 0.5e9 < mem["weights"] < 3e9


# --- a run: rows, provenance, routing, the report -----------------------------------------------

@pytest.fixture(scope="module")
def model_run(ckpt_dir, capture, tmp_path_factory):
    from fffbench.session import run_suite

    path, _ = capture
    s = suite(f"sweep: {{batch: 96, threads: 1, input: [gaussian, norm2, 'activations:{path}']}}\n"
              f"ff: {{hidden: 8, bias: false}}\nfff: {{checkpoint: {ckpt_dir}, layer: [1]}}\n"
              "encoder: {seq_len: 8, backends: [test-ff-numpy, test-fff-numpy]}\n"
              "backends: [test-ff-numpy, test-fff-numpy, test-fff-no-activation]\n")
    return s, run_suite(s, out_root=tmp_path_factory.mktemp("runs"), ceilings=False)


def test_model_run_rows(model_run, ckpt_dir, capture):
    from fffbench.stfile import file_sha256

    s, store = model_run
    df = store.frame()
    assert sorted(df.row_id) == sorted(t.row_id for t in plan(s))
    enc = df[df.model.notna()]
    assert set(enc.backend) == {"test-ff-numpy", "test-fff-numpy"} and (enc.status == "ok").all()
    assert (enc.token_agreement == 1.0).all() and enc.group.nunique() == 1 and enc.attempt.nunique() == 1
    wrong = df[df.backend == "test-fff-no-activation"]
    assert len(wrong) == 3 and (wrong.status == "wrong").all()
    ok = df[df.status == "ok"]
    sha = file_sha256(ckpt_dir / "model.safetensors")
    assert (ok.checkpoint_sha256 == sha).all() and (ok.checkpoint == str(ckpt_dir.resolve())).all()
    assert (ok.checkpoint_bytes == (ckpt_dir / "model.safetensors").stat().st_size).all()
    act = df[df.input.str.startswith("activations")]
    assert (act.input_sha256 == file_sha256(capture[0])).all()
    assert set(df.loc[df.model.isna(), "layer_index"]) == {1}


def test_model_run_routing_records(model_run):
    _, store = model_run
    recs = [json.loads(ln) for ln in (store.path / "routing.jsonl").read_text().splitlines()]
    layer = [r for r in recs if r["source"] == "layer"]
    assert sorted(r["input"].split(":")[0] for r in layer) == ["activations", "gaussian", "norm2"]
    assert sorted(r["layer_index"] for r in recs if r["source"] == "encoder") == [0, 1]
    for r in recs:
        assert r["rows"] == 96 and len(r["leaf_counts"]) == 3 and sum(r["leaf_counts"][0]) == 96
        assert 0 < r["entropy_bits"] <= 2 and 0 <= r["bf16_path_agreement"] <= 1 and len(r["levels"]) == 3
        assert r["levels"][0]["distinct"] == 1 and r["checkpoint_sha256"]


def test_model_run_report(model_run, tmp_path):
    from fffbench import model_report as MR
    from fffbench.formats import write_report
    from fffbench.plots import plot_routing, routing_data, save
    from fffbench.runs import load

    _, store = model_run
    runs = load(store.path)
    e2e = MR.end_to_end_table(runs)
    assert len(e2e) == 2 and set(e2e.model) == {"BERT (FF H=8)", "UltraFastBERT-3x2"}
    u = e2e[e2e.family == "fff"].iloc[0]
    df = runs.df
    enc_t = df.loc[(df.model.notna()) & (df.backend == "test-fff-numpy"), "median_s"].iloc[0]
    lay_t = df.loc[(df.model.isna()) & (df.backend == "test-fff-numpy") & df.input.str.startswith("activations"),
                   "median_s"].iloc[0]
    assert u.layer_input.startswith("activations") and u.layer_rows == 1
    assert u.ff_share == pytest.approx(2 * lay_t / enc_t)
    assert u.paired and u.ci_low <= u.encoder_speedup <= u.ci_high
    assert u.amdahl_bound == pytest.approx(1 / ((1 - u.baseline_share) + u.baseline_share / u.layer_speedup))
    routing = MR.routing_table(runs)
    assert len(routing) == 5
    assert len(MR.routing_time_table(runs)) == 2  # norm2 and the capture, each against Gaussian rows
    fig, data = plot_routing(runs, routing_data(runs))
    assert set(data.panel) == {"leaves", "levels"} and fig.get_size_inches()[0] * 150 <= 1600
    figures = save(fig, tmp_path, "routing")
    text = write_report(runs, tmp_path, "md", figures)[0].read_text()
    for title in ("## End to end", "## Routing per layer", "Routing against time", "layer 1 of UltraFastBERT-tiny",
                  "![routing](routing.png)"):
        assert title in text


@pytest.mark.gpu
@pytest.mark.parametrize("backend, dtype", [("fff-gather", "float32"), ("fff-cuda", "float32"),
                                            ("fff-cuda", "bfloat16"), ("ff-dense", "float32")])
def test_encoder_on_cuda(ckpt_dir, model, backend, dtype):
    import dataclasses

    from fffbench.registry import get_backend

    family = "ff" if backend.startswith("ff-") else "fff"
    case = next(c for c in _cases(ckpt_dir) if c.model and c.family == family)
    case = dataclasses.replace(case, device="cuda", dtype=dtype)
    reason = get_backend(backend).unavailable_reason("cuda", dtype)
    if reason:
        pytest.skip(reason)
    chk = _gate(case, backend)
    assert chk.passed, chk.reason
    k = members.build(case, backend, casedata.weights_of(case), 1)
    y = k.run(k.prepare(casedata.input_of(case)))
    assert y.is_cuda and y.shape == (96, 16)


def test_routing_figure_separates_a_batch_sweep_and_draws_uniform_routing_of_the_same_rows():
    """Records that differ only in batch size are separate lines, each labelled by its batch; the
    uniform reference of each is uniform routing of its own rows over its own tree."""
    from fffbench.plots.routing import routing_data, uniform_shares
    from fffbench.runs import Runs

    def rec(rows, key):
        leaves = np.zeros((1, 8), dtype=int)
        leaves[0, :min(rows, 8)] = 1
        leaves[0, 0] += rows - leaves.sum()
        return {"run": "r", "key": key, "source": "layer", "input": "gaussian", "rows": rows, "trees": 1,
                "depth": 2, "leaves": 8, "leaf_counts": leaves.tolist(),
                "levels": [{"level": 0, "distinct": 1, "possible": 1, "uniform": 1.0}]}

    runs = Runs.__new__(Runs)
    runs.routing = [rec(1, "a"), rec(64, "b")]
    data = routing_data(runs)
    assert set(data.label) == {"B=1", "B=64"}
    one = data[(data.label == "B=1") & (data.panel == "leaves")]
    assert one.y.dropna().tolist() == [1.0] and one.uniform.dropna().tolist() == [1.0]
    assert uniform_shares(8, 64).sum() == pytest.approx(1.0)
    assert uniform_shares(2048, 16).tolist()[:16] == [1 / 16] * 16  # rows far fewer than leaves: each its own
    assert (uniform_shares(2048, 4096, 1) == uniform_shares(2048, 4096, 1)).all()  # fixed seed: same figure
