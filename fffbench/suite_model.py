"""The suite keys of the real model: FFF layers of a checkpoint, lists of tree shapes, model inputs
and the encoder section. Read by :mod:`fffbench.suite`; every error is ``file:line: message``.

- ``fff: {checkpoint: PATH, layer: [0, 7, 15]}``: layers of a checkpoint (a folder, or a
  ``.safetensors`` file with ``depth`` and ``trees``); depth, trees and width come from it, and
  giving them as well is an error unless they agree. ``checkpoint: auto`` is the folder named by
  ``FFFBENCH_UFB_CHECKPOINT`` or, without it, random weights of the published shapes (16 layers,
  1x11, width 768). A checkpoint that does not exist is no error: its rows are stored ``skipped``
  with the reason (the shapes are then those given, or the published ones). FF layers of such a
  suite are crossed with the same layer indices (the dense baseline of each layer, on its inputs).
- ``fff: {shape: [1x11, 2x10, 8x8]}``: (trees x depth) pairs instead of the depth x trees product.
- ``sweep.input``: also ``norm2``, ``activations`` and ``activations:PATH`` (layers of a model only).
- ``encoder: {seq_len: 128, layers: 16, heads: 12, backends: [...]}``: the whole crammed-BERT
  encoder, once per FF width (BERT) and FFF shape (UltraFastBERT), with each backend of the
  layer's family as its feedforward; the batch is tokens (a multiple of ``seq_len``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from fffbench.casedata import is_input_kind, per_layer_input
from fffbench.checkpoint import ENV, PUBLISHED, CheckpointError, load_checkpoint
from fffbench.encoder import MODEL, TOKENS
from fffbench.layers import INPUT_KINDS
from fffbench.stfile import resolve
from fffbench.suite_values import _axis, _keys, _where

FFF_KEYS = {"checkpoint", "layer", "shape"}
ENCODER_KEYS = {"seq_len", "layers", "heads", "backends"}
_SHAPE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


@dataclass(frozen=True)
class Source:
    """Where a suite's FFF layers come from: a checkpoint (opened, or missing) or random weights."""

    checkpoint: str | None      # as the suite (or the environment) names it; None: random weights
    ckpt: object | None         # the opened Checkpoint, None when random or missing
    layers: tuple[int, ...]
    num_layers: int
    heads: int


def input_choice(doc, v, path):
    if not is_input_kind(v):
        doc.fail(path, f"'{'.'.join(map(str, path))}' must be one of {', '.join(INPUT_KINDS)}, norm2, activations "
                       f"or activations:PATH, got {v!r}")
    return v


def shapes(doc, spec: dict, q: tuple) -> list[tuple[int, int]]:
    """(depth, trees) pairs of ``fff.shape`` (``KxD`` strings: K trees of depth D)."""
    for k in ("depth", "trees", "checkpoint", "layer"):
        if k in spec:
            doc.fail(q + (k,), f"'fff.{k}' and 'fff.shape' exclude each other: a shape is trees x depth")

    def one(doc, s, p):
        m = _SHAPE.match(s) if isinstance(s, str) else None
        if not m or int(m.group(1)) < 1 or int(m.group(2)) > 40:
            doc.fail(p, f"'{_where(p)}' must be TREESxDEPTH such as 1x11 (trees >= 1, depth <= 40), got {s!r}")
        return int(m.group(2)), int(m.group(1))

    pairs = _axis(doc, spec, "shape", q, None, one)
    _once_each(doc, spec, q, "shape", pairs, lambda s: f"shape {s!r}")
    return list(pairs)


def _once_each(doc, spec: dict, q: tuple, key: str, values: tuple, name) -> None:
    """Refuse a list under ``key`` that names one value twice (at the second occurrence)."""
    for i, x in enumerate(values):
        if x in values[:i]:
            doc.fail(q + (key, i), f"{name(spec[key][i])} appears twice")


