"""Execute the training, results and ablation notebooks (05, 06, 07) with papermill on tiny
parameters.

05 and 06 store the outputs of the 20-minute run of the shipped model, which a test cannot
repeat (nbval leaves them out, see notebooks/conftest.py); 07 stores a plot of the committed
ablation results, which nbval checks, and its ``rerun`` path trains here on a tiny model. These
tests check that they run end to end on the real data, write what they promise, and refuse bad
parameters with an error naming them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers import load_bench_module

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

import torch  # noqa: E402

from vitlib.checkpoint import load_checkpoint  # noqa: E402
from vitlib.data import load_cifar10  # noqa: E402
from vitlib.evaluate import evaluate_model, load_model  # noqa: E402

pytestmark = pytest.mark.slow  # every test here runs a script or a notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = {
    "preset": "cpu-quick",
    "epochs": 1,
    "batch_size": 64,
    "lr": None,
    "train_limit": 256,
    "test_limit": 128,
    "compile": False,
}


def execute(name: str, output: Path, **parameters) -> str:
    """Run ``notebooks/name`` into ``output``; returns the text of all its stream outputs."""
    papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(output),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )
    nb = nbformat.read(output, as_version=4)
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type == "stream"
    )


@pytest.fixture(scope="module")
def trained(cifar_root, tmp_path_factory):
    """05 run once for this module: (run directory, its stream output)."""
    tmp = tmp_path_factory.mktemp("nb05")
    run_dir = tmp / "run"
    text = execute(
        "05_training.ipynb",
        tmp / "05.ipynb",
        datapath=str(cifar_root),
        out_dir=str(run_dir),
        **TINY,
    )
    return run_dir, text


def test_training_notebook_writes_the_run(trained, cifar_root):
    run_dir, text = trained
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert {"epoch", "train_loss", "test_loss", "test_acc", "lr", "seconds"} <= rows[0].keys()
    last = load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == 1 and last["config"]["train_limit"] == 256
    model, best = load_model(str(run_dir / "best.pt"))
    assert best["model_name"] == "vit_cifar10_small" and not model.training
    images, labels = load_cifar10(cifar_root, "test", limit=128)
    again = evaluate_model(model, images, labels, autocast_dtype=torch.bfloat16)  # as cpu-quick
    assert float(rows[0]["test_acc"]) == pytest.approx(again["accuracy"])  # best.pt is epoch 1
    assert (run_dir / "curves.png").stat().st_size > 10_000
    assert "256 train / 128 test images" in text
    assert f"final test accuracy {100 * float(rows[0]['test_acc']):.2f}%" in text


def test_results_notebook_reads_the_checkpoint(trained, cifar_root, tmp_path):
    run_dir, _ = trained
    text = execute(
        "06_results.ipynb",
        tmp_path / "06.ipynb",
        checkpoint=str(run_dir / "best.pt"),
        datapath=str(cifar_root),
        test_limit=128,
    )
    with open(run_dir / "metrics.csv") as f:
        acc = float(next(csv.DictReader(f))["test_acc"])
    recorded = f"{100 * acc:.2f}%"  # in the run's precision (bf16), which the check repeats
    assert f"first 128 test images, bf16: recorded {recorded}, recomputed {recorded}" in text
    assert "128 test images: " in text and "% one view" in text  # float32
    assert "with flip TTA" in text and "confusion matrix (rows: true class" in text
    assert "the best TEST accuracy, so the test accuracy below is test-selected" in text
    assert (run_dir / "confusion.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"epochs": -3}, "epochs=-3 is out of range: an integer >= 1"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
    ],
)
def test_training_notebook_rejects_a_bad_parameter(cifar_root, tmp_path, parameters, expected):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        execute(
            "05_training.ipynb",
            tmp_path / "05.ipynb",
            datapath=str(cifar_root),
            out_dir=str(tmp_path / "run"),
            **parameters,
        )
    assert expected in str(error.value)
    assert not (tmp_path / "run").exists(), "nothing may run before the parameters are checked"


def test_results_notebook_examines_the_shipped_model_by_default(cifar_root, tmp_path):
    text = execute(
        "06_results.ipynb", tmp_path / "06.ipynb", datapath=str(cifar_root), test_limit=128
    )
    assert "shipped model 'cpu-quick': python bench/ship_pretrained.py" in text
    assert "128 test images: " in text and "% with flip TTA" in text


def test_results_notebook_names_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "nowhere" / "best.pt"
    with pytest.raises(papermill.PapermillExecutionError) as error:
        execute("06_results.ipynb", tmp_path / "06.ipynb", checkpoint=str(missing))
    assert "FileNotFoundError" in str(error.value)
    assert str(missing) in str(error.value) and "05_training.ipynb" in str(error.value)


def test_ablations_notebook_reruns_tiny(cifar_root, tmp_path):
    """07 with rerun=True trains every variant (tiny model, seconds each) and tabulates them."""
    text = execute(
        "07_ablations.ipynb", tmp_path / "07.ipynb", rerun=True, tiny=True, seeds=[0],
        datapath=str(cifar_root), out=str(tmp_path / "runs"),
    )  # fmt: skip
    ablations = load_bench_module("ablations")  # the harness 07 runs
    runs = ablations.read_csv(tmp_path / "runs" / "ablations.csv")
    assert [r["variant"] for r in runs] == list(ablations.VARIANTS)  # block 0: in VARIANTS order
    assert f"{len(ablations.VARIANTS)} runs (blocks [0])" in text and str(tmp_path / "runs") in text
    assert "ResNet-20, SGD recipe" in text and "not shown" in text  # one seed: no verdict


def test_ablations_notebook_refuses_a_bad_parameter(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        execute("07_ablations.ipynb", tmp_path / "07.ipynb", rerun=True, seeds=[-1],
                out=str(tmp_path / "runs"))  # fmt: skip
    assert "seeds=[-1]: expected a non-empty list of integers >= 0" in str(error.value)
    assert not (tmp_path / "runs").exists()
