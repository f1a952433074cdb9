"""Train-augmentation throughput: the per-image PIL path vs the batched on-device path.

    python bench/data_pipeline.py --data DIR            # batch 512, 20 batches per path
    python bench/data_pipeline.py --smoke --results /tmp/r.md   # seconds: the script runs

Both paths run the full RECIPE.md train augmentation (TrivialAugmentWide, flip, padded crop,
to float, random erasing) and yield float batches:
- "PIL": ``make_cpu_loader`` (``bench/pil_loader.py``, the reference run's path), a torch
  DataLoader applying torchvision transforms to one PIL image at a time, with 0 and 2 workers
  (worker start-up is part of its time, as it would be in every epoch of training);
- "batched": ``vitlib.data.DeviceLoader``, the uint8 set resident on the device and
  ``vitlib.augment.TrainAugment`` applied to whole batches, on the CPU (and CUDA if present).
Images/s = images yielded / wall seconds to iterate ``--batches`` batches; the median of
``--repeats`` epochs is reported. The batched CPU path is timed with 1 torch thread and with
torch's default: when other processes load the cores, multi-threaded small ops slow down sharply.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import RESULTS, markdown_table, record
from pil_loader import make_cpu_loader

from vitlib.data import DeviceLoader, load_cifar10


def images_per_second(loader, repeats: int, sync) -> float:
    """Median over ``repeats`` epochs of images yielded per wall second."""
    rates = []
    for epoch in range(repeats):
        loader.set_epoch(epoch)
        sync()
        start = time.perf_counter()
        count = sum(len(y) for _, y in loader)
        sync()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(
    images, labels, batch_size: int, workers: list[int], threads: list[int], repeats: int
) -> list[list]:
    """Rows (path, device, workers, torch threads, images/s) for every configuration."""
    default_threads = torch.get_num_threads()
    rows = []
    for w in workers:
        loader = make_cpu_loader(images, labels, batch_size, train=True, num_workers=w)
        rate = images_per_second(loader, repeats, lambda: None)
        rows.append(["PIL per image", "cpu", w, default_threads, rate])
    configs = [("cpu", t) for t in threads] + (
        [("cuda", default_threads)] if torch.cuda.is_available() else []
    )
    for device, t in configs:
        torch.set_num_threads(t)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        loader = DeviceLoader(images, labels, batch_size, train=True, device=device)
        images_per_second(loader, 1, sync)  # warm-up (allocator, CUDA kernels)
        rows.append(["batched on device", device, "-", t, images_per_second(loader, repeats, sync)])
    torch.set_num_threads(default_threads)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)"
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per path (median)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="PIL DataLoader workers"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, torch.get_num_threads()}),
        help="torch CPU threads for the batched path (oversubscribed threads collapse its speed)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run: batch 32, 2 batches, 0 workers, 1 thread"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to append to")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.batches, args.repeats, args.workers, args.threads = 32, 2, 1, [0], [1]

    images, labels = load_cifar10(args.data, "train", limit=args.batch_size * args.batches)
    rows = measure(images, labels, args.batch_size, args.workers, args.threads, args.repeats)
    pil = rows[0][-1]
    header = ["path", "device", "workers", "threads", "batch", "images/s"]
    header.append(f"vs PIL, {args.workers[0]} workers")
    cells = [[*r[:4], args.batch_size, f"{r[4]:,.0f}", f"{r[4] / pil:.1f}x"] for r in rows]
    table = markdown_table(header, cells)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    notes = (
        f"{len(images)} train images, {args.batches} batches of {args.batch_size} per epoch, "
        f"median of {args.repeats} epochs; {os.cpu_count()} CPU cores, load average {load} "
        "at the end (shared machine: timings are noisy)"
    )
    title = "data_pipeline: train augmentation throughput" + (" (smoke)" if args.smoke else "")
    record(title, table, args.results, notes)


if __name__ == "__main__":
    main()
