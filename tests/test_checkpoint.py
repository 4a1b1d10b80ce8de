"""The checkpoint loader: the published format written by an independent model, prefixes, bare files,
and one-line errors naming the file and the key."""
import hashlib
import json

import numpy as np
import pytest
import torch
from ufbmodel import UltraFastBERT

import fffbench as fb
from fffbench.checkpoint import CheckpointError, load_activations


@pytest.fixture(scope="module")
def model():
    return UltraFastBERT(layers=3, depth=2, trees=3, width=16, heads=2, seed=1)


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("ckpt") / "UltraFastBERT-tiny")


def test_published_format_loads(folder, model):
    ckpt = fb.load_checkpoint(folder)
    assert (ckpt.num_layers, ckpt.depth, ckpt.trees, ckpt.width) == (3, 2, 3, 16)
    assert ckpt.sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert ckpt.size == (folder / "model.safetensors").stat().st_size
    layer, w = ckpt.fff(1)
    assert isinstance(layer, fb.FFF) and (layer.depth, layer.trees, layer.width) == (2, 3, 16)
    sd = model.state_dict()
    np.testing.assert_array_equal(w["w1"].reshape(-1, 16), sd["encoder.layers.1.ffn.linear_in.weight"].numpy())
    np.testing.assert_array_equal(w["b1"].ravel(), sd["encoder.layers.1.ffn.linear_in.bias"].numpy())
    np.testing.assert_array_equal(w["w2"].reshape(-1, 16), sd["encoder.layers.1.ffn.linear_out.weight"].numpy().T)
    assert w["w1"].shape == (3, 7, 16) and w["w2"].flags.c_contiguous and w["w1"].flags.writeable


def test_reference_matches_the_training_codes_masked_forward(folder, model):
    """The criterion "a checkpoint in the published format that fffbench did not write": the state dict
    of an independent module of the training code, saved through safetensors; fffbench's float64
    reference on each loaded layer against that module's forward (float64) to 1e-5."""
    ckpt = fb.load_checkpoint(folder)
    x = torch.randn(500, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    for i, lay in enumerate(model.encoder.layers):
        layer, w = ckpt.fff(i)
        want = lay.ffn.double()(x).detach().numpy()
        lay.ffn.float()
        got = layer.reference(x.numpy(), w)
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_key_prefixes(model, tmp_path, prefix):
    ckpt = fb.load_checkpoint(model.save(tmp_path / "p", prefix=prefix, config="flat"))
    assert ckpt.num_layers == 3
    np.testing.assert_array_equal(ckpt.fff(2)[1]["b1"].ravel(),
                                  model.state_dict()["encoder.layers.2.ffn.linear_in.bias"].numpy())


def test_bf16_checkpoint_reads_as_float32(model, tmp_path):
    ckpt = fb.load_checkpoint(model.save(tmp_path / "b", dtype=torch.bfloat16))
    w = model.state_dict()["encoder.layers.0.ffn.linear_in.weight"].to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ckpt.fff(0)[1]["w1"].reshape(-1, 16), w)


def test_bare_file_needs_depth_and_trees(folder):
    f = folder / "model.safetensors"
    ckpt = fb.load_checkpoint(f, depth=2, trees=3)
    assert (ckpt.num_layers, ckpt.width) == (3, 16)
    with pytest.raises(CheckpointError, match="depth and trees"):
        fb.load_checkpoint(f).fff(0)
    with pytest.raises(CheckpointError, match=r"linear_in.weight: shape \[21, 16\], expected \[15, 16\]"):
        fb.load_checkpoint(f, depth=1, trees=5)


def test_given_shape_must_agree(folder):
    with pytest.raises(CheckpointError, match="depth is 2, not 3"):
        fb.load_checkpoint(folder, depth=3)


