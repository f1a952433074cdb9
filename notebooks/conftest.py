"""nbval checks the stored outputs of notebooks 01-04, which were made from the real CIFAR-10,
and of 07, which plots the committed ablation results (no data needed).

Notebooks 05 (training) and 06 (results) store outputs of a real training run, which a CPU
cannot reproduce; tests/test_notebooks_run.py executes them with papermill on tiny parameters.
Without the real data (``VITLIB_DATA`` unset) 01-04 are left out too, and the run's header
says so: their stored images and numbers cannot match a synthetic stand-in."""

import os
from pathlib import Path

collect_ignore = ["05_training.ipynb", "06_results.ipynb"]
HAS_DATA = (Path(os.environ.get("VITLIB_DATA") or "/nowhere") / "cifar-10-batches-py").is_dir()
if not HAS_DATA:
    collect_ignore += [p.name for p in Path(__file__).parent.glob("0[1-4]_*.ipynb")]


def pytest_report_header(config):
    if not HAS_DATA:
        return (
            "notebooks 01-04: nbval left out, their stored outputs come from the real CIFAR-10 "
            "(set VITLIB_DATA to the folder holding cifar-10-batches-py/)"
        )
    return None


def pytest_collection_modifyitems(items):
    """nbval re-runs whole notebooks: part of ``-m slow``, left out of the quick subset."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker("slow")
