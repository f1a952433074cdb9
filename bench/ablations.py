"""Re-run notebook 07's ablations: every variant of ``vitlib.ablations.VARIANTS`` at equal wall
time on this machine, each with several seeds.

    python bench/ablations.py                          # 5.5 minutes x 9 variants x 2 seeds, ~2 h
    python bench/ablations.py --variants "full model" "no augmentation" --seeds 0 1 2
    python bench/ablations.py --tiny --out /tmp/abl    # seconds: checks that it works

Writes ``ablations.csv`` (one row per run) and ``ablation_curves.csv`` (one row per epoch) to
``--out`` (default: ``vitlib/reference/``, which notebook 07 reads), skipping runs already there,
and appends the summary table to bench/RESULTS.md. Run nothing else meanwhile: other work during a
variant's calibration shrinks its plan (fewer images), and during its training lengthens its wall
time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import add_data_and_results_arguments, markdown_table, record

from vitlib.ablations import VARIANTS, results_dir, run_ablations, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--minutes", type=float, default=5.5,
                        help="wall time per run (default 5.5: at least 5 when the machine is "
                        "a little faster than calibrated)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="default: 0 1")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME",
                        help=f"default: all of {list(VARIANTS)}")  # fmt: skip
    parser.add_argument("--out", default=str(results_dir()), help="folder of the two CSV files")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model, not compiled, 200 test images: seconds per run")  # fmt: skip
    add_data_and_results_arguments(parser)
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    runs, _ = run_ablations(args.minutes, args.seeds, args.out, args.variants, args.datapath,
                            args.tiny)  # fmt: skip
    rows = [[r["variant"], r["seeds"], f"{100 * r['mean']:.2f}",
             f"{100 * r['low']:.2f} - {100 * r['high']:.2f}", f"{100 * r['vs full']:+.2f}",
             f"{r['images']:,.0f}", f"{r['wall_min']:.1f}"] for r in summarize(runs)]  # fmt: skip
    header = ["variant", "seeds", "test acc mean (%)", "lowest - highest (%)", "vs full (points)",
              "images seen per run", "wall per run (min)"]  # fmt: skip
    notes = (
        f"{'TINY model; ' if args.tiny else ''}cpu-quick variants at {args.minutes:g} min each, "
        f"all runs in {Path(args.out) / 'ablations.csv'} (this and earlier invocations); final "
        f"weights on {'200' if args.tiny else 'all 10,000'} test images; load average {load} "
        f"before, {', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    record("ablations" + (" TINY" if args.tiny else ""), markdown_table(header, rows),
           args.results, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
