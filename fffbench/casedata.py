"""A case's data: weights, inputs and the float64 reference, made once and shared.

Weights and inputs are pure functions of the case (its layer, seed, input kind, batch and width;
for the real model also its checkpoint, layer index and encoder shape), so each worker process
makes (or reads) its own, identical to the parent's: seeded random arrays, or float32 copies out
of the memory-mapped checkpoint and activations files (:mod:`fffbench.checkpoint`). The float64
reference is the expensive part (a float64 walk of every row, or a float64 encoder); it is computed
once per case by the process that plans the run and written to the run directory's ``cache/`` as
``.npy`` files, which the worker that checks a backend's output maps from disk. The reference does
not depend on the dtype, the device or the thread count, so the CPU and GPU cases of one layer and
batch share one file, and so do the shards of a run; its key includes the checkpoint's and the
activation file's sha256. Files are written whole (temporary name, then rename), so a reader never
sees half of one, and removed once no pending measurement needs them.

Input kinds beyond :data:`fffbench.layers.INPUT_KINDS`: ``norm2`` (the Gaussian rows passed through
the layer's own ``norm2`` LayerNorm: what the FFF sees in the model, without a capture) and
``activations`` / ``activations:PATH`` (a capture of the model's FFF inputs on real text; without
a path, ``activations.safetensors`` in the checkpoint's folder). Encoder cases take token ids.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from fffbench import encoder as E
from fffbench.checkpoint import ACTIVATIONS_FILE, ENV, PUBLISHED, CheckpointError, load_activations, load_checkpoint
from fffbench.correctness import Reference
from fffbench.layers import INPUT_KINDS, make_input
from fffbench.stfile import file_sha256, resolve

NORM2, ACTIVATIONS = "norm2", "activations"
#: every input kind a suite may name (``activations:PATH`` too)
MODEL_INPUTS = (NORM2, ACTIVATIONS)


def is_input_kind(v) -> bool:
    return isinstance(v, str) and (v in INPUT_KINDS or v in MODEL_INPUTS or
                                   (v.startswith(ACTIVATIONS + ":") and len(v) > len(ACTIVATIONS) + 1))


def per_layer_input(kind: str) -> bool:
    """Whether an input kind depends on the layer (its norm2, or its captured inputs)."""
    return kind == NORM2 or kind.split(":", 1)[0] == ACTIVATIONS


# --- checkpoints and captures, opened once per process -----------------------------------------

@lru_cache(maxsize=8)
def _open(path: str, mtime: int, depth, trees):
    return load_checkpoint(path, depth=depth, trees=trees)


def _opened(checkpoint: str, depth=None, trees=None):
    p = resolve(checkpoint)
    bare = p.is_file()
    return _open(str(p), p.stat().st_mtime_ns if p.exists() else 0, depth if bare else None,
                 trees if bare else None)


def checkpoint_of(case):
    """The case's checkpoint, opened (memory-mapped), or None for random weights. A bare
    ``.safetensors`` file is opened with the case's FFF shape (FF and encoder cases read its other
    tensors only)."""
    if not case.checkpoint:
        return None
    fff = case.family == "fff"
    return _opened(case.checkpoint, case.depth if fff else None, case.trees if fff else None)


def activations_path(case) -> Path | None:
    kind = case.input
    if kind.startswith(ACTIVATIONS + ":"):
        return resolve(kind.split(":", 1)[1])
    if kind == ACTIVATIONS:
        if not case.checkpoint:
            return None
        p = resolve(case.checkpoint)
        return (p if p.is_dir() else p.parent) / ACTIVATIONS_FILE
    return None


@lru_cache(maxsize=4)
def _activations(path: str, mtime: int):
    return load_activations(path)


def activations_of(case):
    p = activations_path(case)
    if p is None:
        raise CheckpointError("input 'activations' names the capture in the checkpoint's folder, and this case "
                              "has no checkpoint (random weights); give activations:PATH")
    return _activations(str(p), p.stat().st_mtime_ns if p.exists() else 0)


def encoder_spec(case) -> E.EncoderSpec:
    ckpt = checkpoint_of(case)
    if ckpt is None:
        return E.EncoderSpec(case.width, case.heads, case.model_layers, case.seq_len, PUBLISHED["vocab"])
    vocab = ckpt.tensors.info(ckpt.key("encoder.embedding.word_embedding.weight"))[1][0] \
        if ckpt.has("encoder.embedding.word_embedding.weight") else PUBLISHED["vocab"]
    return E.EncoderSpec(case.width, case.heads, case.model_layers, case.seq_len, int(vocab), ckpt.norm_eps)


@lru_cache(maxsize=2)
def _base(checkpoint: str | None, spec: E.EncoderSpec, seed: int) -> dict:
    """An encoder's weights but the feedforward's (one object per process, shared by its encoders)."""
    return E.random_base(spec, seed) if checkpoint is None else E.checkpoint_base(_opened(checkpoint), spec)


# --- weights and inputs -----------------------------------------------------------------------

def weights_of(case) -> dict:
    """The case's weights: seeded random ones, a checkpoint layer's, or an encoder's (``base``: all
    but the feedforward, shared by the BERT and the UltraFastBERT encoder; ``ffn``: one per layer)."""
    if case.model:
        spec = encoder_spec(case)
        ckpt = checkpoint_of(case)
        base = _base(case.checkpoint or None, spec, case.seed)
        if ckpt is not None and case.family == "fff":
            ffn = [ckpt.fff(i)[1] for i in range(spec.layers)]
        else:
            ffn = [E.random_ffn(case.layer, case.seed, i) for i in range(spec.layers)]
        return {"base": base, "ffn": ffn}
    if case.checkpoint and case.family == "fff":
        return checkpoint_of(case).fff(case.layer_index)[1]
    if case.layer_index is not None:  # a layer of the model: random weights of its shape and initialisation
        return E.random_ffn(case.layer, case.seed, case.layer_index)
    return case.layer.init_weights(case.seed)


def _norm2(case):
    ckpt = checkpoint_of(case)
    if ckpt is None:
        return np.ones(case.width), np.zeros(case.width), PUBLISHED["norm_eps"]
    ckpt.require_pre_ln()
    return (*ckpt.norm("norm2", case.layer_index), ckpt.norm_eps)


def input_of(case) -> np.ndarray:
    """float32 input rows (token ids, int64 (sequences, seq_len), for an encoder case)."""
    if case.model:
        return E.make_tokens(case.batch, case.seq_len, encoder_spec(case).vocab, case.seed)
    if case.input == NORM2:
        w, b, eps = _norm2(case)
        x = make_input("gaussian", case.batch, case.width, case.seed).astype(np.float64)
        return E.layer_norm64(x, (w, b), eps).astype(np.float32)
    if per_layer_input(case.input):
        return activations_of(case).rows(case.layer_index, case.batch, case.width)
    return make_input(case.input, case.batch, case.width, case.seed)


def weights_key(case) -> tuple:
    """What a case's weights depend on (a worker makes each once)."""
    return (repr(case.layer), case.seed, case.checkpoint, case.layer_index, case.model, case.model_layers,
            case.heads, case.seq_len)


