"""Measured ceilings: copy bandwidth and GEMM rate of each device a run uses.

Datasheet numbers are not used: each run measures its own ceilings at its own thread count, on
each device it uses, at its start and again at its end, and stores both in run.json (``ceilings``
and ``ceilings_end``): a machine that slowed down or sped up during a run (another tenant came or
went, clocks changed) shows as two different ceilings, and a row faster than a ceiling is flagged
by the report instead of passing silently. :mod:`fffbench.roofline` turns them into limits.
"""
from __future__ import annotations

import time

from fffbench.env import pinned_threads
from fffbench.timing.stats import summarize


def _tdtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _median_time(fn, sync=lambda: None, reps: int = 5, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    sync()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return summarize(samples)["median_s"]


def _streaming_copy_gbps(nbytes: int, threads: int) -> float | None:
    """The C library's streaming copy (:class:`~fffbench.backends._cpu.StreamingCopy`), or None
    where it cannot be built."""
    try:
        from fffbench.backends._cpu import StreamingCopy

        copy = StreamingCopy(nbytes, threads)
    except (ImportError, OSError, RuntimeError):
        return None
    return 2 * nbytes / _median_time(copy) / 1e9


def cpu_ceilings(threads: int, dtypes=("float32",), copy_mib: int = 256, gemm_n: int = 1536) -> dict:
    """Copy bandwidth (bytes read + written per second) and GEMM rate at ``threads`` threads.

    The copy is several times any CPU's last-level cache. Two copies are measured and the faster is
    the ceiling: torch's threaded ``copy_`` and, where the C library builds, a copy with
    non-temporal stores. torch's regular stores read every destination line before writing it (a
    third of the traffic is that read), so its rate is not the most a kernel that streams its
    output can get: 31 against 54 GB/s on the 2-core Zen 3 VM of notes/cpu-kernels.md. A floor
    from the slower copy would let a kernel look closer to it than it is."""
    import torch

    out = {"threads": threads, "gemm_gflops": {}}
    with pinned_threads(threads):
        n = copy_mib * 2 ** 20 // 4
        src, dst = torch.ones(n), torch.empty(n)
        out["copy_gbps_torch"] = 2 * n * 4 / _median_time(lambda s=src, d=dst: d.copy_(s)) / 1e9
        src = dst = None  # freed before the streaming copy's buffers
        stream = _streaming_copy_gbps(n * 4, threads)
        if stream is not None:
            out["copy_gbps_stream"] = stream
        out["copy_gbps"] = max(out["copy_gbps_torch"], stream or 0.0)
        for dt in dtypes:
            a = torch.randn(gemm_n, gemm_n).to(_tdtype(dt))
            b = torch.randn(gemm_n, gemm_n).to(_tdtype(dt))
            t = _median_time(lambda a=a, b=b: torch.mm(a, b), reps=3, warm=1)
            out["gemm_gflops"][dt] = 2 * gemm_n ** 3 / t / 1e9
    return out


def cuda_ceilings(dtypes=("float32",), copy_gib: float = 2.0, gemm_n: int = 8192) -> dict:
    """Device-to-device copy bandwidth and cuBLAS GEMM rate per dtype (plus TF32 for float32)."""
    import torch

    sync = torch.cuda.synchronize
    n = int(copy_gib * 2 ** 30) // 4
    src, dst = torch.ones(n, device="cuda"), torch.empty(n, device="cuda")
    out = {"copy_gbps": 2 * n * 4 / _median_time(lambda s=src, d=dst: d.copy_(s), sync, reps=10) / 1e9,
           "gemm_gflops": {}}
    del src, dst  # free the 4 GB before the GEMM operands
    for dt in dtypes:
        a = torch.randn(gemm_n, gemm_n, device="cuda").to(_tdtype(dt))
        b = torch.randn(gemm_n, gemm_n, device="cuda").to(_tdtype(dt))
        modes = [(dt, False)] + ([("tfloat32", True)] if dt == "float32" else [])
        for name, tf32 in modes:
            prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                out["gemm_gflops"][name] = 2 * gemm_n ** 3 / _median_time(lambda a=a, b=b: torch.mm(a, b), sync) / 1e9
            finally:
                torch.backends.cuda.matmul.allow_tf32 = prev
    torch.cuda.empty_cache()
    return out


def measure(devices, dtypes, threads: int) -> dict:
    """Ceilings of every available device in ``devices``; a failure is recorded, never raised."""
    out = {}
    for dev in sorted(set(devices)):
        try:
            if dev == "cpu":
                out["cpu"] = cpu_ceilings(threads, tuple(sorted(set(dtypes))))
            elif dev == "cuda":
                import torch

                if torch.cuda.is_available():
                    out["cuda"] = cuda_ceilings(tuple(sorted(set(dtypes))))
        except Exception as e:  # a ceiling we cannot measure leaves the limit blank
            out[dev] = {"error": f"{type(e).__name__}: {e}"}
    return out
