"""What users see: the CLI at 80 columns, byte-identical reports, figures that fit a page, the HTML
report in a real browser, and kernels that answer torch with torch."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

import fffbench as fb
from fffbench.cli import app

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "data" / "mini"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _cli(*args, columns=80):
    env = os.environ | {"COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "fffbench.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_backends_table_fits_80_columns_without_cutting_names():
    p = _cli("backends")
    assert p.returncode == 0, p.stderr
    assert all(len(line) <= 80 for line in p.stdout.splitlines())
    cells = {c.strip() for line in p.stdout.splitlines() for c in line.split("│")}
    assert set(fb.list_backends().backend) <= cells


@pytest.mark.parametrize("command", ["run", "report", "compare", "validate", "shards"])
def test_help_fits_80_columns_and_names_its_values(command):
    p = _cli(command, "--help")
    assert p.returncode == 0
    assert all(len(line) <= 80 for line in p.stdout.splitlines())
    assert "<bool>" not in p.stdout and "<str>" not in p.stdout and "<path>" not in p.stdout


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_reports_of_the_same_data_are_byte_identical(tmp_path):
    for k in ("a", "b"):
        for fmt in ("md", "html"):
            r = CliRunner().invoke(app, ["report", str(MINI), "--format", fmt, "--out", str(tmp_path / k), "--no-show"])
            assert r.exit_code == 0, r.output
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and {"report.md", "report.html", "speedups.svg", "speedups.png"} <= set(a)
    assert "<dc:date>" not in (tmp_path / "a" / "speedups.svg").read_text()


def test_figures_of_several_runs_stay_within_1600_pixels(tmp_path):
    runs = [tmp_path / f"r{k}" for k in range(5)]
    for r in runs:
        shutil.copytree(MINI, r)
    res = CliRunner().invoke(app, ["plot", *map(str, runs), "--out", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    for png in (tmp_path / "plots").glob("*.png"):
        h, w = imread(png).shape[:2]
        assert w <= 1600, (png.name, w)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_report_renders_in_headless_chromium(tmp_path):
    r = CliRunner().invoke(app, ["report", str(MINI), "--format", "html", "--out", str(tmp_path), "--no-show"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "report.html").as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1400,2000", f"--screenshot={shot}", page], capture_output=True, timeout=120)
    img = imread(shot)
    assert img.shape[1] == 1400 and float(np.std(img[..., :3])) > 0.05   # drawn, not blank
    dom = subprocess.run(flags + ["--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") >= 10 and "Table 2" in dom and dom.count("<svg") == 3
    assert "Environment" in dom and "Rows not timed" in dom


def test_a_kernel_answers_torch_with_torch_and_numpy_with_numpy():
    import torch

    layer = fb.FFF(width=16, depth=3)
    w = layer.init_weights(0)
    k = fb.get_backend("fff-gather").build(layer, w, device="cpu", dtype="float32")
    x = fb.make_input("gaussian", 8, 16)
    y_np = k(x)
    y_t = k(torch.from_numpy(x))
    assert isinstance(y_np, np.ndarray) and isinstance(y_t, torch.Tensor) and y_t.device.type == "cpu"
    np.testing.assert_allclose(y_t.numpy(), y_np, rtol=1e-6)
    c = fb.get_backend("fff-c-l1")
    if c.unavailable_reason("cpu") is None:
        out = c.build(layer, w, device="cpu", dtype="float32")(torch.from_numpy(x))
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), y_np, rtol=1e-4, atol=1e-5)
