"""Build CUDA C++ sources with nvcc at first use, cached per machine, loaded with ctypes.

The cache key covers the source, the flags, the nvcc version and the target architecture, so a
changed kernel or another GPU rebuilds, and a second run on the same machine loads instantly.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from fffbench.backends._cache import cache_root

CSRC = Path(__file__).resolve().parent.parent / "csrc"
FLAGS = ("-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17")


def find_nvcc() -> str | None:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def cache_dir() -> Path:
    return cache_root() / "cuda"


def gencode(arch: str) -> list[str]:
    """``arch`` like "90": SASS for it plus PTX, so a newer GPU can still JIT the kernel."""
    return ["-gencode", f"arch=compute_{arch},code=[sm_{arch},compute_{arch}]"]


def build(source: str, arch: str, nvcc: str | None = None, out_dir: Path | None = None) -> Path:
    """Compile ``csrc/<source>`` for ``arch``; returns the shared library's path (cached)."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set NVCC or CUDA_HOME)")
    src = CSRC / source
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(src.read_bytes() + repr((FLAGS, arch, version)).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir()
    lib = out_dir / f"{src.stem}-sm{arch}-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(lib.name + f".{os.getpid()}.tmp")
    cmd = [nvcc, *FLAGS, *gencode(arch), str(src), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed on {src.name}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    os.replace(tmp, lib)  # atomic: concurrent builders never load a half-written library
    return lib


_LOADED: dict[tuple[str, str], ctypes.CDLL] = {}


def load(source: str, arch: str) -> ctypes.CDLL:
    key = (source, arch)
    if key not in _LOADED:
        _LOADED[key] = ctypes.CDLL(str(build(source, arch)))
    return _LOADED[key]
