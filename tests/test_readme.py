"""The README's result tables are generated from the committed runs, never typed by hand."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_match_committed_runs():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_readme_names_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "fffbench run suites/paper.yaml" in text and "python -m pytest -q" in text
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text().replace("python3", "python")
