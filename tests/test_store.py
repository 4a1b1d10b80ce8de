"""The store loses nothing: torn lines, a full disk, a second writer, unreadable files and paths
that cannot be used each get a clean outcome (one line and an exit code, or a run that resumes to
completion holding every planned row and every ok row's samples)."""
import errno
import json
import os
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from fffbench import jsonl
from fffbench.cli import app
from fffbench.runner import plan
from fffbench.session import RunAborted, run_suite
from fffbench.store import RESULTS, RUN_JSON, SAMPLES, RunStore
from fffbench.suite import parse_suite

SMALL = ("name: small\nsweep: {batch: [4, 8, 16], width: 8, threads: 1}\nfff: {depth: [1, 2]}\n"
         "backends: [test-fff-numpy]\ntiming: {budget_s: 0.005, warmup_s: 0, processes: 2}\n")


def _complete(path, suite):
    df = RunStore.open(path).frame(samples=True)
    planned = sorted(t.row_id for t in plan(suite))
    assert sorted(df.row_id) == planned and df.row_id.is_unique
    ok = df[df.status == "ok"]
    assert all(isinstance(s, list) and s for s in ok.samples)
    assert all(len(p) == n for p, n in zip(ok.processes, ok.n_processes))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    suite = parse_suite(SMALL, "small.yaml")
    return suite, run_suite(suite, out_root=tmp_path_factory.mktemp("runs"), ceilings=False)


def _copy(store, tmp_path):
    import shutil

    dst = tmp_path / store.path.name
    shutil.copytree(store.path, dst)
    return dst


def test_a_torn_results_line_is_cut_off_and_its_row_measured_again(small_run, tmp_path):
    suite, store = small_run
    path = _copy(store, tmp_path)
    lines = (path / RESULTS).read_text().splitlines(keepends=True)
    (path / RESULTS).write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a full disk's torn line
    r = CliRunner().invoke(app, ["run", "--resume", str(path), "--no-progress", "--no-summary"])
    assert r.exit_code == 0, r.output
    assert "torn last line" in r.output
    _complete(path, suite)


def test_a_torn_samples_line_makes_its_row_measured_again(small_run, tmp_path):
    suite, store = small_run
    path = _copy(store, tmp_path)
    text = (path / SAMPLES).read_text()
    (path / SAMPLES).write_text(text[: len(text) - 40])  # the last process line loses its end
    r = CliRunner().invoke(app, ["run", "--resume", str(path), "--no-progress", "--no-summary"])
    assert r.exit_code == 0, r.output
    _complete(path, suite)
    env = RunStore.open(path).env()
    assert any("torn" in n for n in env["resumed"][-1]["repairs"])


def test_unreadable_lines_are_reported_not_skipped_in_silence(small_run, tmp_path):
    _, store = small_run
    path = _copy(store, tmp_path)
    with open(path / RESULTS, "ab") as f:
        f.write(b'\xff\xfe not text\n[1, 2, 3]\n"a string"\n')
    problems = RunStore.open(path).problems()
    assert len(problems) == 3 and any("not UTF-8" in p for p in problems) and any("list" in p for p in problems)
    r = CliRunner().invoke(app, ["run", "--resume", str(path), "--no-progress", "--no-summary"])
    assert r.exit_code == 0 and "unreadable: results.jsonl:" in r.output


def test_a_full_disk_mid_run_stops_with_the_resume_hint_and_resume_completes(tmp_path, monkeypatch):
    suite = parse_suite(SMALL, "small.yaml")
    budget = {"left": 6000}
    real_write = os.write

    def write(fd, data):  # the disk fills up after ``left`` bytes of store writes
        if budget["left"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), budget["left"])
        budget["left"] -= n
        return real_write(fd, data[:n])

    monkeypatch.setattr(jsonl.os, "write", write)
    with pytest.raises(RunAborted) as e:
        run_suite(suite, out_root=tmp_path, ceilings=False)
    assert "No space left on device" in str(e.value)
    path = e.value.store.path
    for name in (RESULTS, SAMPLES):  # nothing torn was left behind
        data = (path / name).read_bytes() if (path / name).exists() else b""
        assert not data or data.endswith(b"\n")
    monkeypatch.setattr(jsonl.os, "write", real_write)
    run_suite(suite, resume=path, ceilings=False)
    _complete(path, suite)


