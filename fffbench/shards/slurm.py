"""What each shard's Slurm job asks for, kept apart from the launcher and from submitit so the
manifest, the CLI and the executor share one definition without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SlurmOptions:
    """What each shard's Slurm job asks for (``time_min`` in minutes; ``extra``: any sbatch option)."""

    partition: str | None = None
    time_min: int = 240
    gpus_per_shard: int | None = None      # None: 1 when the suite has CUDA cases, else 0
    cpus_per_shard: int | None = None
    account: str | None = None
    extra: dict = field(default_factory=dict)
    setup: list = field(default_factory=list)
    array_parallelism: int = 256

    def parameters(self, uses_gpu: bool, job_name: str) -> dict:
        """The parameters given to ``SlurmExecutor.update_parameters`` (names as submitit spells them)."""
        gpus = (1 if uses_gpu else 0) if self.gpus_per_shard is None else self.gpus_per_shard
        p = {"job_name": job_name, "time": int(self.time_min), "array_parallelism": self.array_parallelism}
        if self.partition:
            p["partition"] = self.partition
        if gpus:
            p["gpus_per_node"] = gpus
        if self.cpus_per_shard:
            p["cpus_per_task"] = self.cpus_per_shard
        if self.account:
            p["account"] = self.account
        if self.setup:
            p["setup"] = list(self.setup)
        if self.extra:
            p["additional_parameters"] = {k.replace("-", "_"): v for k, v in self.extra.items()}
        return p
