"""UltraFastBERT checkpoints (``pbelcak/UltraFastBERT-1x11-long``) and captured activations.

A checkpoint is a folder holding ``config.json`` (the architecture as a nested ``arch`` dict) or
``model_config.json`` (the same dict, flat), and ``model.safetensors`` (float32, crammed-BERT); or
the ``.safetensors`` file alone, with ``depth`` and ``trees`` given. Per layer ``i`` the FFF is

- ``encoder.layers.{i}.ffn.linear_in.weight`` [T*N, d]: W1, trees one after another, nodes in heap order;
- ``encoder.layers.{i}.ffn.linear_in.bias`` [T*N]: b1;
- ``encoder.layers.{i}.ffn.linear_out.weight`` [d_out, T*N]: W2 transposed (no output bias),

and its input is ``norm2`` of the residual stream (pre-LN: ``x + ffn(norm2(x))``). The training
code computes every logit, goes right where ``logit > 0``, applies exact GELU and masks the
activations to the path: :meth:`fffbench.layers.FFF.reference`. Keys may carry ``module.`` or
``_orig_mod.`` prefixes. Opening a checkpoint reads its config and the safetensors header and checks
every FFF tensor's shape and dtype from the header; :meth:`Checkpoint.fff` copies one layer's
tensors out of the memory map (and checks they are finite). Errors are :class:`CheckpointError`,
one line naming the file and the key.

Captured activations (``scripts/capture_activations.py``) are a safetensors file with one tensor
``layers.{i}.ffn_input`` [tokens, d] per layer: the FFF's input in the model, on real text.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from fffbench.layers import FFF
from fffbench.stfile import FLOATS, TensorFile, TensorFileError, file_sha256

#: the folder of the published checkpoint when a suite says ``checkpoint: auto``
ENV = "FFFBENCH_UFB_CHECKPOINT"
CONFIG_FILES = ("config.json", "model_config.json")
WEIGHTS_FILE = "model.safetensors"
ACTIVATIONS_FILE = "activations.safetensors"
PREFIXES = ("module.", "_orig_mod.")
#: the published model's shapes (UltraFastBERT-1x11-long), used for random weights without a checkpoint
PUBLISHED = {"num_layers": 16, "depth": 11, "trees": 1, "width": 768, "heads": 12, "vocab": 32768, "norm_eps": 1e-12}
PUBLISHED_NAME = "UltraFastBERT-1x11-long"

W1, B1, W2, W2_BIAS = (f"encoder.layers.{{i}}.ffn.{k}" for k in
                       ("linear_in.weight", "linear_in.bias", "linear_out.weight", "linear_out.bias"))
NORM = "encoder.layers.{i}.{which}.{p}"                       # which: norm1, norm2; p: weight, bias
QKV = "encoder.layers.{i}.attn.self_attention.query_key_value.weight"
QKV_BIAS = "encoder.layers.{i}.attn.self_attention.query_key_value.bias"
DENSE, DENSE_BIAS = "encoder.layers.{i}.attn.dense.weight", "encoder.layers.{i}.attn.dense.bias"
EMBEDDING = "encoder.embedding.word_embedding.weight"
POS_SCALE = "encoder.embedding.pos_embedding.scale_factor"
EMB_NORM, FINAL_NORM = "encoder.embedding.norm.{p}", "encoder.final_norm.{p}"
ACTIVATION = "layers.{i}.ffn_input"


class CheckpointError(ValueError):
    """A checkpoint (or activations file) that cannot be used; ``str(e)`` is one line naming the file."""


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def _read_config(folder: Path) -> tuple[dict, Path]:
    """The flat architecture dict and the file it came from."""
    for fname in CONFIG_FILES:
        p = folder / fname
        if not p.exists():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{p}: not readable JSON ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{p}: expected a JSON object")
        arch = data.get("arch", data) if fname == "config.json" else data
        if not isinstance(arch, dict):
            raise CheckpointError(f"{p}: 'arch' is not an object")
        return arch, p
    raise CheckpointError(f"{folder}: no {' or '.join(CONFIG_FILES)} (give the .safetensors file with depth and "
                          "trees instead)")


def _int_key(arch: dict, key: str, where: Path, lo: int = 0) -> int:
    v = arch.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise CheckpointError(f"{where}: '{key}' must be an integer >= {lo}, got {v!r}")
    return v


@dataclass
class Checkpoint:
    """An opened checkpoint: its shapes, its file and lazily its sha256; see the module docstring."""

    path: Path
    file: Path
    num_layers: int
    depth: int | None
    trees: int | None
    width: int
    out_width: int
    config: dict = field(default_factory=dict)
    config_file: Path | None = None
    tensors: TensorFile | None = field(default=None, repr=False)
    names: dict = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return self.tensors.size

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.file)

    @property
    def name(self) -> str:
        return self.path.name if self.path.is_dir() else self.path.stem

    @property
    def nodes(self) -> int:
        return 2 ** (self.depth + 1) - 1 if self.depth is not None else 0

    @property
    def heads(self) -> int:
        att = self.config.get("attention") if isinstance(self.config.get("attention"), dict) else {}
        return int(att.get("num_attention_heads") or PUBLISHED["heads"])

    @property
    def norm_eps(self) -> float:
        v = self.config.get("norm_eps", PUBLISHED["norm_eps"])
        return float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else PUBLISHED["norm_eps"]

    @property
    def norm_scheme(self) -> str:
        return str(self.config.get("norm_scheme", "pre"))

    def key(self, name: str) -> str:
        """The stored name of a published key (prefixes as the file has them)."""
        if name not in self.names:
            raise CheckpointError(f"{self.file}: {name}: not in the checkpoint")
        return self.names[name]

    def has(self, name: str) -> bool:
        return name in self.names

    def tensor(self, name: str, shape=None, what: str = "") -> np.ndarray:
        try:
            return self.tensors.array(self.key(name), shape, what)
        except TensorFileError as e:
            raise CheckpointError(str(e)) from None

    def _check_index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.num_layers:
            raise CheckpointError(f"{self.file}: layer {i!r} does not exist (the checkpoint has layers 0 to "
                                  f"{self.num_layers - 1})")
        return int(i)

    @property
    def layer(self) -> FFF:
        return FFF(width=self.width, depth=self.depth, trees=self.trees,
                   out_width=None if self.out_width == self.width else self.out_width, bias=True)

    def fff(self, i: int) -> tuple[FFF, dict]:
        """Layer ``i``'s FFF and its weights in fffbench's layout: ``w1`` (trees, nodes, width), ``b1``
        (trees, nodes), ``w2`` (trees, nodes, out_width); float32 copies, checked finite."""
        if self.depth is None:
            raise CheckpointError(f"{self.file}: the FFF's depth and trees are needed to read its layers")
        i = self._check_index(i)
        T, N, d, dout = self.trees, self.nodes, self.width, self.out_width
        w1 = self.tensor(W1.format(i=i), (T * N, d)).reshape(T, N, d)
        b1 = self.tensor(B1.format(i=i), (T * N,)).reshape(T, N)
        w2 = np.ascontiguousarray(self.tensor(W2.format(i=i), (dout, T * N)).T).reshape(T, N, dout)
        return self.layer, {"w1": w1, "b1": b1, "w2": w2}

    def norm(self, which: str, i: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) of a LayerNorm: ``norm1``/``norm2`` of layer ``i``, ``embedding`` or ``final``."""
        if which in ("norm1", "norm2"):
            i = self._check_index(i)
            names = [NORM.format(i=i, which=which, p=p) for p in ("weight", "bias")]
        else:
            pattern = EMB_NORM if which == "embedding" else FINAL_NORM
            names = [pattern.format(p=p) for p in ("weight", "bias")]
        return tuple(self.tensor(n, (self.width,)) for n in names)

    def _check(self, name: str, shape, what: str = "") -> None:
        try:
            self.tensors.check(self.key(name), shape, what)
        except TensorFileError as e:
            raise CheckpointError(str(e)) from None

    def check_norm(self, which: str, i: int | None = None) -> None:
        pattern = {"embedding": EMB_NORM, "final": FINAL_NORM}.get(which)
        for p in ("weight", "bias"):
            name = pattern.format(p=p) if pattern else NORM.format(i=self._check_index(i), which=which, p=p)
            self._check(name, (self.width,))

    def check_encoder(self, layers: int) -> None:
        """Every tensor the encoder of ``layers`` layers reads, present with its shape (header only)."""
        d = self.width
        if not self.has(EMBEDDING):
            raise CheckpointError(f"{self.file}: {EMBEDDING}: not in the checkpoint (the encoder needs the whole model)")
        self._check(EMBEDDING, (self.tensors.info(self.key(EMBEDDING))[1][0], d), "vocabulary, width")
        self.check_norm("embedding")
        self.check_norm("final")
        for i in range(layers):
            self.check_norm("norm1", i)
            self.check_norm("norm2", i)
            self._check(QKV.format(i=i), (3 * d, d), "3 x width, width")
            self._check(DENSE.format(i=i), (d, d))

    def require_pre_ln(self) -> None:
        if self.norm_scheme != "pre":
            raise CheckpointError(f"{self.config_file or self.file}: norm_scheme {self.norm_scheme!r}; fffbench's "
                                  "encoder and norm2 inputs follow the published pre-LN model only")

    def describe(self) -> str:
        return (f"{self.name}: {self.num_layers} layers, {self.trees}x{self.depth} FFF, width {self.width}, "
                f"{self.size / 1e6:.1f} MB, sha256 {self.sha256[:12]}")


