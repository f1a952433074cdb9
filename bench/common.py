"""Shared by the benchmarks: timing, the machine's description, the results file, and what the
runs measure after training (train_cpu.py, ablations.py)."""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vitlib.config import TEST_SIZE
from vitlib.data import load_cifar10
from vitlib.evaluate import evaluate_model, load_model
from vitlib.hardware import autocast_dtype

RESULTS = Path(__file__).with_name("RESULTS.md")
REPO = Path(__file__).resolve().parents[1]
CURVE_TEST_IMAGES = 2_000  # evaluated after every epoch; a final evaluation uses all 10,000
# Kept of a time budget for the final evaluation on all 10,000 test images: it took about 7 s on
# the 2-core machines of bench/RESULTS.md (bf16), plus loading the checkpoint and the test set.
FINAL_EVAL_S = 15.0


def hardware() -> str:
    """One line naming the CPU (and GPU, if any) this process runs on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()}"
    return text


def software() -> str:
    import torchvision

    return f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def add_data_and_results_arguments(parser: argparse.ArgumentParser) -> None:
    """``--datapath`` (default: ``$VITLIB_DATA``) and ``--results`` (default: RESULTS.md)."""
    parser.add_argument("--datapath", default=None,
                        help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to append to")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, table: str, results: Path = RESULTS, notes: str = "") -> None:
    """Print ``table`` and append it to the results file with date, machine and command."""
    print(table)
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO):  # the same command from whatever directory it ran in
        script = script.relative_to(REPO)
    command = "python " + " ".join(shlex.quote(arg) for arg in [str(script), *sys.argv[1:]])
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"\n## {title} ({stamp})\n\n- hardware: {hardware()}\n- software: {software()}\n"
        f"- command: `{command}`\n" + (f"- notes: {notes}\n" if notes else "") + f"\n{table}\n"
    )
    if not results.exists():
        results.write_text(
            "# Benchmark results\n\nAppended by the scripts in `bench/`; newest last.\n"
        )
    with results.open("a") as f:
        f.write(section)
    print(f"appended to {results}")


def final_eval_reserve_s(test_images: int) -> float:
    """Seconds of a time budget kept for evaluating ``test_images`` at the end (``FINAL_EVAL_S``
    for all 10,000)."""
    return FINAL_EVAL_S * test_images / TEST_SIZE


def final_accuracy(
    run_dir: Path, datapath: str | None, test_images: int, tta: bool = False
) -> float:
    """Test accuracy of a run's final weights (``run_dir/last.pt``) on the first ``test_images``
    test images, in the run's precision (``tta``: averaged with the mirror image)."""
    model, state = load_model(run_dir / "last.pt")
    images, labels = load_cifar10(datapath, "test", limit=test_images)
    dtype = autocast_dtype(state["config"]["precision"], torch.device("cpu"))
    return evaluate_model(model, images, labels, tta=tta, autocast_dtype=dtype)["accuracy"]


def train_images_per_s(history: list[dict], batch_size: int) -> float:
    """A run's training speed: its training images over the seconds its epochs spent on them
    (each epoch's ``train_images_per_s``; evaluations and start-up left out)."""
    steps = [0] + [epoch["step"] for epoch in history]
    seconds = sum((after - before) * batch_size / epoch["train_images_per_s"]
                  for epoch, before, after in zip(history, steps, steps[1:]))  # fmt: skip
    return steps[-1] * batch_size / seconds
