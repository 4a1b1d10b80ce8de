"""The ``fffbench`` command: a thin typer layer over the Python API.

Exit codes: 0 all rows ok or skipped; 1 the run finished but some rows are wrong or errored;
2 bad input (suite, paths, options); 130 interrupted (finished rows are kept: resume the run).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Honest benchmarks of fast feedforward (FFF) layers against dense FF baselines.")


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


_SLURM = "Sharding (--executor local or slurm)"


@app.command(epilog="Examples:\n\n  fffbench run suites/paper.yaml\n\n"
                    "  fffbench run suites/quick.yaml --out /tmp/results\n\n"
                    "  fffbench run --resume results/paper-20261128-101500-myhost\n\n"
                    "  fffbench run suites/scaling.yaml --executor local --shards 2   # one process per GPU\n\n"
                    "  fffbench run suites/scaling.yaml --executor slurm --shards 8 --slurm-partition gpu\n\n"
                    "  fffbench run --resume results/<run-id> --shard 1 --executor local   # one failed shard")
def run(suite: Path | None = typer.Argument(None, help="Suite YAML file (optional with --resume)."),
        out: Path = typer.Option(Path("results"), help="Folder that receives the run directory."),
        resume: Path | None = typer.Option(None, help="Finish an interrupted run directory; done rows are kept. "
                                                         "For a sharded run: its unfinished shards."),
        device: list[str] | None = typer.Option(None, help="Run only the cases on this device (repeatable)."),
        progress: bool = typer.Option(True, help="Show the progress bar."),
        summary: bool = typer.Option(True, help="Print the tables at the end."),
        executor: str | None = typer.Option(
            None, rich_help_panel=_SLURM, help="inline (default: this process), local (one process per shard on "
                                               "this host, shard k on GPU k mod GPUs) or slurm (one job per shard). "
                                               "With --resume of a sharded run: the run's own executor."),
        shards: int | None = typer.Option(None, min=1, rich_help_panel=_SLURM,
                                             help="Number of shards (default: local, one per GPU; slurm, 1)."),
        replicate: bool = typer.Option(False, "--replicate", rich_help_panel=_SLURM,
                                       help="Every shard runs every case (one replica per GPU or node), to compare "
                                            "machines: report and compare show each replica as a machine."),
        shard: list[int] | None = typer.Option(None, rich_help_panel=_SLURM,
                                                  help="With --resume: re-run only this shard (repeatable)."),
        gpus: str | None = typer.Option(None, rich_help_panel=_SLURM,
                                           help="local: GPU indices to spread shards over, e.g. 0,1 (default: "
                                                "CUDA_VISIBLE_DEVICES, else every GPU)."),
        wait: bool = typer.Option(True, rich_help_panel=_SLURM,
                                  help="Wait for the shards, merge and summarise (--no-wait: submit and return)."),
        slurm_partition: str | None = typer.Option(None, rich_help_panel=_SLURM, help="Slurm partition."),
        slurm_time: int | None = typer.Option(None, min=1, rich_help_panel=_SLURM,
                                                 help="Time limit per shard, minutes (default 240)."),
        slurm_gpus_per_shard: int | None = typer.Option(
            None, min=0, rich_help_panel=_SLURM, help="GPUs per shard job (default: 1 if the suite has CUDA cases)."),
        slurm_cpus_per_shard: int | None = typer.Option(
            None, min=1, rich_help_panel=_SLURM, help="CPUs per shard job (threads: all means these)."),
        slurm_account: str | None = typer.Option(None, rich_help_panel=_SLURM, help="Slurm account."),
        slurm_extra: list[str] | None = typer.Option(
            None, metavar="KEY=VALUE", rich_help_panel=_SLURM,
            help="Any other sbatch option, e.g. constraint=h100 or mem=64G (repeatable)."),
        slurm_setup: list[str] | None = typer.Option(
            None, metavar="COMMAND", rich_help_panel=_SLURM,
            help="Shell line run before each shard, e.g. 'source .venv/bin/activate' (repeatable).")):
    """Run a suite: check every backend against the float64 reference, time the correct ones, store rows.

    With --executor local or slurm the cases are split into shards run in parallel (through submitit),
    each holding its device for every measurement, and stored as one run."""
    from fffbench.report import print_summary
    from fffbench.runner import RunAborted, RunInterrupted, run_suite
    from fffbench.store import MANIFEST, SUITE_COPY, RunStore
    from fffbench.suite import SuiteError, load_suite

    if suite is None and resume is None:
        _fail("give a SUITE file, or --resume RUN_DIR")
    if executor is not None and executor not in ("inline", "local", "slurm"):
        _fail(f"--executor must be inline, local or slurm, got {executor!r}")
    if device and set(device) - {"cpu", "cuda"}:
        _fail(f"--device must be cpu or cuda, got {', '.join(sorted(set(device) - {'cpu', 'cuda'}))}")
    sharded = resume is not None and (resume / MANIFEST).exists()
    if executor in ("local", "slurm") or sharded:
        from fffbench.cli_shards import run_sharded, slurm_options

        slurm = slurm_options(slurm_partition, slurm_time, slurm_gpus_per_shard, slurm_cpus_per_shard,
                              slurm_account, slurm_extra, slurm_setup)
        run_sharded(suite, out, resume, device or None, executor, shards, shard or None, gpus, slurm, wait,
                    progress, summary, replicate)
        return
    if shards not in (None, 1) or shard or replicate:
        _fail("--shards, --shard and --replicate need --executor local or slurm (or --resume of a sharded run)")
    try:
        if resume is not None:
            shard_of = RunStore.open(resume).env().get("shard")
            if shard_of:  # its suite.yaml is the whole suite: resuming the directory alone would run every case
                _fail(f"{resume} is shard {shard_of.get('index')} of a sharded run; re-run it with: fffbench run "
                      f"--resume {resume.resolve().parent.parent} --shard {shard_of.get('index')}")
        s = load_suite(suite if suite is not None else resume / SUITE_COPY)
        store = run_suite(s, out_root=out, resume=resume, progress=progress, devices=device or None)
    except SuiteError as e:
        _fail(str(e))
    except FileNotFoundError as e:
        _fail(str(e))
    except RunInterrupted as e:
        typer.echo(f"\n{e}; finish it with: fffbench run --resume {e.store.path}", err=True)
        raise typer.Exit(130)
    except RunAborted as e:
        typer.echo(f"\nerror: {e}; finish it with: fffbench run --resume {e.store.path}", err=True)
        raise typer.Exit(1)
    df = store.frame(samples=True)
    if summary:
        print_summary(df, s.comparisons, store.env().get("machine", "?"))
    failed = df[df["status"].isin(["wrong", "error"])]
    typer.echo(f"results: {store.path} ({len(df)} rows: " +
               ", ".join(f"{n} {k}" for k, n in df["status"].value_counts().items()) + ")")
    if len(failed):
        for _, r in failed.iterrows():
            typer.echo(f"  {r['status']}: {r['backend']} on {r['case_id']}: {r['reason']}", err=True)
        raise typer.Exit(1)


@app.command(epilog="Example:\n\n  fffbench validate suites/*.yaml")
def validate(suites: list[Path] = typer.Argument(..., help="Suite YAML files.")):
    """Check suites without running them: keys, types, ranges, backend names, comparisons."""
    from fffbench.runner import plan
    from fffbench.suite import SuiteError, load_suite

    bad = 0
    for path in suites:
        try:
            s = load_suite(path)
        except SuiteError as e:
            typer.echo(f"error: {e}", err=True)
            bad += 1
            continue
        typer.echo(f"{path}: ok ({len(s.cases)} cases, {len(plan(s))} measurements, {len(s.comparisons)} comparisons)")
    if bad:
        raise typer.Exit(2)


@app.command(epilog="Examples:\n\n  fffbench backends\n\n  fffbench backends --json")
def backends(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List every registered backend, its family, paper level, devices, dtypes and availability."""
    from fffbench.registry import list_backends

    df = list_backends()
    if as_json:
        typer.echo(df.to_json(orient="records", indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="fffbench backends")
    for col in ("backend", "family", "level", "device", "dtypes", "available", "reason"):
        t.add_column(col)
    for _, r in df.iterrows():
        t.add_row(r["backend"], r["family"], r["level"], r["device"], r["dtypes"],
                  "yes" if r["available"] else "no", r["reason"])
    Console().print(t)


@app.command(epilog="Example:\n\n  fffbench info > machine.json")
def info():
    """Print the environment record a run would store (CPU, BLAS, GPU, versions, git)."""
    from fffbench.env import collect

    typer.echo(json.dumps(collect(), indent=2, default=str))


from fffbench import cli_reports, cli_shards  # noqa: F401  (register report, plot, compare; merge, shards)


def main():  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    # ``python -m fffbench.cli``: this file runs as __main__, but the other command modules register
    # on the importable ``fffbench.cli``'s app, so run that one (else report, compare... are missing)
    from fffbench.cli import main as _main

    _main()