def _count_layers(names: dict) -> int:
    n = 0
    while W1.format(i=n) in names:
        n += 1
    return n


def _shape_from_config(arch: dict, where: Path) -> tuple[int, int, int, int]:
    """(depth, trees, width, layers) from the arch dict."""
    kind = arch.get("intermed_type", "fff")
    if kind != "fff":
        raise CheckpointError(f"{where}: intermed_type {kind!r}: not an FFF (UltraFastBERT) checkpoint")
    nonlin = arch.get("nonlin", "GELU")
    if nonlin != "GELU":
        raise CheckpointError(f"{where}: nonlin {nonlin!r}; the FFF of fffbench applies exact GELU")
    return (_int_key(arch, "intermed_depth", where), _int_key(arch, "intermed_size", where, 1),
            _int_key(arch, "hidden_size", where, 1), _int_key(arch, "num_transformer_layers", where, 1))


def load_checkpoint(path, depth: int | None = None, trees: int | None = None) -> Checkpoint:
    """Open a checkpoint folder (config.json or model_config.json, and model.safetensors), or a
    ``.safetensors`` file with ``depth`` and ``trees`` given. ``depth``/``trees`` given with a folder
    must agree with its config. Raises :class:`CheckpointError` (one line) on anything unusable."""
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder or file")
    arch, config_file = {}, None
    if path.is_dir():
        arch, config_file = _read_config(path)
        file = path / WEIGHTS_FILE
        if not file.exists():
            raise CheckpointError(f"{path}: no {WEIGHTS_FILE}")
        cdepth, ctrees, width, layers = _shape_from_config(arch, config_file)
        for name, given, have in (("depth", depth, cdepth), ("trees", trees, ctrees)):
            if given is not None and given != have:
                raise CheckpointError(f"{config_file}: {name} is {have}, not {given} as given")
        depth, trees = cdepth, ctrees
    else:
        file, width, layers = path, None, None
        if (depth is None) != (trees is None):
            raise CheckpointError(f"{path}: a bare .safetensors file needs both depth and trees (or give the folder "
                                  "with its config.json)")
    try:
        tf = TensorFile(file)
    except TensorFileError as e:
        raise CheckpointError(str(e)) from None
    names = {}
    for stored in tf.names:
        names.setdefault(_strip(stored), stored)
    found = _count_layers(names)
    if found == 0:
        raise CheckpointError(f"{file}: {W1.format(i=0)}: not in the checkpoint (no FFF layers)")
    layers = found if layers is None else layers
    _, w1_shape = tf.info(names[W1.format(i=0)])
    if width is None:
        width = int(w1_shape[-1]) if len(w1_shape) == 2 else 0
    w2_name = names.get(W2.format(i=0))
    out_width = int(tf.info(w2_name)[1][0]) if w2_name and len(tf.info(w2_name)[1]) == 2 else width
    ckpt = Checkpoint(path, file, layers, depth, trees, width, out_width, arch, config_file, tf, names)
    if depth is not None:  # a bare file opened without its FFF shape serves its other tensors only
        _check_layers(ckpt)
    return ckpt


