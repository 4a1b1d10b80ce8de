"""The environment record (run.json): everything that can move a timing, captured with every run.

Collected once per run, before the first case, so the record describes the machine the numbers
came from. Every probe is best-effort: a missing tool yields ``None``, never an exception.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

OPTIONAL_PACKAGES = ("torch", "numpy", "scipy", "pandas", "numba", "triton", "threadpoolctl", "matplotlib")
_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "sve")


def _run(*cmd, cwd=None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=cwd)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_affinity() -> int | None:
    """How many CPUs this process may run on (its affinity: a Slurm allocation, taskset), where the
    OS says."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


_PINNED = []


def pin_threads(n: int) -> None:
    """Pin torch's intra-op pool and every BLAS/OpenMP pool (threadpoolctl) to ``n`` threads for
    the rest of this process (a worker process measures at one thread count)."""
    from threadpoolctl import threadpool_limits

    _PINNED.append(threadpool_limits(limits=n))  # kept referenced: the limits hold while it lives
    torch = sys.modules.get("torch")  # not imported here: a process without torch backends never pays for it
    if torch is not None:
        torch.set_num_threads(n)


@contextlib.contextmanager
def pinned_threads(n: int):
    """Pin torch's and every BLAS/OpenMP pool to ``n`` threads for the block, then restore them."""
    from threadpoolctl import threadpool_limits

    try:
        import torch
    except ImportError:
        torch = None
    prev = torch.get_num_threads() if torch else None
    with threadpool_limits(limits=n):
        if torch:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(prev)


def cpu_info() -> dict:
    model, flags, cores_per_socket, sockets = platform.processor() or None, set(), None, set()
    ident: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = (s.strip() for s in line.partition(":"))
            if key == "model name" and (model is None or model == platform.processor()):
                model = val
            elif key in ("cpu family", "model", "stepping"):
                name = {"cpu family": "family", "model": "model_number"}.get(key, key)
                ident.setdefault(name, int(val) if val.isdigit() else val)
            elif key in ("flags", "Features"):
                flags |= set(val.split())
            elif key == "cpu cores":
                cores_per_socket = int(val)
            elif key == "physical id":
                sockets.add(val)
    except OSError:
        pass
    physical = cores_per_socket * max(len(sockets), 1) if cores_per_socket else None
    return {"model": model, "arch": platform.machine(), "logical_cores": os.cpu_count(),
            "physical_cores": physical, "affinity": cpu_affinity(),
            "flags": sorted(f for f in _FLAGS if f in flags)} | \
        {k: ident[k] for k in ("family", "model_number", "stepping") if k in ident} | _caches()


def _caches() -> dict:
    """Per-core L2 and the L3 size in KiB (sysfs): a tuned kernel's choices follow them, and two VMs
    with one masked model name ("AMD EPYC") can differ in both."""
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(base.glob("index*")):
            level, kind = (idx / "level").read_text().strip(), (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
            if kind in ("Unified", "Data") and size.endswith("K"):
                out[f"l{level}{'d' if level == '1' else ''}_kib"] = int(size[:-1])
    except (OSError, ValueError):
        pass
    return out


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: info.get(k) for k in ("user_api", "internal_api", "version", "num_threads", "prefix",
                                       "architecture", "threading_layer")} for info in threadpool_info()]


def gpu_info() -> list[dict]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    driver = _run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    clocks = _run("nvidia-smi", "--query-gpu=clocks.max.sm,clocks.max.mem", "--format=csv,noheader")
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                    "memory_gib": round(p.total_memory / 2 ** 30, 1), "l2_bytes": getattr(p, "L2_cache_size", None),
                    "driver": driver.splitlines()[0] if driver else None, "cuda": torch.version.cuda,
                    "max_clocks_mhz": clocks.splitlines()[0] if clocks else None})
    return out


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in OPTIONAL_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        out["fffbench"] = metadata.version("fffbench")
    except metadata.PackageNotFoundError:
        out["fffbench"] = None
    return out


def libraries() -> dict:
    """What torch computes with on the CPU (its BLAS and oneDNN), where torch says."""
    try:
        import torch
    except ImportError:
        return {}
    out = {}
    try:
        cfg = torch.__config__.show()
        blas = next((part.split("BLAS_INFO=", 1)[1].strip() for part in cfg.replace("\n", ",").split(",")
                     if "BLAS_INFO=" in part), None)
        out["torch_blas"] = (blas or "unknown") + (", oneDNN" if torch.backends.mkldnn.is_available() else "")
        out["torch_threads"] = torch.get_num_threads()
    except Exception:  # a build without __config__: leave it out
        pass
    return out


def git_info() -> dict:
    root = Path(__file__).resolve().parent.parent
    commit = _run("git", "rev-parse", "HEAD", cwd=root)
    status = _run("git", "status", "--porcelain", "--untracked-files=no", cwd=root) if commit else None
    return {"commit": commit, "dirty": bool(status) if commit else None}


def machine_name(env: dict) -> str:
    """A short human name for figure titles: the CPU model and core count, plus the GPU if used."""
    cpu = env.get("cpu", {})
    model = cpu.get("model") or cpu.get("arch")
    if model and not any(ch.isdigit() for ch in str(model)) and cpu.get("family") is not None:
        model = f"{model} family {cpu['family']} model {cpu.get('model_number')}"  # a VM's masked name
    name = f"{model} ({cpu.get('logical_cores')} cores)"
    gpus = env.get("gpus") or []
    return f"{name} + {gpus[0]['name']}" if gpus else name


def collect(argv=None) -> dict:
    env = {"host": socket.gethostname(), "user": getpass.getuser() if hasattr(os, "getuid") else None,
           "os": platform.platform(), "cpu": cpu_info(), "blas": blas_info(), "gpus": gpu_info(),
           "versions": versions(), "libraries": libraries(), "git": git_info(), "argv": list(sys.argv if argv is None else argv),
           "env_vars": {k: os.environ[k] for k in sorted(os.environ)
                        if k.startswith(("OMP_", "MKL_", "OPENBLAS_", "CUDA_VISIBLE", "NUMBA_"))}}
    env["machine"] = machine_name(env)
    return env