def _resolve_checkpoint(doc, spec: dict, q: tuple) -> str | None:
    v = spec["checkpoint"]
    if not isinstance(v, str) or not v.strip():
        doc.fail(q + ("checkpoint",), f"'fff.checkpoint' must be a path or 'auto', got {v!r}")
    if v == "auto":
        return os.environ.get(ENV) or None
    return v


def source(doc, spec: dict, q: tuple, given: dict) -> Source:
    """The checkpoint of an ``fff`` section, opened when it exists, checked against ``given``
    (the depth, trees and width the suite states)."""
    name = _resolve_checkpoint(doc, spec, q)
    ckpt = None
    if name is not None and resolve(name).exists():
        bare = resolve(name).is_file()
        try:
            ckpt = load_checkpoint(resolve(name), *((given.get("depth"), given.get("trees")) if bare else (None, None)))
        except CheckpointError as e:
            doc.fail(q + ("checkpoint",), str(e))
        if bare and ckpt.depth is None:
            doc.fail(q + ("checkpoint",), f"{name}: a bare .safetensors file needs 'fff.depth' and 'fff.trees'")
        for k, have in (("depth", ckpt.depth), ("trees", ckpt.trees), ("width", ckpt.width)):
            if given.get(k) is not None and given[k] != have:
                where = ("sweep", "width") if k == "width" else q + (k,)
                doc.fail(where, f"'{_where(where)}' is {given[k]}, but checkpoint {name} has {k} {have} "
                                f"(depth, trees and width come from the checkpoint)")
    num_layers = ckpt.num_layers if ckpt is not None else PUBLISHED["num_layers"]
    return Source(name, ckpt, _layer_list(doc, spec, q, num_layers, ckpt is not None or name is None), num_layers,
                  ckpt.heads if ckpt is not None else PUBLISHED["heads"])


def _layer_list(doc, spec, q, num_layers: int, known: bool) -> tuple[int, ...]:
    v = spec.get("layer", "all")
    if v == "all":
        return tuple(range(num_layers))

    def one(doc, x, p):
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            doc.fail(p, f"'{_where(p)}' must be a layer index >= 0 or 'all', got {x!r}")
        if known and x >= num_layers:
            doc.fail(p, f"layer {x} does not exist: the model has layers 0 to {num_layers - 1}")
        return x

    layers = _axis(doc, spec, "layer", q, None, one)
    _once_each(doc, spec, q, "layer", layers, lambda x: f"layer {x}")
    return layers


def fff_layers(doc, spec: dict, q: tuple, width_axis) -> tuple[list[tuple[dict, tuple]], Source]:
    """(layer fields, where) of an ``fff`` section with a checkpoint, and its :class:`Source`."""
    if "shape" in spec:
        doc.fail(q + ("shape",), "'fff.shape' and 'fff.checkpoint' exclude each other: the shape is the checkpoint's")
    given = {k: spec.get(k) for k in ("depth", "trees")}
    for k, v in given.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "depth" else 1)):
            doc.fail(q + (k,), f"'fff.{k}' must be one integer with a checkpoint, got {v!r}")
    if width_axis is not None:
        given["width"] = width_axis
    if spec.get("bias", True) is not True:
        doc.fail(q + ("bias",), "'fff.bias' must be true with a checkpoint (its FFF has a bias)")
    src = source(doc, spec, q, given)
    if src.ckpt is not None:
        depth, trees, out = src.ckpt.depth, src.ckpt.trees, src.ckpt.out_width
        out_width = None if out == src.ckpt.width else out
    else:
        depth = given["depth"] if given["depth"] is not None else PUBLISHED["depth"]
        trees = given["trees"] if given["trees"] is not None else PUBLISHED["trees"]
        out_width = None
    if spec.get("out_width") is not None and spec["out_width"] != (out_width or given.get("width") or
                                                                    PUBLISHED["width"]):
        doc.fail(q + ("out_width",), "'fff.out_width' comes from the checkpoint")
    layers = [(dict(family="fff", depth=depth, trees=trees, out_width=out_width, bias=True,
                    checkpoint=src.checkpoint, layer_index=i), q + ("checkpoint",)) for i in src.layers]
    return layers, src


