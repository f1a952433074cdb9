"""Notebook 07's ablations (bench/ablations.py): the variants, the runs against the clock, the CSV
files and their summary, and the ResNet-20 baseline that bench/resnet.py adds to vitlib's models."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
from helpers import BENCH, load_bench_module

from vitlib.config import validate
from vitlib.model import MODELS, create_model
from vitlib.summary import count_parameters

ablations = load_bench_module("ablations")
# Loading it imported bench/resnet.py, which added the ResNet-20 to vitlib.model.MODELS: this file's
# tests see it there (the fixture below), every other test sees vitlib's own models.
RESNET = MODELS.pop("resnet20_cifar10")
VARIANTS, read_csv, results_dir = ablations.VARIANTS, ablations.read_csv, ablations.results_dir
run_ablations, summarize = ablations.run_ablations, ablations.summarize


@pytest.fixture(autouse=True)
def resnet_registered(monkeypatch):
    monkeypatch.setitem(MODELS, "resnet20_cifar10", RESNET)


def test_every_variant_is_a_valid_config_that_changes_one_thing(cifar_root):
    full = ablations.variant_config("full model", datapath=str(cifar_root))
    for name in VARIANTS:
        config = ablations.variant_config(name, datapath=str(cifar_root))
        validate(config)
        changed = {k for k in ("model", "augment") if getattr(config, k) != getattr(full, k)}
        changed |= set(config.model_overrides)
        assert len(changed) <= 2 and (name == "full model") == (not changed), (name, changed)
        assert config.compile and config.precision == "bf16"  # cpu-quick as it is


def test_variants_remove_what_they_say():
    """Parameters each position ablation removes: 4 tables of 4 heads x 15 x 15 offsets, and the
    128 x 8 x 8 absolute embedding."""
    count = {name: sum(p.numel() for p in create_model(config.model, **config.model_overrides)
                       .parameters())
             for name in VARIANTS
             for config in [ablations.variant_config(name)]}  # fmt: skip
    tables, embedding = 4 * 4 * 15 * 15, 128 * 8 * 8
    assert count["full model"] - count["no relative position bias"] == tables
    assert count["full model"] - count["no absolute position embedding"] == embedding
    assert count["full model"] - count["no position information"] == tables + embedding
    assert count["residual gains start at 1"] == count["full model"]
    assert count["ResNet-20 (a CNN)"] == 272_474


@pytest.mark.slow
def test_run_ablations_writes_resumable_csv_files(tmp_path, cifar_root, monkeypatch):
    names = ["full model", "ResNet-20 (a CNN)"]
    runs, curves = run_ablations(0.05, [0], tmp_path, names, str(cifar_root), tiny=True)
    with open(tmp_path / "ablations.csv") as f:
        assert next(csv.reader(f)) == ablations.RUN_COLUMNS
    with open(tmp_path / "ablation_curves.csv") as f:
        assert next(csv.reader(f)) == ablations.CURVE_COLUMNS
    assert [r["variant"] for r in runs] == names
    for run in runs:
        assert 0 <= run["test_acc"] <= 1 and run["epochs"] >= 1 and run["steps"] >= 1
        assert run["budget_min"] == 0.05 and run["wall_s"] < 60  # 3 s of training, then the test
        own = [c for c in curves if c["variant"] == run["variant"]]
        assert [c["epoch"] for c in own] == list(range(1, int(run["epochs"]) + 1))
        assert own[-1]["images_seen"] == 128 * run["steps"]  # the last epoch ends with the clock
        # wall_s is stored to 0.1 s and a tiny epoch can take less: the clock never goes back
        assert all(a["wall_s"] <= b["wall_s"] for a, b in zip(own, own[1:]))
        assert own[-1]["wall_s"] <= run["wall_s"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablations, "run_variant", no_training)
    again, _ = run_ablations(0.05, [0], tmp_path, names, str(cifar_root), tiny=True)
    assert again == runs
    for bad, message in [({"variants": ["no gains"]}, "unknown variant 'no gains'"),
                         ({"minutes": 0}, "minutes=0: expected a number of minutes > 0.005"),
                         ({"seeds": [0.5]}, r"seeds=\[0.5\]: expected a non-empty list")]:  # fmt: skip
        arguments = {"minutes": 0.05, "seeds": [0], "folder": tmp_path / "new", **bad}
        with pytest.raises(ValueError, match=message):
            run_ablations(**arguments, datapath=str(cifar_root), tiny=True)
        assert not (tmp_path / "new").exists()


def test_summarize_means_ranges_and_differences():
    runs = [{"variant": v, "seed": s, "test_acc": a, "wall_s": 300.0, "steps": n}
            for v, s, a, n in [("no augmentation", 0, 0.70, 10), ("full model", 0, 0.80, 8),
                               ("full model", 1, 0.82, 8), ("no augmentation", 1, 0.74, 12)]]  # fmt: skip
    table = summarize(runs)
    assert [row["variant"] for row in table] == ["full model", "no augmentation"]  # VARIANTS order
    full, no_aug = table
    assert full["mean"] == pytest.approx(0.81) and (full["low"], full["high"]) == (0.80, 0.82)
    assert no_aug["vs full"] == pytest.approx(-0.09) and no_aug["wall_min"] == 5.0
    assert no_aug["images"] == 11 * 128  # the mean of its runs' steps, in batches of 128


def test_committed_results_cover_every_variant_with_two_seeds():
    """The CSV files notebook 07 plots (bench/results/): every variant, at least 2 seeds, at least
    5 minutes; bench/figures.py draws them."""
    runs = read_csv(results_dir() / "ablations.csv")
    curves = read_csv(results_dir() / "ablation_curves.csv")
    for name in VARIANTS:
        own = [r for r in runs if r["variant"] == name]
        assert len({r["seed"] for r in own}) >= 2, name
        assert all(r["budget_min"] >= 5 for r in own), name
        assert any(c["variant"] == name for c in curves), name
    figures = load_bench_module("figures")
    assert figures.ablation_figure(runs, curves).axes


@pytest.mark.slow
def test_bench_ablations_tiny(tmp_path, cifar_root):
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(BENCH / "ablations.py"), "--tiny", "--minutes", "0.05",
               "--seeds", "0", "--variants", "no position information", "--out", str(tmp_path),
               "--results", str(results), "--datapath", str(cifar_root)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = results.read_text()
    assert "## ablations TINY" in text and "| no position information | 1 |" in text
    assert read_csv(tmp_path / "ablations.csv")[0]["variant"] == "no position information"


def test_resnet20_is_he_et_al_cifar_resnet():
    """ResNet-20 for CIFAR (He et al. 2016, 0.27M parameters): 3 stages of 3 BasicBlocks."""
    model = create_model("resnet20_cifar10")
    assert count_parameters(model) == 272_474
    assert len(model.stages) == 3 and all(len(stage) == 3 for stage in model.stages)
    features = model.stages(model.stem(torch.rand(2, 3, 32, 32)))
    assert features.shape == (2, 64, 8, 8) and model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert create_model("resnet20_cifar10", depth=32).config.depth == 32
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2 \(8, 14, 20, 32, ...\), got 18"):
        create_model("resnet20_cifar10", depth=18)


@pytest.mark.slow
def test_resnet_is_registered_by_bench_not_by_vitlib():
    """vitlib knows only its ViTs; importing bench/resnet.py (as bench/ablations.py does) adds
    ``resnet20_cifar10`` to the registry that ``create_model`` and training read."""
    check = ("import sys, vitlib; assert 'resnet20_cifar10' not in vitlib.list_models(); "
             f"sys.path.insert(0, {str(BENCH)!r}); import resnet; "
             "assert type(vitlib.create_model('resnet20_cifar10')) is resnet.ResNet")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


def test_model_without_position_information_ignores_token_order():
    """With neither bias nor embedding (and 1x1 projections, no stem mixing), a block's attention
    is permutation-equivariant: the ablation really removes all position information there."""
    model = create_model("vit_cifar10_small", relative_position=False, absolute_position=False,
                         projection="pointwise", gain_init=1.0).eval()  # fmt: skip
    tokens = torch.randn(2, 64, 128, generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    block = model.blocks[0]
    with torch.no_grad():
        assert torch.allclose(block(tokens[:, perm]), block(tokens)[:, perm], atol=1e-5)
