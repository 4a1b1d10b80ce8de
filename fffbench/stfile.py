"""Reading safetensors files: the header checked, the data memory-mapped, one tensor copied at a time.

The format (https://huggingface.co/docs/safetensors) is an 8-byte little-endian header length, a
JSON header naming every tensor's dtype, shape and byte range, then the data. The header is read
and checked whole when a file is opened (so a truncated or hostile file is refused before any
data is touched); a tensor's bytes are read only when it is asked for, through one read-only
memory map of the file, and handed out as a float32 copy whose shape, dtype and finiteness are
checked. No package is needed to read (numpy maps the file), so a machine without ``safetensors``
still reads checkpoints; writing (tests, ``scripts/capture_activations.py``) uses the package.

Every error is one line naming the file and the tensor: ``ckpt/model.safetensors: encoder.layers.3.
ffn.linear_in.weight: shape [4094, 768], expected [4095, 768]``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

#: headers larger than this are refused (the safetensors library's own limit)
MAX_HEADER = 100 * 2 ** 20
#: dtypes by their safetensors name: (numpy dtype, bytes per element); BF16 is read as uint16 bits
DTYPES = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I64": ("<i8", 8),
          "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1), "U8": ("u1", 1), "U16": ("<u2", 2),
          "U32": ("<u4", 4), "U64": ("<u8", 8), "BOOL": ("?", 1)}
FLOATS = ("F32", "F16", "BF16")


class TensorFileError(ValueError):
    """A file that is not a readable safetensors file, or a tensor that is not what was expected."""


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


class TensorFile:
    """One safetensors file: ``names`` (every tensor), ``info(name)``, ``array(name)`` and ``metadata``."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    self._fail(f"{self.size} bytes: too short for a safetensors header")
                n = int.from_bytes(head, "little")
                if n < 2 or n > min(MAX_HEADER, self.size - 8):
                    self._fail(f"header length {n} does not fit the file ({self.size} bytes): not a safetensors "
                               "file, or a truncated one")
                raw = f.read(n)
        except OSError as e:
            raise TensorFileError(f"{self.path}: cannot read: {e.strerror}") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._fail(f"header is not JSON ({str(e).splitlines()[0]})")
        if not isinstance(header, dict):
            self._fail("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        self.metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
        self._start = 8 + n
        self._entries = {name: self._entry(name, info) for name, info in header.items()}
        self._map = None

    def _fail(self, msg: str, key: str | None = None):
        raise TensorFileError(f"{self.path}: " + (f"{key}: " if key else "") + msg)

    def _entry(self, name, info) -> tuple[str, tuple[int, ...], int, int]:
        if not isinstance(info, dict):
            self._fail("header entry is not an object", name)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            self._fail(f"unknown dtype {dtype!r}", name)
        if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in shape)):
            self._fail(f"shape {shape!r} is not a list of non-negative integers", name)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            self._fail(f"data_offsets {offsets!r} is not a pair of integers", name)
        begin, end = offsets
        need = math.prod(shape) * DTYPES[dtype][1]
        if not 0 <= begin <= end or end - begin != need:
            self._fail(f"data_offsets {offsets} hold {end - begin} bytes; {dtype} {_shape_text(shape)} needs {need}",
                       name)
        if self._start + end > self.size:
            self._fail(f"data ends at byte {self._start + end}, past the end of the file ({self.size} bytes): "
                       "truncated?", name)
        return dtype, tuple(shape), begin, end

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def info(self, name: str) -> tuple[str, tuple[int, ...]]:
        """(dtype, shape) of ``name`` as the header states it."""
        dtype, shape, _, _ = self._entries[name]
        return dtype, shape

    def raw(self, name: str) -> np.ndarray:
        """The stored array of ``name`` as a read-only view of the memory map (no copy)."""
        dtype, shape, begin, end = self._entries[name]
        np_dtype = np.dtype(DTYPES[dtype][0])
        if begin == end:
            return np.zeros(shape, np_dtype)
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map[self._start + begin:self._start + end].view(np_dtype).reshape(shape)

    def array(self, name: str, shape=None, what: str = "") -> np.ndarray:
        """A float32 copy of the floating tensor ``name``, checked: its shape (``shape``, when given;
        ``what`` says what its axes are), its dtype (F32, F16 or BF16) and that every value is finite."""
        if name not in self._entries:
            self._fail("not in the file")
        dtype, got = self.info(name)
        if shape is not None and tuple(got) != tuple(shape):
            self._fail(f"shape {_shape_text(got)}, expected {_shape_text(shape)}" + (f" ({what})" if what else ""), name)
        if dtype not in FLOATS:
            self._fail(f"dtype {dtype}, expected a floating tensor ({', '.join(FLOATS)})", name)
        raw = self.raw(name)
        if dtype == "BF16":
            out = (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
        else:
            out = np.array(raw, dtype=np.float32)  # a copy: the map stays read-only and can be closed
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        if bad:
            self._fail(f"{bad} of {out.size} values are NaN or infinite", name)
        return out

    def check(self, name: str, shape, what: str = "") -> None:
        """Check a tensor's presence, shape and dtype from the header alone (no data is read)."""
        if name not in self._entries:
            self._fail("not in the file")
        dtype, got = self.info(name)
        if tuple(got) != tuple(shape):
            self._fail(f"shape {_shape_text(got)}, expected {_shape_text(shape)}" + (f" ({what})" if what else ""), name)
        if dtype not in FLOATS:
            self._fail(f"dtype {dtype}, expected a floating tensor ({', '.join(FLOATS)})", name)


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


__all__ = ["DTYPES", "FLOATS", "TensorFile", "TensorFileError", "file_sha256", "resolve"]
