"""Remake the small committed runs under tests/data/ with ``fffbench run`` (a few seconds of CPU).

    python tests/data/make_runs.py

mini/        suites mini.yaml: read by the report, plot and notebook tests;
cmp-base/    cmp.yaml;
cmp-again/   cmp.yaml once more (same machine, nothing changed: compare must find no regression);
cmp-slow/    cmp.yaml with test-fff-slowable repeating its work 3 times (compare must flag it).

Run directories are renamed to these fixed names; rows keep their original run id.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for the slowable backend

import slowable

from fffbench.cli import app

RUNS = [("mini", "mini.yaml", 1), ("cmp-base", "cmp.yaml", 1), ("cmp-again", "cmp.yaml", 1),
        ("cmp-slow", "cmp.yaml", 3)]


def make(name: str, suite: str, slowdown: int) -> None:
    os.environ[slowable.ENV] = str(slowdown)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            app(["run", str(HERE / suite), "--out", tmp, "--no-progress", "--no-summary"], standalone_mode=False)
        except SystemExit as e:  # exit 1 (wrong rows) must not pass unnoticed
            if e.code:
                raise
        (run,) = Path(tmp).iterdir()
        shutil.rmtree(HERE / name, ignore_errors=True)
        shutil.move(str(run), HERE / name)
    print(f"{name}: {sum(f.stat().st_size for f in (HERE / name).iterdir())} bytes")


if __name__ == "__main__":
    only = set(sys.argv[1:])
    for name, suite, slowdown in RUNS:
        if not only or name in only:
            make(name, suite, slowdown)
