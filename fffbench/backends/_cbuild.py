"""The C backends' build: compiled at first use with the system C compiler, cached per machine,
loaded with ctypes; plus the search for a CBLAS to bind the paper-level kernels to.

Compiler: ``$CC`` if set (it must exist), else the first of ``cc``, ``gcc``, ``clang`` on PATH.
Flags: ``-O3 -march=native -fopenmp`` (falling back to fewer flags if the compiler rejects them).
Cache: :func:`fffbench.backends._cache.cache_root` (``$FFFBENCH_CACHE_DIR``), one directory per hash of (sources, compiler version, flags, CPU model and flags), so a home directory
shared between machines never loads code built for another CPU.

BLAS (first found): ``$FFFBENCH_BLAS`` (``mkl``, ``openblas``, ``numpy`` or a library path), MKL from
PyPI (``pip install mkl``: the paper's library), scipy-openblas32, a system OpenBLAS, numpy's own
bundled OpenBLAS (ILP64, ``scipy_``-prefixed symbols). Entry points are handed to the C code as
function pointers, so no BLAS headers or link flags are needed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fffbench.backends._cache import cache_root

FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3", "-march=native"),
    ("-O3",),
)
COMMON_FLAGS = ("-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-Wall")
LIB_NAME = "libfffc.so"


class BuildError(RuntimeError):
    """The C kernels cannot be built here; the message is the reason a backend is skipped."""


def compiler() -> list[str]:
    """The compiler command, or BuildError with the reason."""
    cc = os.environ.get("CC", "").strip()
    if cc:
        parts = shlex.split(cc)
        if not shutil.which(parts[0]):
            raise BuildError(f"C compiler {parts[0]!r} (from $CC) not found")
        return parts
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise BuildError("no C compiler found (install gcc or clang, or set $CC)")


def _sources() -> dict[str, bytes]:
    root = resources.files("fffbench") / "csrc"
    return {p.name: p.read_bytes() for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith((".c", ".h"))}


def _cpu_id() -> str:
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = (s.strip() for s in line.partition(":"))
            if key == "model name" and not model:
                model = val
            elif key in ("flags", "Features") and not flags:
                flags = val
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{flags}"


def _version(cc: list[str]) -> str:
    try:
        out = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


ISA_BITS = (("avx2", 1), ("avx512f", 2), ("avx512bf16", 4), ("amx", 8))


@dataclass(frozen=True)
class Build:
    lib: ctypes.CDLL
    path: str
    compiler: str
    flags: tuple[str, ...]
    openmp: bool
    isa: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        """The build's cache directory (tuning results are kept beside the library)."""
        return Path(self.path).parent

    def describe(self) -> str:
        main = [f for f in self.flags if f.startswith(("-O", "-march", "-fopenmp"))]
        return f"{self.compiler} {' '.join(main)} [{'+'.join(self.isa) or 'generic'}]"


_state: dict = {}


def _once(key, make):
    """``make()`` once per process and key; a BuildError is remembered and raised again."""
    if key not in _state:
        try:
            _state[key] = make()
        except BuildError as e:
            _state[key] = e
    if isinstance(_state[key], BuildError):
        raise _state[key]
    return _state[key]


def load() -> Build:
    """Build (once per machine, cached on disk) and load the C kernels; BuildError says why not."""
    return _once((os.environ.get("CC", ""), str(cache_root())), _build)


def _build() -> Build:
    cc = compiler()
    sources = _sources()
    version = _version(cc)
    digest = hashlib.sha256()
    for name, data in sources.items():
        digest.update(name.encode() + b"\0" + data)
    digest.update(f"{version}|{_cpu_id()}|{COMMON_FLAGS}|{FLAG_SETS}".encode())
    out_dir = cache_root() / f"c-{digest.hexdigest()[:16]}"
    lib_path, meta_path = out_dir / LIB_NAME, out_dir / "build.json"
    if lib_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        try:
            return _open(lib_path, meta)
        except OSError:
            pass  # a damaged cache entry: rebuild it
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create the build cache {out_dir}: {e}") from None
    errors = []
    with tempfile.TemporaryDirectory(prefix="fffbench-c-") as tmp:
        for name, data in sources.items():
            Path(tmp, name).write_bytes(data)
        srcs = [str(Path(tmp, n)) for n in sources if n.endswith(".c")]
        for flags in FLAG_SETS:
            target = Path(tmp, LIB_NAME)
            cmd = [*cc, *flags, *COMMON_FLAGS, *srcs, "-o", str(target), "-lm"]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{' '.join(flags)}: {e}")
                continue
            if res.returncode == 0:
                meta = {"compiler": " ".join(cc), "version": version, "flags": list(flags) + list(COMMON_FLAGS),
                        "openmp": "-fopenmp" in flags, "cpu": _cpu_id().split("|")[1]}
                fd, tmp_lib = tempfile.mkstemp(dir=out_dir, suffix=".so")
                os.close(fd)
                shutil.copyfile(target, tmp_lib)
                os.replace(tmp_lib, lib_path)  # atomic: concurrent builders never see a partial file
                meta_path.write_text(json.dumps(meta, indent=1))
                (out_dir / "build.log").write_text(" ".join(cmd) + "\n" + res.stderr)
                return _open(lib_path, meta)
            errors.append(f"{' '.join(flags)}: {(res.stderr.strip().splitlines() or ['failed'])[0]}")
    raise BuildError("C build failed with " + " ".join(cc) + ": " + "; ".join(errors)[:400])


