"""``fffbench run``: run a suite in this process, or sharded over processes or Slurm jobs, and
end with the same summary either way."""
from __future__ import annotations

import enum
from pathlib import Path

import typer

from fffbench.cli.app import app, fail, fail_os
from fffbench.cli.summary import conclude, load_checked
from fffbench.shards.launch import EXECUTORS
from fffbench.vocab import DEVICES

Device = enum.Enum("Device", [(d, d) for d in DEVICES], type=str)
Executor = enum.Enum("Executor", [(e, e) for e in EXECUTORS], type=str)
_SHARDS = "Sharding (--executor local or slurm)"


def _value(v):
    return None if v is None else v.value


@app.command(epilog="Examples:\n\n  fffbench run suites/paper.yaml\n\n"
                    "  fffbench run suites/quick.yaml --out /tmp/results\n\n"
                    "  fffbench run --resume results/paper-20261128-101500-myhost\n\n"
                    "  fffbench run suites/scaling.yaml --executor local --shards 2   # one process per GPU\n\n"
                    "  fffbench run suites/scaling.yaml --executor slurm --shards 8 --slurm-partition gpu\n\n"
                    "  fffbench run --resume results/<run-id> --shard 1 --executor local   # one failed shard")
def run(suite: Path | None = typer.Argument(None, metavar="SUITE", help="Suite YAML file (optional with --resume)."),
        out: Path = typer.Option(Path("results"), metavar="DIR", help="Folder that receives the run directory."),
        resume: Path | None = typer.Option(None, metavar="RUN_DIR", help="Finish an interrupted run directory; done rows are kept. "
                                                         "For a sharded run: its unfinished shards."),
        device: list[Device] | None = typer.Option(None, metavar="cpu|cuda", help="Run only the cases on this device (repeatable)."),
        progress: bool = typer.Option(True, help="Show progress (a bar on a terminal, a line per row elsewhere)."),
        summary: bool = typer.Option(True, help="Print the tables at the end."),
        max_cases: int = typer.Option(100_000, min=1, metavar="N", help="Refuse sweeps with more cases than this."),
        executor: Executor | None = typer.Option(
            None, metavar="inline|local|slurm", rich_help_panel=_SHARDS, help="inline (default: this process), local (one process per shard on "
                                                "this host, shard k on GPU k mod GPUs) or slurm (one job per shard). "
                                                "With --resume of a sharded run: the run's own executor."),
        shards: int | None = typer.Option(None, min=1, metavar="N", rich_help_panel=_SHARDS,
                                             help="Number of shards (default: local, one per GPU; slurm, 1)."),
        costs_from: Path | None = typer.Option(
            None, metavar="RUN_DIR", rich_help_panel=_SHARDS,
            help="Balance the shards by what each workload took in this earlier run of the suite (default: "
                 "estimated from FLOPs and bytes)."),
        replicate: bool = typer.Option(False, "--replicate", rich_help_panel=_SHARDS,
                                       help="Every shard runs every case (one replica per GPU or node), to compare "
                                            "machines: report and compare show each replica as a machine."),
        shard: list[int] | None = typer.Option(None, metavar="K", rich_help_panel=_SHARDS,
                                                  help="With --resume: re-run only this shard (repeatable)."),
        gpus: str | None = typer.Option(None, metavar="0,1,...", rich_help_panel=_SHARDS,
                                           help="local: GPU indices to spread shards over, e.g. 0,1 (default: "
                                                "CUDA_VISIBLE_DEVICES, else every GPU)."),
        wait: bool = typer.Option(True, rich_help_panel=_SHARDS,
                                  help="Wait for the shards, merge and summarise (--no-wait: submit and return)."),
        slurm_partition: str | None = typer.Option(None, metavar="NAME", rich_help_panel=_SHARDS, help="Slurm partition."),
        slurm_time: int | None = typer.Option(None, min=1, metavar="MINUTES", rich_help_panel=_SHARDS,
                                                 help="Time limit per shard, minutes (default 240)."),
        slurm_gpus_per_shard: int | None = typer.Option(
            None, min=0, metavar="N", rich_help_panel=_SHARDS, help="GPUs per shard job (default: 1 if the suite has CUDA cases)."),
        slurm_cpus_per_shard: int | None = typer.Option(
            None, min=1, metavar="N", rich_help_panel=_SHARDS, help="CPUs per shard job (threads: all means these)."),
        slurm_account: str | None = typer.Option(None, metavar="NAME", rich_help_panel=_SHARDS, help="Slurm account."),
        slurm_extra: list[str] | None = typer.Option(
            None, metavar="KEY=VALUE", rich_help_panel=_SHARDS,
            help="Any other sbatch option, e.g. constraint=h100 or mem=64G (repeatable)."),
        slurm_setup: list[str] | None = typer.Option(
            None, metavar="COMMAND", rich_help_panel=_SHARDS,
            help="Shell line run before each shard, e.g. 'source .venv/bin/activate' (repeatable).")):
    """Run a suite: check every backend against the float64 reference, time the correct ones in fresh
    worker processes, store every row.

    With --executor local or slurm the cases are split into shards run in parallel (through submitit),
    each holding its device for every measurement, and stored as one run."""
    from fffbench.store import MANIFEST

    devices = sorted({d.value for d in device}) if device else None
    if suite is None and resume is None:
        fail("give a SUITE file, or --resume RUN_DIR")
    ex = _value(executor)
    sharded = resume is not None and (resume / MANIFEST).exists()
    if ex in ("local", "slurm") or sharded:
        from fffbench.cli.shards import run_sharded, slurm_options

        slurm = slurm_options(slurm_partition, slurm_time, slurm_gpus_per_shard, slurm_cpus_per_shard,
                              slurm_account, slurm_extra, slurm_setup)
        run_sharded(suite, out, resume, devices, ex, shards, shard or None, gpus, slurm, wait, progress, summary,
                    replicate, max_cases, costs_from)
        return
    if shards not in (None, 1) or shard or replicate or costs_from:
        fail("--shards, --shard, --replicate and --costs-from need --executor local or slurm (or --resume of a "
             "sharded run)")
    run_inline(suite, out, resume, devices, progress, summary, max_cases)


