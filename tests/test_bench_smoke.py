"""The benchmark scripts run end to end (tiny --smoke settings) and append their results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs a script or a notebook

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_data_pipeline_smoke(cifar_root, tmp_path):
    results = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(BENCH / "data_pipeline.py"), "--smoke", "--data", str(cifar_root)]
    done = subprocess.run(
        cmd + ["--results", str(results)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert "data_pipeline: train augmentation throughput (smoke)" in text
    assert (
        "| PIL per image | cpu | 0 | " in text
        and "| batched on device | cpu | - | 1 | 32 |" in text
    )
    assert "torchvision" in text and "data_pipeline.py --smoke" in text


def run_bench(script: str, *args: str, results: Path) -> str:
    cmd = [sys.executable, str(BENCH / script), "--smoke", "--results", str(results), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return results.read_text()


def test_model_speed_smoke(tmp_path):
    text = run_bench("model_speed.py", results=tmp_path / "RESULTS.md")
    assert "model_speed: train step, fp32 (smoke)" in text
    assert "| vit_cifar10_patch2_input32 | 4 |" in text and "fused / teaching" in text


def test_throughput_smoke(tmp_path):
    text = run_bench(
        "throughput.py",
        "--modes",
        "eager",
        "--precisions",
        "fp32",
        "bf16",
        "--layouts",
        "nchw",
        "channels_last",
        results=tmp_path / "RESULTS.md",
    )
    assert "throughput: vit_cifar10_patch2_input32 on cpu (smoke)" in text
    for form in ("teaching", "fused"):
        for precision in ("fp32", "bf16"):
            for layout in ("nchw", "channels_last"):
                assert f"| {form} | eager | {precision} | {layout} | 2 |" in text


def test_time_to_accuracy_smoke(cifar_root, tmp_path):
    results = tmp_path / "RESULTS.md"
    text = run_bench(
        "time_to_accuracy.py", "--preset", "cpu-quick", "--thresholds", "0.0", "1.01",
        "--datapath", str(cifar_root), results=results,
    )  # fmt: skip
    assert "time_to_accuracy (smoke)" in text
    assert "| 0% | 0." in text and "| 101% | not reached | - |" in text and "| final " in text
    # A finished run can be reported again without training.
    run = tmp_path / "run"
    run_bench(
        "time_to_accuracy.py",
        "--preset",
        "cpu-quick",
        "--out",
        str(run),
        "--datapath",
        str(cifar_root),
        results=results,
    )
    text = run_bench("time_to_accuracy.py", "--run", str(run), results=results)
    assert text.count("time_to_accuracy (smoke)") == 3


def test_shared_cores_smoke(tmp_path):
    text = run_bench("shared_cores.py", results=tmp_path / "RESULTS.md")
    assert "Shared cores: training speed alone vs beside one busy process" in text
    assert "| PyTorch default threads | " in text and "| vitlib CpuThreads | " in text
    assert "beside busy loop: img/s (of alone)" in text
