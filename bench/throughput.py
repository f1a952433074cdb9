"""Train throughput and achieved TFLOP/s: teaching vs fused form, eager vs compiled, fp32 vs bf16,
NCHW vs channels-last memory order.

    python bench/throughput.py                          # reference preset, batch 64 and 128
    python bench/throughput.py --batch-sizes 256 512    # on a GPU
    python bench/throughput.py --smoke                  # seconds: a check that the script runs
    python bench/throughput.py --preset vit_cifar10_small --batch-sizes 128 --forms fused \
        --modes compiled --precisions bf16 --layouts nchw channels_last --repeats 48  # cpu-quick

FLOPs come from the model's own counter (``vitlib.summary.flops_per_image``): a train step is
counted as 3x the forward FLOPs (forward + backward of activations and weights). bf16 rows use
autocast; on a CPU without native bf16 matrix units they may be slower than fp32.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from common import RESULTS, markdown_table, record
from model_speed import interleaved_seconds, make_train_step

import vitlib
from vitlib.summary import flops_per_image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="vit_cifar10_patch2_input32")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument(
        "--forms", nargs="+", default=["teaching", "fused"], choices=["teaching", "fused"]
    )
    parser.add_argument(
        "--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"]
    )
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument(
        "--layouts", nargs="+", default=["nchw"], choices=["nchw", "channels_last"],
        help="memory order of conv weights and images (training's --channels_last)",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed steps per configuration (median)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny model, batch 2, one step each")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    overrides = {"depth": 1, "dim": 32} if args.smoke else {}
    batch_sizes = [2] if args.smoke else args.batch_sizes
    repeats = 1 if args.smoke else args.repeats
    flops = flops_per_image(vitlib.create_model(args.preset, **overrides))
    rows = []
    for batch_size in batch_sizes:
        configs = list(itertools.product(args.forms, args.modes, args.precisions, args.layouts))
        steps = {
            config: make_train_step(
                args.preset,
                config[0],
                batch_size,
                device=args.device,
                bf16=config[2] == "bf16",
                compile=config[1] == "compiled",
                channels_last=config[3] == "channels_last",
                **overrides,
            )
            for config in configs
        }
        seconds = interleaved_seconds(steps, repeats)
        for (form, mode, precision, layout), s in seconds.items():
            rows.append(
                [
                    form,
                    mode,
                    precision,
                    layout,
                    batch_size,
                    f"{batch_size / s:.1f}",
                    f"{3 * flops * batch_size / s / 1e12:.3f}",
                ]
            )
    table = markdown_table(
        ["attention", "mode", "precision", "layout", "batch", "train img/s", "achieved TFLOP/s"],
        rows,
    )
    record(
        f"throughput: {args.preset} on {args.device}" + (" (smoke)" if args.smoke else ""),
        table,
        args.results,
    )


if __name__ == "__main__":
    main()
