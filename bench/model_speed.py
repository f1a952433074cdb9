"""Train-step throughput of the teaching vs the fast attention form.

    python bench/model_speed.py                 # reference and small presets, batch 64, fp32
    python bench/model_speed.py --smoke         # seconds: a check that the script runs

One train step = forward, cross-entropy, backward and an AdamW step on random images. The
forms alternate, so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, markdown_table, record, time_call

import vitlib


def make_train_step(
    preset: str,
    form: str,
    batch_size: int,
    device: str = "cpu",
    bf16: bool = False,
    compile: bool = False,
    **overrides,
) -> Callable[[], None]:
    """A closure running one AdamW train step of a fresh ``preset`` model on random images.

    ``bf16`` runs forward and loss under ``torch.autocast(dtype=torch.bfloat16)``;
    ``compile`` wraps the model in ``torch.compile`` (the first calls compile it).
    """
    model = vitlib.create_model(preset, attention=form, **overrides).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device == "cuda")
    forward = torch.compile(model) if compile else model
    size = model.config.image_size
    images = torch.rand(batch_size, 3, size, size, device=device)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="+", default=["vit_cifar10_patch2_input32", "vit_cifar10_small"]
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed steps per form (median reported)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, batch 4, one step: checks the script runs"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    overrides = {"depth": 1, "dim": 64} if args.smoke else {}
    presets = args.presets[:1] if args.smoke else args.presets
    batch_size, repeats = (4, 1) if args.smoke else (args.batch_size, args.repeats)
    rows = []
    for preset in presets:
        steps = {
            form: make_train_step(preset, form, batch_size, **overrides)
            for form in ("reference", "fast")
        }
        seconds = interleaved_seconds(steps, repeats)
        rate = {form: batch_size / s for form, s in seconds.items()}
        rows.append(
            [
                preset,
                batch_size,
                f"{rate['reference']:.1f}",
                f"{rate['fast']:.1f}",
                f"{rate['fast'] / rate['reference']:.2f}x",
            ]
        )
    table = markdown_table(
        ["preset", "batch", "teaching img/s", "fast img/s", "fast / teaching"], rows
    )
    record(
        "model_speed: train step, fp32" + (" (smoke)" if args.smoke else ""), table, args.results
    )


if __name__ == "__main__":
    main()
