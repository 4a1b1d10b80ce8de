"""Suite parsing: the shipped suites are valid, every bad suite gets a one-line file:line error."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fffbench.runner import plan
from fffbench.suite import SuiteError, load_suite, parse_suite

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((ROOT / "tests" / "bad_suites").glob("*.yaml"))


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_are_valid(path):
    s = load_suite(path)
    assert s.cases and s.backends and plan(s)


def test_paper_suite_is_the_paper_setting():
    s = load_suite(ROOT / "suites" / "paper.yaml")
    fff = [c for c in s.cases if c.family == "fff"]
    ff = [c for c in s.cases if c.family == "ff"]
    assert {c.batch for c in s.cases} == {16384} and {c.width for c in s.cases} == {768}
    assert {(c.depth, c.trees) for c in fff} == {(11, 1)}
    assert {c.hidden for c in ff} == {3072, 4095, 4096}
    assert {c.device for c in s.cases} == {"cpu", "cuda"}
    figures = {c.figure for c in s.comparisons}
    assert {"cpu-78x", "gpu-bmm-40x"} <= figures


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_suite_error_names_file_and_line(path):
    expect = re.match(r"# expect: (\d+): (.*)", path.read_text().splitlines()[0])
    line, message = int(expect.group(1)), expect.group(2)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert message in str(e.value)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_suite_cli_exit_2_one_line_no_traceback(path):
    p = subprocess.run([sys.executable, "-m", "fffbench.cli", "validate", str(path)], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:") and "Traceback" not in p.stderr + p.stdout


def test_cli_run_of_bad_suite_exits_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fffbench.cli", "run", str(BAD[0]), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and not list(tmp_path.iterdir())


def test_missing_file_is_a_suite_error(tmp_path):
    with pytest.raises(SuiteError, match="cannot read suite"):
        load_suite(tmp_path / "nope.yaml")


def test_expansion_and_defaults():
    s = parse_suite("name: t\nsweep: {batch: [1, 2], dtype: [float32, bfloat16], threads: 1}\n"
                    "ff: {hidden: [4, 8]}\nfff: {depth: [0, 2], trees: [1, 3]}\nbackends: [ff-dense, fff-bmm]\n")
    assert len(s.cases) == (2 + 4) * 2 * 2
    assert {c.width for c in s.cases} == {768} and {c.threads for c in s.cases} == {1}
    assert parse_suite("name: t\nbackends: [ff-dense]\nff: {hidden: 4}\n").cases[0].threads == "all"
    assert len({c.case_id for c in s.cases}) == len(s.cases)
    assert len(plan(s)) == len(s.cases)  # one backend per family, one CPU regime
