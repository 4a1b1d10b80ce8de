"""Sharded runs: one suite split over several processes, GPUs or cluster nodes, stored as one run.

A sweep over every depth, width, batch size, dtype and backend outgrows one device, and comparing
machines means running the same suite on each. Rather than a scheduler of its own, fffbench hands
shards to submitit: its local executor (one process per shard on this host, each given one GPU)
or Slurm (one array job per shard). The pieces, each independent of submitit unless named:

- :mod:`.plan`: the split (whole cases, balanced per device) and the manifest ``shards.json``;
- :mod:`.worker`: what one shard runs (a normal run of its cases into ``shards/shard-NNN/``,
  holding its device around every measurement, see :mod:`fffbench.devlock`);
- :mod:`.submit`: submitit executors, job submission, waiting, and why a job failed (imports submitit);
- :mod:`.launch`: a sharded run from start to merged result, and re-running unfinished shards;
- :mod:`.merge`: merged top-level files, and one environment record per machine;
- :mod:`.timeline`: when each device was busy, and a check that no two measurements overlapped.
"""
