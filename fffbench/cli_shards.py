"""CLI of sharded runs: ``run --executor local|slurm`` (called from :func:`fffbench.cli.run`),
``merge`` (write a sharded run's merged files) and ``shards`` (shard states, device timelines, the
overlap check and the run's wall time).

Kept apart from :mod:`fffbench.cli` so the default in-process ``run`` stays as it was; submitit is
imported only once a local or Slurm executor is actually used.
"""
from __future__ import annotations

from pathlib import Path

import typer

from fffbench.cli import _fail, app


def slurm_options(partition, time_min, gpus, cpus, account, extra, setup) -> dict:
    """The ``--slurm-*`` options that were given, by :class:`fffbench.shards.launch.SlurmOptions`
    field (a new run fills in the defaults; a resumed one keeps what it recorded for the rest)."""
    parsed = {}
    for item in extra or []:
        key, eq, value = item.partition("=")
        if not key.strip() or key.strip().startswith("-"):
            _fail(f"--slurm-extra takes KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        parsed[key.strip()] = value if eq else True
    given = {"partition": partition, "time_min": time_min, "gpus_per_shard": gpus, "cpus_per_shard": cpus,
             "account": account, "extra": parsed, "setup": list(setup or [])}
    return {k: v for k, v in given.items() if v not in (None, {}, [])}


def run_sharded(suite, out, resume, devices, executor, n, shards, gpus, slurm, wait, progress, summary,
                replicate=False):
    """``fffbench run`` with a local or Slurm executor, or ``--resume`` of a sharded run."""
    from fffbench.runner import RunInterrupted
    from fffbench.shards import launch
    from fffbench.store import SUITE_COPY
    from fffbench.suite import SuiteError, load_suite

    run_dir = resume
    try:
        if resume is None:
            if shards:
                _fail("--shard needs --resume RUN_DIR (it re-runs one shard of an existing run)")
            s = load_suite(suite)
            options = launch.SlurmOptions(**slurm) if executor == "slurm" else None
            run_dir, manifest = launch.create(s, out, n, executor, devices, gpus.split(",") if gpus else None,
                                              options, replicate)
            typer.echo(f"run directory: {run_dir} ({manifest['n_shards']} shards, executor {executor})", err=True)
            outcome = launch.run_shards(run_dir, manifest, list(range(manifest["n_shards"])), executor, wait,
                                        progress)
        else:
            if n is not None or devices or gpus or replicate:
                _fail("--shards, --device, --gpus and --replicate are fixed when a sharded run starts; "
                      "--resume takes --executor, --shard and the --slurm-* options")
            s = load_suite(resume / SUITE_COPY)
            if suite is not None and load_suite(suite).sha256 != s.sha256:
                _fail(f"{suite}:0: differs from the suite of run {resume} (hash mismatch); resume with the run's own "
                      "suite.yaml")
            outcome = launch.resume(resume, executor, shards, slurm, wait, progress)
    except (SuiteError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except ImportError as e:
        _fail(f"{e}; the local and slurm executors need submitit (pip install submitit)")
    except (KeyboardInterrupt, RunInterrupted):
        typer.echo("\ninterrupted" + (f": every stored row is kept; finish it with: fffbench run --resume {run_dir}"
                                       if run_dir else ""), err=True)
        raise typer.Exit(130)
    _conclude(outcome, s, summary)


def _conclude(outcome, suite, summary: bool) -> None:
    from fffbench.report import print_summary
    from fffbench.shards.launch import conclude
    from fffbench.shards.merge import machines
    from fffbench.store import RunStore

    run_dir = outcome.run_dir
    lines = conclude(outcome)
    if not outcome.waited:
        for s in outcome.manifest["shards"]:
            if s["index"] in outcome.shards:
                typer.echo(f"shard {s['index']}: job {s['jobs'][-1]['job_id']} ({len(s['cases'])} cases, "
                           f"{s['rows']} rows)")
        typer.echo(f"submitted to {outcome.executor}; follow with: fffbench shards {run_dir}\n"
                   f"when they are done: fffbench merge {run_dir} && fffbench report {run_dir}")
        return
    if not outcome.shards:
        typer.echo(f"every shard of {run_dir} is finished; nothing to run", err=True)
    store = RunStore.open(run_dir)
    df = store.frame(samples=True)
    if summary and len(df):
        parts = machines(store, df)
        for _, env, rows in parts:
            print_summary(rows, suite.comparisons, env.get("machine", "?"))
    counts = ", ".join(f"{n} {k}" for k, n in df["status"].value_counts().items()) if len(df) else "no rows"
    typer.echo(f"results: {run_dir} ({len(df)} rows: {counts}; {outcome.manifest['n_shards']} shards)")
    failed = df[df["status"].isin(["wrong", "error"])] if len(df) else df
    for _, r in failed.iterrows():
        typer.echo(f"  {r['status']}: {r['backend']} on {r['case_id']}: {r['reason']}", err=True)
    for line in lines:
        typer.echo(line, err=True)
    if lines or len(failed):
        raise typer.Exit(1)


@app.command(epilog="Example:\n\n  fffbench merge results/scaling-20261201-101500-login1")
def merge(run_dir: Path = typer.Argument(..., help="A sharded run directory.")):
    """Write a sharded run's rows and samples, merged from its shards, to RUN_DIR/results.jsonl and
    samples.jsonl (report, compare and plot merge on their own; this is for tools that read the files)."""
    from fffbench.shards.merge import merge as do_merge

    try:
        info = do_merge(run_dir)
    except FileNotFoundError as e:
        _fail(str(e))
    typer.echo(f"merged {info['rows']} rows from {len(info['shards'])} shard(s) "
               f"(hosts: {', '.join(info['hosts']) or 'none yet'}) into {run_dir / 'results.jsonl'}")


@app.command(epilog="Examples:\n\n  fffbench shards results/<run-id>\n\n"
                    "  fffbench shards results/<run-id> --intervals   # every measurement, per device")
def shards(run_dir: Path = typer.Argument(..., help="A run directory (sharded or not)."),
           intervals: bool = typer.Option(False, "--intervals", help="Also list every measurement interval."),
           cases: bool = typer.Option(False, "--cases", help="List each shard's cases.")):
    """Shards of a run (state, rows stored, job), then per device when it was busy, a check that no
    two measurements overlapped on one device (exit 1 if some did), and the run's wall time."""
    from fffbench.shards import plan as shard_plan
    from fffbench.shards.launch import rerun_command
    from fffbench.shards.timeline import render
    from fffbench.store import RunStore

    try:
        store = RunStore.open(run_dir)
    except FileNotFoundError as e:
        _fail(str(e))
    manifest = store.manifest()
    if manifest:
        states = {}
        if any(s["jobs"] and s["jobs"][-1]["executor"] == "slurm" for s in manifest["shards"]):
            try:
                from fffbench.shards.submit import job_states

                states = job_states(manifest, run_dir)
            except ImportError:
                pass
        typer.echo(f"{run_dir}: {manifest['n_shards']} shards, executor {manifest['executor']}")
        for p in shard_plan.progress(run_dir, manifest):
            s = manifest["shards"][p["index"]]
            job = f"job {p['job']}" + (f" ({states[p['index']]})" if p["index"] in states else "") if p["job"] else "-"
            gpu = f", GPU {p['gpu']}" if p["gpu"] is not None else ""
            typer.echo(f"  shard {p['index']}: {p['state']}, {p['done']}/{p['rows']} rows, {p['cases']} cases"
                       f"{gpu}, {job}")
            if cases:
                typer.echo("    " + "\n    ".join(s["case_ids"]))
            if p["state"] != "done":
                again = rerun_command(run_dir, p["index"], manifest["executor"])
                typer.echo(f"    unfinished; to re-run it alone: {again}")
    text, ok = render(store.frame(), show_intervals=intervals, since=(manifest or {}).get("created_at"))
    typer.echo(text)
    if not ok:
        raise typer.Exit(1)