def _check_layers(ckpt: Checkpoint) -> None:
    """Every FFF tensor present with its shape and a floating dtype (from the header: no data read)."""
    T, N, d, dout = ckpt.trees, ckpt.nodes, ckpt.width, ckpt.out_width
    expect = ((W1, (T * N, d), "trees x nodes, width"), (B1, (T * N,), "trees x nodes"),
              (W2, (dout, T * N), "out width, trees x nodes"))
    try:
        for i in range(ckpt.num_layers):
            for pattern, shape, what in expect:
                ckpt.tensors.check(ckpt.key(pattern.format(i=i)), shape, what)
            if ckpt.has(W2_BIAS.format(i=i)):
                raise CheckpointError(f"{ckpt.file}: {W2_BIAS.format(i=i)}: the FFF's output has no bias in the "
                                      "published model; this checkpoint is not of that architecture")
    except TensorFileError as e:
        raise CheckpointError(str(e)) from None


# --- captured activations ---------------------------------------------------------------------

@dataclass
class Activations:
    """A capture of every FFF layer's input: ``rows(i, n)`` is layer ``i``'s first ``n`` tokens."""

    path: Path
    tensors: TensorFile

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)

    @property
    def metadata(self) -> dict:
        return self.tensors.metadata

    def tokens(self, i: int) -> int:
        name = ACTIVATION.format(i=i)
        if name not in self.tensors.names:
            raise CheckpointError(f"{self.path}: {name}: not in the capture (no layer {i})")
        return int(self.tensors.info(name)[1][0])

    def check(self, i: int, n: int, width: int) -> None:
        """Layer ``i`` captured at ``width``, with at least ``n`` tokens (header only)."""
        name = ACTIVATION.format(i=i)
        have = self.tokens(i)
        dtype, shape = self.tensors.info(name)
        if len(shape) != 2 or shape[1] != width:
            raise CheckpointError(f"{self.path}: {name}: shape [{', '.join(map(str, shape))}], expected "
                                  f"[tokens, {width}]")
        if dtype not in FLOATS:
            raise CheckpointError(f"{self.path}: {name}: dtype {dtype}, expected a floating tensor")
        if have < n:
            raise CheckpointError(f"{self.path}: {name}: {have} tokens captured, the case needs {n} (capture more "
                                  "text with scripts/capture_activations.py)")

    def rows(self, i: int, n: int, width: int) -> np.ndarray:
        self.check(i, n, width)
        name = ACTIVATION.format(i=i)
        try:
            return self.tensors.rows(name, n)
        except TensorFileError as e:
            raise CheckpointError(str(e)) from None


def load_activations(path) -> Activations:
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such activations file (make one with scripts/capture_activations.py)")
    try:
        return Activations(path, TensorFile(path))
    except TensorFileError as e:
        raise CheckpointError(str(e)) from None


__all__ = ["ACTIVATIONS_FILE", "ENV", "PUBLISHED", "PUBLISHED_NAME", "Activations", "Checkpoint", "CheckpointError",
           "load_activations", "load_checkpoint"]
