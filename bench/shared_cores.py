"""Training speed alone vs sharing the CPU cores with one other busy process, in one run.

    python bench/shared_cores.py                 # about 7 minutes
    python bench/shared_cores.py --compile       # compiled, as cpu-quick trains (about 13 minutes)
    python bench/shared_cores.py --smoke         # seconds: a check that the script runs

The measured process runs train steps of the ``cpu-quick`` model (bf16 autocast, batch 128,
random images) and reports images/s over ``--seconds``, after ``--settle`` seconds of steps
(vitlib looks at the machine every 5 s). It runs alone, then beside one competitor started at
the same moment:

- ``torch``: another PyTorch process doing the same with PyTorch's default thread count (what
  a plain script or a test run does);
- ``vitlib``: the same, as vitlib's training loop runs it (``vitlib.hardware.CpuThreads``);
- ``busy loop``: one pure-Python thread that never sleeps.

The measured process runs once with PyTorch's default thread count (one per core) and once as
vitlib's training loop does, with ``CpuThreads`` using only the cores others leave free. The
fair share beside one competitor is 50% of the alone speed. Appends the table to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
MODES = ("PyTorch default threads", "vitlib CpuThreads")
# A compiled model is compiled again the first time CpuThreads changes the thread count (dynamo
# guards on it: "GLOBAL_STATE changed: num_threads"), about 20 s on 2 shared cores, once per
# thread count in a run. The untimed start covers both compilations: the table is the speed after.
COMPILED_SETTLE_S = 60.0
COMPETITORS = ("torch", "vitlib", "busy loop")


def worker(settle: float, seconds: float, mode: str, smoke: bool, compile: bool) -> None:
    """Train for ``settle + seconds`` and print {"images_per_s": ...} of the last ``seconds``."""
    sys.path.insert(0, str(SCRIPT.parent))
    from model_speed import make_train_step

    from vitlib.hardware import CpuThreads

    overrides = {"depth": 1, "dim": 32, "head_channels": 16} if smoke else {}
    batch = 16 if smoke else 128
    step = make_train_step(
        "vit_cifar10_small", "fused", batch, bf16=True, compile=compile, **overrides
    )
    threads = CpuThreads(every=1.0 if smoke else 5.0) if mode == MODES[1] else None

    def train_until(stop: float) -> int:
        """Steps (at least one) until ``perf_counter()`` passes ``stop``."""
        steps = 0
        while steps == 0 or time.perf_counter() < stop:
            step()
            steps += 1
            if threads is not None:
                threads.update()
        return steps

    train_until(time.perf_counter() + settle)
    start = time.perf_counter()
    steps = train_until(start + seconds)
    print(json.dumps({"images_per_s": steps * batch / (time.perf_counter() - start)}))


def busy_loop(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def spawn(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE, text=True, env=env
    )


def measure(mode: str, competitor: str | None, settle: float, seconds: float, flags: list[str]):
    """Images/s of one measured worker, alone or beside ``competitor``; ``flags`` go to both
    workers (settle time, --smoke, --compile)."""
    flags = ["--settle", str(settle), *flags]
    rival = None
    if competitor == "busy loop":
        rival = spawn(["--busy", str(settle + seconds + 10)])
    elif competitor is not None:
        rival_mode = MODES[0] if competitor == "torch" else MODES[1]
        rival = spawn(["--worker", str(seconds + 10), "--mode", rival_mode, *flags])
    measured = spawn(["--worker", str(seconds), "--mode", mode, *flags])
    out, _ = measured.communicate()
    if rival is not None:
        rival.kill()
        rival.wait()
    if measured.returncode:
        raise RuntimeError(f"worker failed with exit status {measured.returncode}")
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="timed seconds per run")
    parser.add_argument("--settle", type=float, default=None,
                        help="untimed seconds first (default: 8, or 60 with --compile)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1-second runs")
    parser.add_argument("--compile", action="store_true",
                        help="train compiled, as cpu-quick does (each worker compiles first)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=None, help="default: bench/RESULTS.md")
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default=MODES[1], help=argparse.SUPPRESS)
    parser.add_argument("--busy", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default_settle = COMPILED_SETTLE_S if args.compile else 8.0
    settle = default_settle if args.settle is None else args.settle
    settle, seconds = (0.5, 1.0) if args.smoke else (settle, args.seconds)
    if args.worker is not None:
        worker(settle, args.worker, args.mode, args.smoke, args.compile)
        return 0
    if args.busy is not None:
        busy_loop(args.busy)
        return 0

    from common import RESULTS, markdown_table, record

    load = os.getloadavg()[0]
    flags = ["--smoke"] * args.smoke + ["--compile"] * args.compile
    rows = []
    for mode in MODES:
        alone = measure(mode, None, settle, seconds, flags)
        row = [mode, f"{alone:,.0f}"]
        for competitor in COMPETITORS:
            shared = measure(mode, competitor, settle, seconds, flags)
            row.append(f"{shared:,.0f} ({100 * shared / alone:.0f}%)")
        rows.append(row)
        print(" | ".join(row), flush=True)
    table = markdown_table(
        ["threads", "alone img/s", *(f"beside {c}: img/s (of alone)" for c in COMPETITORS)], rows
    )
    notes = (
        f"{'compiled (torch.compile, as cpu-quick); ' if args.compile else 'eager; '}"
        f"{settle:g} s untimed (at least one step), then {seconds:g} s timed per run; "
        f"load average {load:.2f} before"
    )
    record("Shared cores: training speed alone vs beside one busy process", table,
           args.results or RESULTS, notes=notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
