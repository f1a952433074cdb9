"""bench/train_cpu.py --smoke runs end to end and appends its table to a results file."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs a script or a notebook

BENCH = Path(__file__).parents[1] / "bench" / "train_cpu.py"


def test_train_cpu_smoke(tmp_path, cifar_root):
    results = tmp_path / "RESULTS.md"
    command = [
        sys.executable,
        str(BENCH),
        "--smoke",
        "--variant",
        "cpu-quick",
        "--results",
        str(results),
        "--datapath",
        str(cifar_root),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert "## train_cpu: time-to-accuracy SMOKE" in text
    assert "| budget (min) | variant | epochs (images) | steps | wall (min) |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 0.05 | cpu-quick |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[4]) <= 0.1  # the time budget held: 3 s of training, then the evaluation
    assert int(cells[3]) >= 1  # steps
    assert "train_cpu.py --smoke --variant cpu-quick --results" in text
    subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert results.read_text().count("## train_cpu:") == 2  # appends, keeps the old entry
