"""Sharded runs on the command line: ``run --executor local|slurm`` (called from
:mod:`fffbench.cli.run`), ``merge`` (write a sharded run's merged files) and ``shards`` (shard
states, device timelines, the overlap check, busy fractions and the run's speed-up).

submitit is imported only once a local or Slurm executor is actually used.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import typer

from fffbench.cli.app import app, fail, fail_os


def slurm_options(partition, time_min, gpus, cpus, account, extra, setup) -> dict:
    """The ``--slurm-*`` options that were given, by :class:`fffbench.shards.slurm.SlurmOptions`
    field (a new run fills in the defaults; a resumed one keeps what it recorded for the rest)."""
    parsed = {}
    for item in extra or []:
        key, eq, value = item.partition("=")
        if not key.strip() or key.strip().startswith("-"):
            fail(f"--slurm-extra takes KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        parsed[key.strip()] = value if eq else True
    given = {"partition": partition, "time_min": time_min, "gpus_per_shard": gpus, "cpus_per_shard": cpus,
             "account": account, "extra": parsed, "setup": list(setup or [])}
    return {k: v for k, v in given.items() if v not in (None, {}, [])}


def _check_executor(executor: str | None) -> None:
    """Refuse before anything is made when the executor cannot work here."""
    if executor == "slurm" and shutil.which("sbatch") is None:
        fail("--executor slurm: Slurm's sbatch is not on PATH (run from a login node of the cluster)")
    if executor in ("local", "slurm"):
        try:
            import submitit  # noqa: F401
        except ImportError:
            fail("the local and slurm executors need submitit (pip install submitit)")


def run_sharded(suite, out, resume, devices, executor, n, shards, gpus, slurm, wait, progress, summary,
                replicate=False, max_cases: int = 100_000, costs_from=None):
    """``fffbench run`` with a local or Slurm executor, or ``--resume`` of a sharded run."""
    from fffbench.cli.summary import load_checked
    from fffbench.shards import launch
    from fffbench.shards.slurm import SlurmOptions
    from fffbench.store import SUITE_COPY, StoreError
    from fffbench.suite import SuiteError, load_suite

    run_dir = resume
    _check_executor(executor)
    try:
        if resume is None:
            if shards:
                fail("--shard needs --resume RUN_DIR (it re-runs one shard of an existing run)")
            s = load_checked(suite, None, devices, max_cases)
            options = SlurmOptions(**slurm) if executor == "slurm" else None
            run_dir, manifest = launch.create(s, out, n, executor, devices, gpus.split(",") if gpus else None,
                                              options, replicate, costs_from)
            typer.echo(f"run directory: {run_dir} ({manifest['n_shards']} shards, executor {executor})")
            outcome = launch.run_shards(run_dir, manifest, list(range(manifest["n_shards"])), executor, wait,
                                        progress)
        else:
            if n is not None or devices or gpus or replicate or costs_from:
                fail("--shards, --device, --gpus, --replicate and --costs-from are fixed when a sharded run starts; "
                     "--resume takes --executor, --shard and the --slurm-* options")
            s = load_suite(resume / SUITE_COPY)
            if suite is not None and load_suite(suite).sha256 != s.sha256:
                fail(f"{suite}:0: differs from the suite of run {resume} (hash mismatch); resume with the run's own "
                     "suite.yaml")
            outcome = launch.resume(resume, executor, shards, slurm, wait, progress)
    except (SuiteError, StoreError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail_os(e, str(out))
    except KeyboardInterrupt:
        typer.echo("\ninterrupted" + (f": every stored row is kept; finish it with: fffbench run --resume {run_dir}"
                                       if run_dir else ""), err=True)
        raise typer.Exit(130) from None
    _conclude(outcome, s, summary)


def _conclude(outcome, suite, summary: bool) -> None:
    from fffbench.cli.summary import conclude
    from fffbench.console import print_summary
    from fffbench.shards.launch import conclude as conclude_shards
    from fffbench.shards.merge import machines
    from fffbench.store import RunStore

    run_dir = outcome.run_dir
    lines = conclude_shards(outcome)
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
        for _, env, rows in machines(store, df):
            print_summary(rows, suite.comparisons, env.get("machine", "?"))
    conclude(store, suite, False, df, lines)


@app.command(epilog="Example:\n\n  fffbench merge results/scaling-20261201-101500-login1")
def merge(run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A sharded run directory.")):
    """Write a sharded run's rows and samples, merged from its shards, to RUN_DIR/results.jsonl and
    samples.jsonl (report, compare and plot merge on their own; this is for tools that read the files)."""
    from fffbench.shards.merge import merge as do_merge
    from fffbench.store import StoreError

    try:
        info = do_merge(run_dir)
    except (FileNotFoundError, StoreError) as e:
        fail(str(e))
    except OSError as e:
        fail_os(e, str(run_dir))
    typer.echo(f"merged {info['rows']} rows from {len(info['shards'])} shard(s) "
               f"(hosts: {', '.join(info['hosts']) or 'none yet'}) into {run_dir / 'results.jsonl'}")


@app.command(epilog="Examples:\n\n  fffbench shards results/<run-id>\n\n"
                    "  fffbench shards results/<run-id> --intervals   # every measurement, per device")
def shards(run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory (sharded or not)."),
           intervals: bool = typer.Option(False, "--intervals", help="Also list every measurement interval."),
           cases: bool = typer.Option(False, "--cases", help="List each shard's cases.")):
    """Shards of a run (state, rows stored, job), then per device when it was busy and its busy
    fraction, a check that no two measurements overlapped on one device (exit 1 if some did), and
    the run's wall time against the sum of its measurements."""
    from fffbench.shards import plan as shard_plan
    from fffbench.shards.launch import rerun_command
    from fffbench.shards.timeline import render
    from fffbench.store import RunStore, StoreError

    try:
        store = RunStore.open(run_dir)
        manifest = store.manifest()
        if manifest:
            _print_shards(run_dir, manifest, cases, shard_plan, rerun_command)
        text, ok = render(store.frame(), show_intervals=intervals, since=(manifest or {}).get("created_at"))
    except (FileNotFoundError, StoreError) as e:
        fail(str(e))
    except (KeyError, TypeError) as e:
        fail(f"{Path(run_dir) / 'shards.json'}: not a shard manifest ({type(e).__name__}: {e})")
    except OSError as e:
        fail_os(e, str(run_dir))
    typer.echo(text)
    if not ok:
        raise typer.Exit(1)


def _print_shards(run_dir, manifest, cases, shard_plan, rerun_command) -> None:
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
        typer.echo(f"  shard {p['index']}: {p['state']}, {p['done']}/{p['rows']} rows, {p['cases']} cases{gpu}, {job}")
        if cases:
            typer.echo("    " + "\n    ".join(s["case_ids"]))
        if p["state"] != "done":
            typer.echo(f"    unfinished; to re-run it alone: {rerun_command(run_dir, p['index'], manifest['executor'])}")
