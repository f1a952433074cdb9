"""Re-train the shipped ``cpu-quick`` model and bring the repository in line with it, in one command.

    python bench/ship_pretrained.py --datapath DIR      # about 20 minutes on 2 CPU cores

1. executes notebooks/05_training.ipynb exactly as stored (no papermill parameters, so no
   injected cell: ``preset = "auto"``, which on a CPU is ``cpu-quick``, all 50,000 images, the
   preset's own epochs) with the GPU hidden, writing its run to ``runs/notebook`` (an existing
   ``runs/notebook`` is moved aside first, never deleted);
2. measures the run's final weights on all 10,000 test images in float32, one view and with flip
   TTA, and writes ``vitlib/pretrained/cpu-quick.safetensors`` and ``cpu-quick.json`` (command,
   hardware, torch version, date, wall time, accuracy);
3. re-executes notebooks 06 (which examines the shipped model) and 03 (its learned tables), and
   normalises all three with nbstripout.

After a change to the ``cpu-quick`` preset or to the model, this is the one command that makes
the shipped weights, their metadata and the stored outputs of 03, 05 and 06 agree again. It
appends a row to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import papermill
import torch
from common import REPO, hardware, markdown_table, record, software
from safetensors.torch import save

from vitlib.checkpoint import write_atomic
from vitlib.config import config_from_dict
from vitlib.data import load_cifar10
from vitlib.evaluate import evaluate_model, load_model
from vitlib.pretrained import HEADER_KEY, pretrained_dir

NAME = "cpu-quick"
NOTEBOOKS = REPO / "notebooks"
RUN_DIR = REPO / "runs" / "notebook"  # where notebook 05 writes with its stored parameters
# The README's normalisation (tests/test_notebooks_format.py checks the same keys).
EXTRA_KEYS = (
    "metadata.papermill cell.metadata.papermill metadata.widgets metadata.language_info.version"
)


def execute_as_stored(name: str) -> float:
    """Run ``notebooks/name`` in place with no parameters; returns the wall seconds."""
    start = time.perf_counter()
    papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(NOTEBOOKS / name),
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        log_output=True,
    )
    return time.perf_counter() - start


def normalise(names: list[str]) -> None:
    paths = [str(NOTEBOOKS / n) for n in names]
    subprocess.run(
        ["nbstripout", "--keep-output", "--keep-count", "--extra-keys", EXTRA_KEYS, *paths],
        check=True,
    )
    for path in paths:
        if '"injected-parameters"' in Path(path).read_text():
            raise RuntimeError(f"{path} holds papermill's injected-parameters cell")


def export_pretrained(model: torch.nn.Module, info: dict, folder: str | os.PathLike) -> Path:
    """Write ``folder/NAME.safetensors`` (float32 weights, ``info`` in the header under
    ``vitlib.pretrained.HEADER_KEY``) and ``folder/NAME.json`` for ``name = info["name"]``, each
    atomically; returns the weights' path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.cpu()
               for k, v in model.state_dict().items()}  # fmt: skip
    text = json.dumps(info, indent=2) + "\n"
    path = folder / f"{info['name']}.safetensors"
    write_atomic(path, save(weights, metadata={HEADER_KEY: text}))
    write_atomic(folder / f"{info['name']}.json", text.encode())
    return path


def provenance(run_dir: Path, wall_seconds: float | None, load: float, images, labels) -> tuple:
    """(model, info) of the run's final weights, with the test accuracy measured here;
    ``wall_seconds``: notebook 05's, ``load``: the load average when it started."""
    model, state = load_model(run_dir / "last.pt")
    config = config_from_dict(state["config"])
    if state["epoch"] != config.epochs or config.train_limit or config.test_limit:
        raise RuntimeError(f"{run_dir / 'last.pt'} is not a finished full-data run")
    if config.preset != NAME:
        raise RuntimeError(f"{run_dir / 'last.pt'} is a {config.preset!r} run, not {NAME!r}")
    last = state["progress"]["history"][-1]
    info = {
        "name": NAME,
        "model": state["model_name"],
        "model_config": state["model_config"],
        "preset": config.preset,
        "epochs": config.epochs,
        "config": dataclasses.asdict(config),
        "command": "python bench/ship_pretrained.py (notebooks/05_training.ipynb as stored, "
        "preset auto -> cpu-quick)",
        "equivalent_command": f"python -m vitlib.train --preset {config.preset}",
        "hardware": hardware(),
        "load_average_before": round(load, 2),
        "software": software(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(wall_seconds, 1) if wall_seconds else None,
        "train_seconds": round(sum(row["seconds"] for row in state["progress"]["history"]), 1),
        "weights": "final epoch (not selected on the test set), float32",
        "test_images": len(labels),
        "test_acc": evaluate_model(model, images, labels)["accuracy"],
        "test_acc_tta": evaluate_model(model, images, labels, tta=True)["accuracy"],
        "test_acc_evaluated_in": "float32, batch 500",
        "test_acc_during_training": last["test_acc"],
        "test_acc_during_training_in": config.precision,
    }
    return model, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datapath", default=os.environ.get("VITLIB_DATA"), help="default: $VITLIB_DATA"
    )
    parser.add_argument(
        "--skip-training",
        action="store_true",
        help=f"export the finished run already in {RUN_DIR.relative_to(REPO)} instead",
    )
    args = parser.parse_args(argv)
    if not args.datapath or not (Path(args.datapath) / "cifar-10-batches-py").is_dir():
        parser.error(
            f"--datapath {args.datapath!r} must be the folder holding cifar-10-batches-py/"
        )
    os.environ["VITLIB_DATA"] = str(Path(args.datapath).resolve())  # read by the notebooks
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # preset "auto" must choose cpu-quick
    load = os.getloadavg()[0]
    wall = None
    if not args.skip_training:
        if RUN_DIR.exists():
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            kept = RUN_DIR.with_name(f"notebook.before-{stamp}")
            RUN_DIR.rename(kept)
            print(f"moved the previous {RUN_DIR} to {kept}")
        print(f"executing 05_training.ipynb as stored (load average {load:.2f})", flush=True)
        wall = execute_as_stored("05_training.ipynb")
    images, labels = load_cifar10(args.datapath, "test")
    model, info = provenance(RUN_DIR, wall, load, images, labels)
    path = export_pretrained(model, info, pretrained_dir())
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    for name in ("06_results.ipynb", "03_relative_position.ipynb"):
        print(f"executing {name} as stored", flush=True)
        execute_as_stored(name)
    normalise(["03_relative_position.ipynb", "05_training.ipynb", "06_results.ipynb"])
    row = [
        info["model"], info["epochs"], f"{100 * info['test_acc']:.2f}%",
        f"{100 * info['test_acc_tta']:.2f}%",
        f"{info['wall_seconds'] / 60:.1f} min" if info["wall_seconds"] else "not trained here",
        f"{load:.2f}",
    ]  # fmt: skip
    table = markdown_table(
        ["model", "epochs", "test acc", "flip TTA", "notebook 05 wall", "load before"], [row]
    )
    record(f"Shipped pretrained model {NAME!r}", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
