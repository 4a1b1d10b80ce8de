"""Hostile suites: every one is refused in one line naming the file and the line, with exit 2 and
no traceback, quickly and without using much memory (an alias bomb, a sweep of 10^9 cases, a tree
of depth 40, tags, merge keys, complex keys, deep nesting, bytes that are not UTF-8, timing values
that would hang or crash a run, thread counts no machine has, names no file system holds)."""
import resource
import subprocess
import sys
import time

import pytest

from fffbench.suite import SuiteError, parse_suite

BASE = "name: h\nbackends: [ff-dense, fff-bmm]\nff: {hidden: 8}\nfff: {depth: 1}\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

CASES = {
    # name: (text or bytes, expected line, part of the message)
    "alias_bomb": (BOMB + BASE, 1, "expands to more than"),
    "huge_sweep": (BASE + "sweep:\n  batch: [" + ", ".join(str(i) for i in range(1, 1001)) + "]\n"
                   "  seed: [" + ", ".join(str(i) for i in range(1000)) + "]\n", 6, "at most 100,000 are run"),
    "depth_40": ("name: h\nbackends: [fff-bmm]\nfff: {depth: 40}\n", 3, "needs about"),
    "huge_hidden": ("name: h\nbackends: [ff-dense]\nff: {hidden: 1000000000000}\n", 3, "needs about"),
    "python_tag": (BASE + "description: !!python/object:os.system ls\n", 5, "tag"),
    "custom_tag": ("name: !secret h\nbackends: [ff-dense]\nff: {hidden: 8}\n", 1, "tag"),
    "binary_tag": (BASE + "description: !!binary aGVsbG8=\n", 5, "tag"),
    "merge_key": ("base: &b {hidden: 8}\nname: h\nbackends: [ff-dense]\nff:\n  <<: *b\n", 5, "merge keys"),
    "complex_key": ("name: h\nbackends: [ff-dense]\nff: {hidden: 8}\n? [a, b]\n: 1\n", 4, "plain value"),
    "deep_nesting": ("name: h\nbackends: [ff-dense]\nff: {hidden: 8}\ndescription: " + "[" * 5000 + "]" * 5000 + "\n",
                     1, "nesting"),
    "not_utf8": (b"name: h\nbackends: [ff-dense]\nff: {hidden: 8}\ndescription: caf\xff\n", 4, "not UTF-8"),
    "warmup_inf": (BASE + "timing: {warmup_s: .inf}\n", 5, "finite"),
    "budget_nan": (BASE + "timing: {budget_s: .nan}\n", 5, "finite"),
    "threads_huge": (BASE + "sweep: {threads: 100000}\n", 5, "between 1 and"),
    "long_name": ("name: " + "x" * 300 + "\nbackends: [ff-dense]\nff: {hidden: 8}\n", 1, "at most 64"),
    "name_with_slash": ("name: a/b\nbackends: [ff-dense]\nff: {hidden: 8}\n", 1, "'name' must be"),
    "processes_zero": (BASE + "timing: {processes: 0}\n", 5, "between 1 and"),
    "paper_inline": (BASE + "comparisons:\n  - {label: x, numerator: ff-dense, denominator: fff-bmm, "
                     "paper: {value: 78}}\n", 6, "figure: KEY"),
    "unknown_figure": (BASE + "comparisons:\n  - {figure: cpu-1000x}\n", 6, "unknown figure"),
    "figure_disagrees": ("name: h\nbackends: [ff-c-l3, fff-bmm]\nff: {hidden: 8}\nfff: {depth: 1}\n"
                         "comparisons:\n  - {figure: cpu-78x, hidden: 3072}\n", 6, "defines 'hidden' as 4095"),
    "huge_file": ("name: h\nbackends: [ff-dense]\nff: {hidden: 8}\ndescription: '" + "x" * (1 << 21) + "'\n", 1,
                  "at most"),
    "list_as_key": ("name: h\nbackends: [ff-dense]\nff: {hidden: 8}\nsweep: {[1]: 2}\n", 4, "plain value"),
    "number_name": ("name: 7\nbackends: [ff-dense]\nff: {hidden: 8}\n", 1, "'name' must be"),
    "null_backend": ("name: h\nbackends: [null]\nff: {hidden: 8}\n", 2, "unknown backend"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_suite_is_refused_in_one_line(name, tmp_path):
    text, line, message = CASES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    t0, mem0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SuiteError) as e:
        parse_suite(path.read_bytes(), str(path))
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - mem0) / 1024
    assert time.perf_counter() - t0 < 5 and grew_mb < 500
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: ") and message in msg and "\n" not in msg


@pytest.mark.parametrize("name", ["alias_bomb", "not_utf8", "deep_nesting", "huge_sweep", "depth_40"])
def test_hostile_suite_cli_exit_2_without_traceback(name, tmp_path):
    text, line, _ = CASES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    for cmd in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "out")]):
        p = subprocess.run([sys.executable, "-m", "fffbench.cli", *cmd], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}:{line}:"), p.stderr
        assert "Traceback" not in p.stderr + p.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_validate_checks_every_file(tmp_path):
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text("name: h\nbackends: [nope]\n")
    good.write_text(BASE)
    p = subprocess.run([sys.executable, "-m", "fffbench.cli", "validate", str(bad), str(good), str(bad)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("error:") == 2 and f"{good}: ok" in p.stdout


def test_max_cases_can_be_raised():
    text = BASE + "sweep: {seed: [" + ", ".join(str(i) for i in range(60)) + "]}\n"
    with pytest.raises(SuiteError, match="at most 100"):
        parse_suite(text, "s.yaml", max_cases=100)
    assert len(parse_suite(text, "s.yaml", max_cases=200).cases) == 120