def _rewrite(folder, tmp_path, edit):
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "edited"
    out.mkdir(parents=True)
    t = load_file(str(folder / "model.safetensors"))
    edit(t)
    save_file(t, str(out / "model.safetensors"))
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def _one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_errors_name_the_file_and_the_key(folder, tmp_path):
    key = "encoder.layers.1.ffn.linear_in.weight"

    def nan(t):
        t[key] = t[key].copy()
        t[key][0, 0] = np.nan
    with pytest.raises(CheckpointError) as e:
        fb.load_checkpoint(_rewrite(folder, tmp_path / "a", nan)).fff(1)
    assert _one_line(e).startswith(str(tmp_path / "a" / "edited" / "model.safetensors")) and key in str(e.value)
    assert "NaN or infinite" in str(e.value)

    def shape(t):
        t[key] = t[key][:-1]
    with pytest.raises(CheckpointError, match=r"layers\.1\.ffn\.linear_in\.weight: shape \[20, 16\], expected \[21, 16\]"):
        fb.load_checkpoint(_rewrite(folder, tmp_path / "b", shape))

    def dtype(t):
        t[key] = t[key].astype(np.int32)
    with pytest.raises(CheckpointError, match="dtype I32, expected a floating tensor") as e:
        fb.load_checkpoint(_rewrite(folder, tmp_path / "c", dtype))
    _one_line(e)

    def missing(t):
        del t["encoder.layers.2.ffn.linear_out.weight"]
    with pytest.raises(CheckpointError, match="layers.2.ffn.linear_out.weight: not in the checkpoint"):
        fb.load_checkpoint(_rewrite(folder, tmp_path / "d", missing))

    def out_bias(t):
        t["encoder.layers.0.ffn.linear_out.bias"] = np.zeros(16, np.float32)
    with pytest.raises(CheckpointError, match="output has no bias"):
        fb.load_checkpoint(_rewrite(folder, tmp_path / "e", out_bias))


def test_broken_files_and_configs(folder, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        fb.load_checkpoint(cases / "nowhere")
    trunc = cases / "trunc"
    trunc.mkdir()
    (trunc / "config.json").write_text((folder / "config.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: not a safetensors file, or a truncated one") as e:
        fb.load_checkpoint(trunc)
    _one_line(e)
    (trunc / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        fb.load_checkpoint(trunc)
    (trunc / "model.safetensors").write_bytes(data)
    (trunc / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not readable JSON"):
        fb.load_checkpoint(trunc)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["arch"]["intermed_type"] = "ff"
    (trunc / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not an FFF"):
        fb.load_checkpoint(trunc)
    (trunc / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json or model_config.json"):
        fb.load_checkpoint(trunc)
    with pytest.raises(CheckpointError, match=r"layer 3 does not exist \(the checkpoint has layers 0 to 2\)"):
        fb.load_checkpoint(folder).fff(3)


def test_activations_file(tmp_path):
    from safetensors.numpy import save_file

    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    save_file({"layers.0.ffn_input": x, "layers.1.ffn_input": x[:10]}, str(tmp_path / "a.safetensors"))
    act = load_activations(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(act.rows(0, 25, 16), x[:25])
    with pytest.raises(CheckpointError, match="10 tokens captured, the case needs 25"):
        act.rows(1, 25, 16)
    with pytest.raises(CheckpointError, match="no layer 2"):
        act.rows(2, 5, 16)
    with pytest.raises(CheckpointError, match=r"expected \[tokens, 8\]"):
        act.rows(0, 5, 8)


def test_checkpoint_command(folder):
    from typer.testing import CliRunner

    from fffbench.cli import app

    res = CliRunner().invoke(app, ["checkpoint", str(folder), "--layer", "2"])
    assert res.exit_code == 0, res.output
    assert "3 layers, 3x2 FFF, width 16" in res.output and "encoder: every tensor" in res.output
    assert "layer 2: FFF d=16 3x2" in res.output
    res = CliRunner().invoke(app, ["checkpoint", str(folder), "--layer", "5"])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "layer 5 does not exist" in res.output