def input_key(case) -> tuple:
    layer = case.layer_index if per_layer_input(case.input) else None
    return (case.input, case.batch, case.width, case.seed, case.checkpoint if layer is not None else None, layer,
            case.model, case.seq_len)


# --- what a row records, and why it cannot run ------------------------------------------------

def unavailable_reason(case) -> str | None:
    """Why this case's data cannot be made here (a missing checkpoint or capture), or None. Reads
    headers only: no tensor data."""
    try:
        ckpt = checkpoint_of(case)
    except CheckpointError as e:
        return f"checkpoint unavailable: {e} (name the folder of config.json and model.safetensors in " \
               f"fff.checkpoint, or in {ENV} with checkpoint: auto)"
    except OSError as e:
        return f"checkpoint unavailable: {case.checkpoint}: {e.strerror}"
    try:
        if ckpt is not None:
            reason = _mismatch(case, ckpt)
            if reason:
                return reason
            if case.model:
                ckpt.require_pre_ln()
                ckpt.check_encoder(case.model_layers)
            elif case.input == NORM2:
                ckpt.require_pre_ln()
                ckpt.check_norm("norm2", case.layer_index)
        if not case.model and per_layer_input(case.input) and case.input != NORM2:
            activations_of(case).check(case.layer_index, case.batch, case.width)
    except CheckpointError as e:
        return str(e)
    except OSError as e:
        return f"{e.filename}: {e.strerror}"
    return None


def _mismatch(case, ckpt) -> str | None:
    if case.layer_index is not None and not case.layer_index < ckpt.num_layers:
        return f"checkpoint {ckpt.name} has {ckpt.num_layers} layers, no layer {case.layer_index}"
    if case.model and case.model_layers > ckpt.num_layers:
        return f"checkpoint {ckpt.name} has {ckpt.num_layers} layers, the encoder needs {case.model_layers}"
    if ckpt.width != case.width:
        return f"checkpoint {ckpt.name} has width {ckpt.width}, the case {case.width}"
    if case.family == "fff" and (ckpt.depth, ckpt.trees) != (case.depth, case.trees):
        return f"checkpoint {ckpt.name} holds {ckpt.trees}x{ckpt.depth} FFFs, the case is {case.trees}x{case.depth}"
    return None


