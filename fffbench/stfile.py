"""Reading safetensors files through the ``safetensors`` library, with errors that name the file and tensor.

The library checks the header whole when a file is opened (its length, its JSON, that every
tensor's byte range fits the file and its dtype and shape), so a truncated or hostile file is
refused before any data is touched, and it memory-maps the data: a tensor's bytes are read only
when it is asked for. This module adds what a benchmark needs on top: one-line errors naming the
file and the tensor (``ckpt/model.safetensors: encoder.layers.3.ffn.linear_in.weight: shape
[4094, 768], expected [4095, 768]``), float32 copies whose shape, dtype and finiteness are checked,
and the file's sha256 computed once. Tensors are read through the library's torch view, which
holds BF16 (numpy has no bfloat16).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

#: the floating dtypes (by their safetensors names) a checkpoint's tensors may have
FLOATS = ("F32", "F16", "BF16")


class TensorFileError(ValueError):
    """A file that is not a readable safetensors file, or a tensor that is not what was expected."""


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


class TensorFile:
    """One safetensors file: ``names`` (every tensor), ``info(name)``, ``array(name)``, ``rows(name, n)``
    and ``metadata``; the file stays open (memory-mapped) while the object lives."""

    def __init__(self, path):
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            self._file = safe_open(str(self.path), framework="pt")
        except OSError as e:
            raise TensorFileError(f"{self.path}: cannot read: {e.strerror}") from None
        except SafetensorError as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TensorFileError(f"{self.path}: not a safetensors file, or a truncated one ({msg}; "
                                  f"{self.size} bytes)") from None
        self.metadata = {str(k): str(v) for k, v in (self._file.metadata() or {}).items()}
        self.names = list(self._file.keys())

    def _fail(self, msg: str, key: str | None = None):
        raise TensorFileError(f"{self.path}: " + (f"{key}: " if key else "") + msg)

    def info(self, name: str) -> tuple[str, tuple[int, ...]]:
        """(dtype, shape) of ``name`` as the header states it."""
        sl = self._file.get_slice(name)
        return sl.get_dtype(), tuple(int(s) for s in sl.get_shape())

    def _float32(self, name: str, tensor) -> np.ndarray:
        import torch

        out = tensor.to(torch.float32).numpy().copy()  # a copy: nothing keeps the file mapped
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        if bad:
            self._fail(f"{bad} of {out.size} values are NaN or infinite", name)
        return out

    def array(self, name: str, shape=None, what: str = "") -> np.ndarray:
        """A float32 copy of the floating tensor ``name``, checked: its shape (``shape``, when given;
        ``what`` says what its axes are), its dtype (F32, F16 or BF16) and that every value is finite."""
        if shape is not None:
            self.check(name, shape, what)
        else:
            self._check_dtype(name)
        return self._float32(name, self._file.get_tensor(name))

    def rows(self, name: str, n: int) -> np.ndarray:
        """The first ``n`` rows of the floating tensor ``name`` as a checked float32 copy (only
        those rows are read from the file)."""
        self._check_dtype(name)
        return self._float32(name, self._file.get_slice(name)[:n])

    def _check_dtype(self, name: str) -> tuple[str, tuple[int, ...]]:
        if name not in self.names:
            self._fail("not in the file")
        dtype, got = self.info(name)
        if dtype not in FLOATS:
            self._fail(f"dtype {dtype}, expected a floating tensor ({', '.join(FLOATS)})", name)
        return dtype, got

    def check(self, name: str, shape, what: str = "") -> None:
        """Check a tensor's presence, shape and dtype from the header alone (no data is read)."""
        if name not in self.names:
            self._fail("not in the file")
        got = self.info(name)[1]
        if tuple(got) != tuple(shape):
            self._fail(f"shape {_shape_text(got)}, expected {_shape_text(shape)}" + (f" ({what})" if what else ""), name)
        self._check_dtype(name)


_SHA: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """The sha256 of a file, computed once per process for each (path, size, modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                h.update(block)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


def resolve(path) -> Path:
    """A path as a suite or a user gives it, relative to the directory fffbench runs in."""
    return Path(os.path.expanduser(str(path))).resolve()


__all__ = ["FLOATS", "TensorFile", "TensorFileError", "file_sha256", "resolve"]