def width_of(src: Source | None, default):
    return (src.ckpt.width,) if src is not None and src.ckpt is not None else default


def check_inputs(doc, inputs, src: Source | None) -> None:
    for v in inputs:
        if per_layer_input(v) and src is None:
            doc.fail(("sweep", "input"), f"input {v!r} is the input of a model's layer: it needs 'fff.checkpoint' "
                                         "(a path, or auto)")


@dataclass(frozen=True)
class EncoderSection:
    seq_len: int
    layers: int
    heads: int
    backends: tuple[str, ...] | None


def encoder_section(doc, value, src: Source | None, widths, batches, backends) -> EncoderSection:
    """The ``encoder`` section, checked against the sweep (batches of whole sequences, heads
    dividing the width) and the checkpoint (no more layers than it has)."""
    q = ("encoder",)
    spec = _keys(doc, value, ENCODER_KEYS, q, "encoder")
    seq = spec.get("seq_len", 128)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= 1 << 16:
        doc.fail(q + ("seq_len",), f"'encoder.seq_len' must be an integer between 1 and 65536, got {seq!r}")
    most = src.num_layers if src is not None else PUBLISHED["num_layers"]
    layers = spec.get("layers", most)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= 1024:
        doc.fail(q + ("layers",), f"'encoder.layers' must be an integer between 1 and 1024, got {layers!r}")
    if src is not None and src.ckpt is not None and layers > src.num_layers:
        doc.fail(q + ("layers",), f"'encoder.layers' is {layers}; checkpoint {src.checkpoint} has {src.num_layers}")
    heads = spec.get("heads", src.heads if src is not None else PUBLISHED["heads"])
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        doc.fail(q + ("heads",), f"'encoder.heads' must be a positive integer, got {heads!r}")
    for w in widths:
        if w % heads or w % 2:
            doc.fail(q + ("heads",), f"width {w} must be even and a multiple of encoder.heads ({heads})")
    for b in batches:
        if b % seq:
            doc.fail(("sweep", "batch"), f"batch {b} is not a multiple of encoder.seq_len ({seq}): an encoder "
                                         "batch is whole sequences of tokens")
    return EncoderSection(seq, layers, heads, _encoder_backends(doc, spec, backends))


def _encoder_backends(doc, spec: dict, backends) -> tuple[str, ...] | None:
    if "backends" not in spec:
        return None
    q, v = ("encoder", "backends"), spec["backends"]
    if not isinstance(v, list) or not v:
        doc.fail(q, "'encoder.backends' must be a non-empty list of the suite's backends")
    for i, b in enumerate(v):
        if b not in backends:
            doc.fail(q + (i,), f"'encoder.backends' names {b!r}, which is not in this suite's 'backends'")
    return tuple(dict.fromkeys(v))


def encoder_layers(layers: list[tuple[dict, tuple]], section: EncoderSection) -> list[tuple[dict, tuple]]:
    """One encoder per distinct feedforward (FF width, FFF shape and checkpoint) of the suite's layers."""
    out, seen = [], set()
    for lay, _ in layers:
        shape = {k: v for k, v in lay.items() if k != "layer_index"}
        key = tuple(sorted(shape.items(), key=lambda kv: kv[0]))
        if key in seen:
            continue
        seen.add(key)
        out.append((shape | {"model": MODEL, "seq_len": section.seq_len, "model_layers": section.layers,
                             "heads": section.heads, "layer_index": None}, ("encoder",)))
    return out


ENCODER_INPUT = TOKENS

__all__ = ["ENCODER_INPUT", "ENCODER_KEYS", "FFF_KEYS", "EncoderSection", "Source", "check_inputs",
           "encoder_layers", "encoder_section", "fff_layers", "input_choice", "shapes", "width_of"]
