"""Wall time to given test accuracies, and the final accuracy, of a training run.

    python bench/time_to_accuracy.py --preset fast                      # GPU: 90/94/96%
    python bench/time_to_accuracy.py --preset cpu-quick --thresholds 0.5 0.7 0.8
    python bench/time_to_accuracy.py --run runs/fast                    # a finished run
    python bench/time_to_accuracy.py --preset cpu-quick --smoke         # seconds: a check

With ``--preset`` the run is trained first (any further flags go to ``python -m vitlib.train``);
with ``--run`` its ``metrics.csv`` is read. Time is the wall time of the epochs (training and
evaluation) up to the first epoch whose test accuracy reaches each threshold; start-up
(loading data, compiling) is not counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from common import RESULTS, markdown_table, record

from vitlib.train import main as train_main

SMOKE_FLAGS = ["--epochs", "1", "--train_limit", "256", "--test_limit", "128", "--batch_size", "64",
               "--model_overrides", "depth=1", "dim=32", "head_channels=16", "--progress_bar", "off",
               "--no-compile"]  # fmt: skip


def crossings(
    rows: list[dict[str, str]], thresholds: list[float]
) -> list[tuple[float, float | None, int | None]]:
    """For each threshold: (threshold, seconds until first reached or None, that epoch or None)."""
    out = []
    for threshold in thresholds:
        elapsed, hit = 0.0, None
        for row in rows:
            elapsed += float(row["seconds"])
            if float(row["test_acc"]) >= threshold:
                hit = (elapsed, int(row["epoch"]))
                break
        out.append((threshold, *(hit or (None, None))))
    return out


def report(run: Path, thresholds: list[float], results: Path, smoke: bool) -> None:
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{run / 'metrics.csv'} has no epochs yet: nothing to report")
    config = json.loads((run / "config.json").read_text())
    table_rows = [
        [f"{100 * t:g}%", "not reached" if s is None else f"{s / 60:.1f}", epoch or "-"]
        for t, s, epoch in crossings(rows, thresholds)
    ]
    total = sum(float(r["seconds"]) for r in rows)
    table_rows.append(
        [f"final {100 * float(rows[-1]['test_acc']):.2f}%", f"{total / 60:.1f}", rows[-1]["epoch"]]
    )
    notes = (
        f"preset {config.get('preset')}, model {config.get('model')}, {config.get('epochs')} epochs planned, "
        f"batch {config.get('batch_size')}, device {config.get('device')}, precision {config.get('precision')}, "
        f"compile {config.get('compile')}, test images: {config.get('test_limit') or 10_000}; run directory {run}"
    )
    title = "time_to_accuracy" + (" (smoke)" if smoke else "")
    record(
        title,
        markdown_table(["test accuracy", "wall minutes", "epoch"], table_rows),
        results,
        notes,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="train this preset first (extra flags go to vitlib.train)")
    source.add_argument("--run", type=Path, help="report on this finished run directory")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.90, 0.94, 0.96])
    parser.add_argument("--smoke", action="store_true", help="a tiny model for one short epoch")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args, train_flags = parser.parse_known_args(argv)
    if args.run:
        if train_flags:
            parser.error(f"unrecognized arguments with --run: {' '.join(train_flags)}")
        return report(args.run, args.thresholds, args.results, args.smoke)
    with tempfile.TemporaryDirectory() as scratch:
        if "--out" not in train_flags:
            train_flags += ["--out", str(Path(scratch) / "run")]
        train_flags += SMOKE_FLAGS if args.smoke else []
        if train_main(["--preset", args.preset, *train_flags]) != 0:
            raise SystemExit("training failed; see the messages above")
        out = Path(train_flags[train_flags.index("--out") + 1])
        report(out, args.thresholds, args.results, args.smoke)


if __name__ == "__main__":
    main()