def test_a_second_writer_is_refused_with_the_holders_pid(small_run, tmp_path):
    _, store = small_run
    path = _copy(store, tmp_path)
    holder = RunStore.open(path)
    entered, release = threading.Event(), threading.Event()

    def hold():
        with holder.writing():
            entered.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(10)
    try:
        p = subprocess.run([sys.executable, "-m", "fffbench.cli", "run", "--resume", str(path)],
                           capture_output=True, text=True, timeout=120)
    finally:
        release.set()
        t.join()
    assert p.returncode == 2 and "being written by pid" in p.stderr and str(os.getpid()) in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_two_runs_in_the_same_second_get_two_directories(tmp_path):
    from types import SimpleNamespace

    suite = SimpleNamespace(text="x", name="s", path="s.yaml", sha256="0")
    a = RunStore.create(tmp_path, "s-1", {}, suite)
    b = RunStore.create(tmp_path, "s-1", {}, suite)
    assert a.path != b.path and b.path.name == "s-1-2" and b.env()["run_id"] == "s-1-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-1", "s-1-2"]  # no temporary directory left


def test_a_run_directory_is_a_run_or_nothing(tmp_path, monkeypatch):
    from types import SimpleNamespace

    suite = SimpleNamespace(text="x", name="s", path="s.yaml", sha256="0")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jsonl.os, "write", full)
    with pytest.raises(OSError):
        RunStore.create(tmp_path, "s-1", {}, suite)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("what", ["out_is_a_file", "out_read_only", "corrupt_run_json", "run_json_not_object",
                                  "corrupt_manifest", "resume_a_file"])
def test_file_system_and_store_errors_are_one_line(small_run, tmp_path, what):
    _, store = small_run
    suite = tmp_path / "s.yaml"
    suite.write_text(SMALL)
    args = ["run", str(suite), "--out"]
    if what == "out_is_a_file":
        (tmp_path / "f").write_text("x")
        args.append(str(tmp_path / "f"))
    elif what == "out_read_only":
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        if os.access(ro, os.W_OK):  # root ignores permissions: a read-only bind is not available here
            pytest.skip("running as root: permissions do not make a directory read-only")
        args.append(str(ro))
    else:
        path = _copy(store, tmp_path)
        if what == "corrupt_run_json":
            (path / RUN_JSON).write_text('{"run_id": ')
        elif what == "run_json_not_object":
            (path / RUN_JSON).write_text("[1, 2]")
        elif what == "corrupt_manifest":
            (path / "shards.json").write_text("{nope")
        args = ["run", "--resume", str(path if what != "resume_a_file" else path / RESULTS)]
    p = subprocess.run([sys.executable, "-m", "fffbench.cli", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr + p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr + p.stdout


def test_report_and_shards_on_corrupt_files_are_one_line(small_run, tmp_path):
    _, store = small_run
    path = _copy(store, tmp_path)
    (path / "shards.json").write_text('{"shards": 3}')
    for cmd in (["shards", str(path)], ["report", str(path)]):
        p = subprocess.run([sys.executable, "-m", "fffbench.cli", *cmd], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr, p.stderr


def test_slurm_without_slurm_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    suite = tmp_path / "s.yaml"
    suite.write_text(SMALL)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    p = subprocess.run([sys.executable, "-m", "fffbench.cli", "run", str(suite), "--executor", "slurm",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "sbatch" in p.stderr and not (tmp_path / "out").exists()


def test_jsonl_round_trip_and_torn_tail():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.jsonl"
        jsonl.append_line(p, {"a": 1, "b": float("nan")})
        with open(p, "ab") as f:
            f.write(b'{"a": 2')
        lines = jsonl.read_lines(p)
        assert lines.objects == [{"a": 1, "b": None}] and lines.torn_tail
        assert jsonl.cut_torn_tail(p) == len(b'{"a": 2')
        jsonl.append_line(p, {"a": 3})
        assert [o["a"] for o in jsonl.read_lines(p).objects] == [1, 3]
        assert json.loads(p.read_text().splitlines()[-1]) == {"a": 3}