def _open(path: Path, meta: dict) -> Build:
    lib = ctypes.CDLL(str(path))
    _declare(lib)
    isa = tuple(name for name, bit in ISA_BITS if lib.fffc_isa() & bit)
    return Build(lib, str(path), meta["compiler"], tuple(meta["flags"]), bool(meta["openmp"]), isa)


P, L, I, F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float


def _declare(lib):
    sig = {
        "fffc_blas_bind": (I, [P, P, P, P, P, P, P, I]),
        "fffc_copy": (None, [P, P, L, I]),
        "fffc_isa": (I, []),
        "fffc_bf16_native": (I, []),
        "ff_l3_bf16": (I, [P, L, L, L, L, P, P, P, P, P, P, I]),
        "ff_l1": (None, [P, L, L, L, L, P, P, P, P, I]),
        "ff_l2": (None, [P, L, L, L, L, P, P, P, P, P, I]),
        "ff_l3": (None, [P, L, L, L, L, P, P, P, P, P, I]),
        "ff_l3_alloc": (I, [P, L, L, L, L, P, P, P, P, I]),
        "fff_l1": (None, [P, L, L, L, L, L, P, P, P, P, I]),
        "fff_l2": (None, [P, L, L, L, L, L, P, P, P, P, P, P, P, I]),
        "fff_opt_walk": (None, [P, P, P, L, P, P]),
        "fff_opt_bucket": (None, [P, P, P, L, P, P, P, P, P]),
        "fff_amx_bucket": (I, [P, P, P, L, P, P, P, P, P, P]),
        "fffc_amx_init": (I, []),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    # the small-batch entry and its no-op twin are called with ready ctypes objects and a small int,
    # undeclared: ctypes' per-argument conversion is a third of a B = 1 call
    for name in ("fff_opt_small", "fffc_noop"):
        getattr(lib, name).restype = None


# ------------------------------------------------------------------------------------------- BLAS

@dataclass(frozen=True)
class Blas:
    name: str        # e.g. "MKL 2026.2" or "OpenBLAS 0.3.31"
    path: str
    ilp64: bool
    gemm_bf16: str = ""  # the bf16 GEMM bound (cblas_gemm_bf16bf16f32, cblas_sbgemm), "" if none

    def describe(self) -> str:
        return f"{self.name} ({os.path.basename(self.path)}, {'ILP64' if self.ilp64 else 'LP64'})"


def _addr(lib, name):
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _mkl_paths() -> list[str]:
    out = []
    for d in {sys.prefix, sys.base_prefix, os.environ.get("CONDA_PREFIX", "")}:
        if d:
            out += sorted(glob.glob(os.path.join(d, "lib", "libmkl_rt.so*")), reverse=True)
    found = ctypes.util.find_library("mkl_rt")
    return out + ([found] if found else [])


def _openblas32_paths() -> list[str]:
    try:
        import scipy_openblas32

        return sorted(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "lib*openblas*.so*")))
    except Exception:
        return []


def _system_openblas_paths() -> list[str]:
    found = ctypes.util.find_library("openblas")
    return [found] if found else []


def _numpy_openblas_paths() -> list[str]:
    import numpy

    root = os.path.dirname(numpy.__file__)
    return sorted(glob.glob(os.path.join(os.path.dirname(root), "numpy.libs", "lib*openblas*.so*"))
                  + glob.glob(os.path.join(root, ".libs", "lib*openblas*.so*")))


