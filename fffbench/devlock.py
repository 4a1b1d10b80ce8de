"""Device exclusivity between processes: at most one measurement at a time on a device.

Shards of one run (and of one host) run as separate processes; a timing taken while another shard
works on the same device measures the contention, not the backend. Every measurement therefore
holds its device through an advisory lock (``fcntl.flock``) on a file named after the host and the
device, in ``RUN_DIR/locks/`` (override: ``FFFBENCH_LOCK_DIR``, e.g. a node-local directory shared
by several runs). The rules:

- a GPU is held exclusively by one measurement (``<host>-cuda-<uuid>.lock``);
- a CPU measurement holds the whole host exclusively (``<host>-cpu.lock``): with ``threads: all``
  it uses every core, and a GPU shard's launching thread, reference computation or compiler would
  otherwise steal them; GPU measurements hold the host *shared*, so GPUs run in parallel with each
  other but never beside a CPU measurement;
- host work of a case (its float64 reference) holds the host *shared*: it never runs beside a CPU
  measurement, but it does not stop another shard's GPU measurement;
- locks are always taken GPU first, then host, so no two holders can wait on each other.

A waiting CPU measurement takes a turnstile lock first, which new GPU measurements must pass, so a
steady stream of GPU measurements cannot starve it. Locks are released by the kernel when a process
dies, so a killed shard never blocks the others.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sys
import tempfile
from pathlib import Path

from fffbench.env import cpu_affinity

LOCK_DIR_ENV = "FFFBENCH_LOCK_DIR"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:80]


@contextlib.contextmanager
def flocked(path: Path, shared: bool = False):
    """Hold an advisory lock on ``path`` (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _usable(directory: Path) -> bool:
    """Whether flock works in ``directory`` (some cluster file systems refuse it)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with flocked(directory / ".probe"):
            return True
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EACCES, errno.EROFS):
            return False
        raise


class DeviceLocks:
    """The locks of one host's devices, in ``directory`` (shared by every shard of the run).

    ``gpu`` names the GPU this process holds for its CUDA measurements (a UUID where known, so two
    jobs that both see their GPU as index 0 inside their own allocation still lock different GPUs).
    """

    def __init__(self, directory, host: str, gpu: str | None = None, fallback_tag: str = "run"):
        directory = Path(os.environ.get(LOCK_DIR_ENV) or directory)
        if not _usable(directory):
            local = Path(tempfile.gettempdir()) / f"fffbench-locks-{_safe(fallback_tag)}"
            print(f"fffbench: file locks do not work in {directory}; using {local} (this host only)", file=sys.stderr)
            directory = local
            directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.host, self.gpu = directory, host, gpu
        h = _safe(host)
        self.cpu_file = directory / f"{h}-cpu.lock"
        self.turnstile = directory / f"{h}-cpu.turnstile"
        self.gpu_file = directory / f"{h}-cuda-{_safe(gpu or 'unknown')}.lock"

    @contextlib.contextmanager
    def host_exclusive(self):
        with contextlib.ExitStack() as stack:
            with flocked(self.turnstile):  # released once the host is ours
                stack.enter_context(flocked(self.cpu_file))
            yield

    @contextlib.contextmanager
    def host_shared(self):
        with flocked(self.turnstile):
            pass  # wait behind any CPU measurement already queued
        with flocked(self.cpu_file, shared=True):
            yield

    @contextlib.contextmanager
    def hold(self, device: str):
        """One measurement on ``device`` ("cpu" or "cuda")."""
        if device == "cpu":
            with self.host_exclusive():
                yield
        else:
            with flocked(self.gpu_file), self.host_shared():
                yield

    @contextlib.contextmanager
    def everything(self):
        """This process's GPU and the whole host (e.g. while measuring the ceilings)."""
        with contextlib.ExitStack() as stack:
            if self.gpu is not None:
                stack.enter_context(flocked(self.gpu_file))
            stack.enter_context(self.host_exclusive())
            yield


def visible_gpu() -> tuple[str | None, str | None]:
    """(index, UUID) of the GPU this process sees first: the index is the first entry of
    ``CUDA_VISIBLE_DEVICES`` (the physical GPU a shard was given), else "0"; (None, None) without one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None, None
        uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    except Exception:  # no torch, a broken driver: no GPU to hold
        return None, None
    entries = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    uuid = str(uuid) if uuid is not None else None
    if uuid and not uuid.startswith(("GPU-", "MIG-")):
        uuid = f"GPU-{uuid}"
    return (entries[0] if entries else "0"), uuid


class Placement:
    """Where one shard measures: the locks it takes and what its rows record about it.

    Passed to :class:`fffbench.runner.Runner`, which calls :meth:`hold` around every group's
    measurement, :meth:`prepare` around a case's host work, :meth:`exclusive` around the
    ceilings, and merges :meth:`tags` into every row.
    """

    def __init__(self, shard: int, locks: DeviceLocks, gpu_index: str | None = None, gpu_uuid: str | None = None):
        self.shard, self.locks, self.gpu_index, self.gpu_uuid = shard, locks, gpu_index, gpu_uuid

    @classmethod
    def for_shard(cls, shard: int, lock_dir, host: str, uses_gpu: bool, tag: str = "run") -> Placement:
        index, uuid = visible_gpu() if uses_gpu else (None, None)
        gpu = uuid or (f"index{index}" if index is not None else None)
        return cls(shard, DeviceLocks(lock_dir, host, gpu, fallback_tag=tag), index, uuid)

    def hold(self, device: str):
        return self.locks.hold(device)

    def prepare(self, device: str):
        """Host work of a case (its float64 reference): beside GPU measurements, never beside a CPU one."""
        return self.locks.host_shared()

    def exclusive(self):
        return self.locks.everything()

    def tags(self, device: str) -> dict:
        on_gpu = device != "cpu"
        return {"shard": self.shard, "device_index": self.gpu_index if on_gpu else None,
                "device_uuid": self.gpu_uuid if on_gpu else None}

    def record(self) -> dict:
        """The placement as run.json records it."""
        return {"shard": self.shard, "gpu_index": self.gpu_index, "gpu_uuid": self.gpu_uuid,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "lock_dir": str(self.locks.directory), "affinity": cpu_affinity()}