def provenance(case) -> dict:
    """The files a row's data came from: the checkpoint's path, size and sha256, the capture's sha256."""
    out = {"checkpoint": None, "checkpoint_bytes": None, "checkpoint_sha256": None, "input_sha256": None}
    try:
        ckpt = checkpoint_of(case)
        if ckpt is not None:
            out.update(checkpoint=str(resolve(ckpt.path)), checkpoint_bytes=ckpt.size, checkpoint_sha256=ckpt.sha256)
        elif case.checkpoint:
            out["checkpoint"] = case.checkpoint
        p = activations_path(case) if not case.model else None
        if p is not None and p.is_file():
            out["input_sha256"] = file_sha256(p)
    except (CheckpointError, OSError):
        out["checkpoint"] = case.checkpoint
    return out


def work_of(case, itemsize: int) -> tuple[float, float]:
    """(FLOPs, compulsory bytes) of one call of the case."""
    if case.model:
        spec = E.EncoderSpec(case.width, case.heads, case.model_layers, case.seq_len, PUBLISHED["vocab"])
        return spec.flops(case.batch, case.layer), spec.compulsory_bytes(case.batch, case.layer, itemsize)
    return case.layer.flops(case.batch), case.layer.compulsory_bytes(case.batch, itemsize)


def reference_key(case) -> str:
    """What the reference depends on: the layer, its weights' seed, and the input rows (and, for the
    real model, the checkpoint's and the capture's contents and the encoder's shape)."""
    layer = case.layer
    spec = {"layer": repr(layer), "seed": case.seed, "input": case.input, "batch": case.batch, "width": case.width}
    extra = {"layer_index": case.layer_index, "model": case.model, "seq_len": case.seq_len,
             "model_layers": case.model_layers, "heads": case.heads}
    spec |= {k: v for k, v in extra.items() if v is not None}
    if case.checkpoint or per_layer_input(case.input):
        prov = provenance(case)
        spec |= {"checkpoint_sha256": prov["checkpoint_sha256"] or case.checkpoint, "input_sha256": prov["input_sha256"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


# --- the float64 reference ----------------------------------------------------------------------

def compute_reference(case, on_walk=None) -> Reference:
    """The float64 reference of ``case``; ``on_walk(layer_index, x, nodes, logits, noise, weights)``
    receives every FFF walk made on the way (one for a layer, one per layer for an encoder)."""
    weights, x = weights_of(case), input_of(case)
    if case.model:
        y, margin = E.reference(encoder_spec(case), case.layer, weights, x, on_walk)
        return Reference(y, margin, case.width)
    ref = Reference.compute(case.layer, weights, x)
    if case.family == "fff" and on_walk is not None:  # a second float64 walk: the statistics stay apart
        on_walk(case.layer_index, x, *case.layer.walk(x, weights), weights)
    return ref


class ReferenceCache:
    """References of cases as ``.npy`` files under ``directory`` (made on demand, atomic)."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def paths(self, case) -> tuple[Path, Path]:
        key = reference_key(case)
        return self.directory / f"{key}.y.npy", self.directory / f"{key}.margin.npy"

    def ensure(self, case, on_walk=None) -> Path:
        """Compute and store the reference of ``case`` unless present; returns the ``.y.npy`` path.
        ``on_walk`` (see :func:`compute_reference`) is called only when the reference is computed."""
        y_path, m_path = self.paths(case)
        if y_path.exists() and m_path.exists():
            return y_path
        self.directory.mkdir(parents=True, exist_ok=True)
        ref = compute_reference(case, on_walk)
        for path, arr in ((m_path, ref.margin), (y_path, ref.y)):  # y last: its presence means both are whole
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return y_path

    def discard(self, case) -> None:
        for p in self.paths(case):
            p.unlink(missing_ok=True)


def load_reference(y_path, width: int) -> Reference:
    """A reference stored by :meth:`ReferenceCache.ensure`, mapped from disk."""
    y_path = Path(y_path)
    margin = y_path.with_name(y_path.name.replace(".y.npy", ".margin.npy"))
    return Reference(np.load(y_path, mmap_mode="r"), np.load(margin), width)