def _gomp_loaded() -> bool:
    try:
        return any(line.rstrip().endswith("/libgomp.so.1") for line in open("/proc/self/maps"))
    except OSError:
        return False


def _bind_mkl(build: Build, path: str):
    lib = ctypes.CDLL(path)
    syms = [_addr(lib, f"cblas_{f}") for f in ("sdot", "saxpy", "sgemv", "sgemm")]
    if None in syms:
        return None
    # MKL's OpenMP layer must be the one our kernels use (libgomp), or MKL threads would run
    # inside our parallel regions and Intel's OpenMP would spin beside GNU's; chosen before any
    # MKL computation in this process.
    if build.openmp and _gomp_loaded() and _addr(lib, "MKL_Set_Threading_Layer"):
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer(3)  # MKL_THREADING_GNU
    buf = ctypes.create_string_buffer(256)
    name = "MKL"
    if _addr(lib, "mkl_get_version_string"):
        lib.mkl_get_version_string(buf, 256)
        words = buf.value.decode(errors="replace").split()
        ver = next((w for w in words if w[:1].isdigit()), "").split("-")[0]
        name = f"MKL {ver}".strip()
    bf16 = _addr(lib, "cblas_gemm_bf16bf16f32")
    return name, syms + [_addr(lib, "MKL_Set_Num_Threads"), _addr(lib, "MKL_Get_Max_Threads"), bf16], False, \
        "cblas_gemm_bf16bf16f32" if bf16 else ""


def _bind_openblas(build: Build, path: str):
    lib = ctypes.CDLL(path)
    for prefix, suffix, ilp64 in (("", "", False), ("scipy_", "", False), ("", "64_", True),
                                  ("scipy_", "64_", True)):
        syms = [_addr(lib, f"{prefix}cblas_{f}{suffix}") for f in ("sdot", "saxpy", "sgemv", "sgemm")]
        if None in syms:
            continue
        set_t = _addr(lib, f"{prefix}openblas_set_num_threads{suffix}")
        get_t = _addr(lib, f"{prefix}openblas_get_num_threads{suffix}")
        name = "OpenBLAS"
        cfg = f"{prefix}openblas_get_config{suffix}"
        if _addr(lib, cfg):
            getattr(lib, cfg).restype = ctypes.c_char_p
            words = (getattr(lib, cfg)() or b"").decode(errors="replace").split()
            name = " ".join(words[:2]) if len(words) >= 2 else name
        sb = f"{prefix}cblas_sbgemm{suffix}"
        bf16 = _addr(lib, sb)
        return name, syms + [set_t, get_t, bf16], ilp64, sb if bf16 else ""
    return None


_KINDS = {
    "mkl": (_mkl_paths, _bind_mkl),
    "openblas": (lambda: _openblas32_paths() + _system_openblas_paths(), _bind_openblas),
    "numpy": (_numpy_openblas_paths, _bind_openblas),
}


def blas() -> Blas:
    """Find a CBLAS and bind the C kernels to it (once per process); BuildError says why not."""
    return _once("blas", _find_blas)


def _find_blas() -> Blas:
    build = load()
    want = os.environ.get("FFFBENCH_BLAS", "").strip()
    if want and want not in _KINDS:
        candidates = [(want, _bind_mkl if "mkl" in os.path.basename(want) else _bind_openblas)]
    else:
        kinds = [want] if want else ["mkl", "openblas", "numpy"]
        candidates = [(p, _KINDS[k][1]) for k in kinds for p in _KINDS[k][0]()]
    tried = []
    for path, bind in candidates:
        try:
            got = bind(build, path)
        except OSError as e:
            tried.append(f"{path}: {e}")
            continue
        if got is None:
            tried.append(f"{path}: no CBLAS symbols")
            continue
        name, ptrs, ilp64, bf16 = got
        if build.lib.fffc_blas_bind(*ptrs, int(ilp64)) != 0:
            tried.append(f"{path}: binding failed")
            continue
        return Blas(name, path, ilp64, bf16)
    hint = "pip install mkl (or scipy-openblas32), or set FFFBENCH_BLAS to a CBLAS library"
    raise BuildError(f"no BLAS found ({'; '.join(tried)[:200] or 'none of MKL, OpenBLAS'}): {hint}")


def _reason(find) -> str | None:
    """None when ``find()`` succeeds, else why it failed (an availability check's answer)."""
    try:
        find()
    except BuildError as e:
        return str(e)
    return None


def reason_c() -> str | None:
    return _reason(load)


def reason_blas() -> str | None:
    return _reason(blas)
