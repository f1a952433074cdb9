"""Train-step throughput of the teaching vs the fused attention form, fp32.

    python bench/model_speed.py                 # reference and small presets, batch 64
    python bench/model_speed.py --smoke         # seconds: a check that the script runs

One train step = forward, cross-entropy, backward and an AdamW step on random images. Each
measurement runs in a fresh process (as a training run would), the forms take turns so load
from other processes hits both alike, and the median over rounds is reported.

Each measurement is taken twice: with glibc's default ``malloc``, which returns every buffer
larger than 32 MB to the kernel and page-faults it in again on the next step (the teaching
form's ``(B, heads, N, N)`` scores are 134 MB at batch 64), and with ``malloc`` told to keep
freed memory (``TUNED_MALLOC`` below; jemalloc or tcmalloc do the same).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, markdown_table, record, time_call

import vitlib

TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(4 << 30),  # serve big buffers from the heap, not fresh mmaps
    "MALLOC_TRIM_THRESHOLD_": str(64 << 30),  # and keep freed heap memory for the next step
}


def make_train_step(
    preset: str,
    form: str,
    batch_size: int,
    device: str = "cpu",
    bf16: bool = False,
    compile: bool = False,
    channels_last: bool = False,
    **overrides,
) -> Callable[[], None]:
    """A closure running one AdamW train step of a fresh ``preset`` model on random images.

    ``bf16`` runs forward and loss under ``torch.autocast(dtype=torch.bfloat16)``;
    ``compile`` wraps the model in ``torch.compile`` as training does (the first calls compile it);
    ``channels_last`` stores conv weights and images NHWC, as training's ``--channels_last``.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = vitlib.create_model(preset, attention=form, **overrides).to(
        device, memory_format=layout
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device == "cuda")
    options = {"cpp.dynamic_threads": True} if device == "cpu" else None  # as vitlib.hardware
    forward = torch.compile(model, options=options) if compile else model
    size = model.config.image_size
    images = torch.rand(batch_size, 3, size, size, device=device).to(memory_format=layout)
    labels = torch.randint(0, model.config.num_classes, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def interleaved_seconds(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, timing them in turn so that load hits all alike."""
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(time_call(step, repeats=1, warmup=0))
    return {name: statistics.median(t) for name, t in times.items()}


def seconds_in_fresh_process(
    preset: str, form: str, batch_size: int, steps: int, smoke: bool, env: dict[str, str]
) -> float:
    """Median seconds of ``steps`` train steps, measured by a new Python process."""
    cmd = [sys.executable, __file__, "--worker", preset, form, str(batch_size), str(steps)]
    done = subprocess.run(
        cmd + (["--smoke"] if smoke else []),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def worker(preset: str, form: str, batch_size: int, steps: int, smoke: bool) -> None:
    overrides = {"depth": 1, "dim": 64} if smoke else {}
    step = make_train_step(preset, form, batch_size, **overrides)
    print(time_call(step, repeats=steps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="+", default=["vit_cifar10_patch2_input32", "vit_cifar10_small"]
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps per process (after one warm-up)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="processes per form and allocator")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, batch 4, one step: checks the script runs"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--worker", nargs=4, metavar=("PRESET", "FORM", "BATCH", "STEPS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        preset, form, batch_size, steps = args.worker
        return worker(preset, form, int(batch_size), int(steps), args.smoke)

    presets = args.presets[:1] if args.smoke else args.presets
    batch_size, steps, rounds = (
        (4, 1, 1) if args.smoke else (args.batch_size, args.steps, args.rounds)
    )
    rows = []
    for preset in presets:
        for allocator, env in (("glibc default", {}), ("glibc, keeps freed memory", TUNED_MALLOC)):
            times: dict[str, list[float]] = {"teaching": [], "fused": []}
            for _ in range(rounds):
                for form in times:
                    times[form].append(
                        seconds_in_fresh_process(preset, form, batch_size, steps, args.smoke, env)
                    )
            rate = {form: batch_size / statistics.median(t) for form, t in times.items()}
            ratio = rate["fused"] / rate["teaching"]
            rows.append(
                [
                    preset,
                    batch_size,
                    allocator,
                    f"{rate['teaching']:.1f}",
                    f"{rate['fused']:.1f}",
                    f"{ratio:.2f}x",
                ]
            )
    header = ["model", "batch", "malloc", "teaching img/s", "fused img/s", "fused / teaching"]
    notes = f"median of {rounds} fresh processes x {steps} timed steps per cell; load average {os.getloadavg()[0]:.1f} at the end"
    record(
        "model_speed: train step, fp32" + (" (smoke)" if args.smoke else ""),
        markdown_table(header, rows),
        args.results,
        notes,
    )


if __name__ == "__main__":
    main()