def run_inline(suite, out, resume, devices, progress: bool, summary: bool, max_cases: int) -> None:
    from fffbench.progress import Progress
    from fffbench.session import RunAborted, RunInterrupted, measure_run, open_run
    from fffbench.store import RunStore, StoreError
    from fffbench.suite import SuiteError

    try:
        if resume is not None:
            shard_of = RunStore.open(resume).env().get("shard")
            if shard_of:  # its suite.yaml is the whole suite: resuming the directory alone would run every case
                fail(f"{resume} is shard {shard_of.get('index')} of a sharded run; re-run it with: fffbench run "
                     f"--resume {resume.resolve().parent.parent} --shard {shard_of.get('index')}")
        s = load_checked(suite, resume, devices, max_cases)
        store, s = open_run(s, out, resume, devices)
    except (SuiteError, StoreError, FileNotFoundError) as e:
        fail(str(e))
    except OSError as e:
        fail_os(e, str(out))
    typer.echo(f"run directory: {store.path}")
    bar = Progress(enabled=progress)
    try:
        measure_run(store, s, progress=bar)
    except StoreError as e:
        fail(str(e))
    except RunInterrupted as e:
        bar.close()
        typer.echo(f"\n{e}; finish it with: fffbench run --resume {e.store.path}", err=True)
        raise typer.Exit(130) from None
    except RunAborted as e:
        bar.close()
        typer.echo(f"\nerror: {e}; finish it with: fffbench run --resume {e.store.path}", err=True)
        raise typer.Exit(1) from None
    finally:
        bar.close()
    try:
        conclude(store, s, summary)
    except OSError as e:
        fail_os(e)
