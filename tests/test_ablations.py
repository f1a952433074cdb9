"""Notebook 07's ablations (bench/ablations.py): the variants, the runs against the clock, the CSV
files and their summary, and the ResNet-20 baseline that bench/resnet.py adds to vitlib's models."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch
from helpers import BENCH, load_bench_module

from vitlib.config import validate
from vitlib.model import MODELS, create_model
from vitlib.summary import count_parameters

ablations = load_bench_module("ablations")
# Loading it added the ResNet-20 (bench/resnet.py) and two ViT variants to vitlib.model.MODELS:
# this file's tests see them there (the fixture below), every other test sees vitlib's own models.
BENCH_MODELS = {name: MODELS.pop(name) for name in ("resnet20_cifar10", "vit_cifar10_small_plain_init",
                                                    "vit_cifar10_small_circular_padding")}
VARIANTS, read_csv, results_dir = ablations.VARIANTS, ablations.read_csv, ablations.results_dir
run_ablations, summarize = ablations.run_ablations, ablations.summarize


@pytest.fixture(autouse=True)
def bench_models_registered(monkeypatch):
    for name, entry in BENCH_MODELS.items():
        monkeypatch.setitem(MODELS, name, entry)


# What each variant changes of the cpu-quick preset: TrainConfig fields and ModelConfig fields.
CHANGES = {
    "full model": set(),
    "no position embedding or bias": {"relative_position", "absolute_position"},
    "no position, circular padding": {"model", "relative_position", "absolute_position"},
    "gains start at 1, Kaiming init": {"gain_init"},
    "gains start at 1, ViT init": {"model", "gain_init"},
    "no augmentation": {"augment"},
    "ResNet-20, the ViT's recipe": {"model"},
    "ResNet-20, SGD recipe": {"model", "optimizer", "lr", "weight_decay", "label_smoothing"},
}


def test_every_variant_is_a_valid_config_that_changes_what_its_name_says(cifar_root):
    full = ablations.variant_config("full model", datapath=str(cifar_root))
    assert list(VARIANTS) == list(CHANGES)
    for name in VARIANTS:
        config = ablations.variant_config(name, datapath=str(cifar_root))
        validate(config)
        changed = {f for f in vars(full) if f != "model_overrides" and getattr(config, f) != getattr(full, f)}
        assert changed | set(config.model_overrides) == CHANGES[name], name
        assert config.compile and config.precision == "bf16" and config.batch_size == 128


def test_variants_remove_what_they_say():
    """The position ablations remove 4 tables of 4 heads x 15 x 15 offsets and the 128 x 8 x 8
    embedding; the initialisations and the padding change no parameter."""
    count = {name: count_parameters(create_model(config.model, **config.model_overrides))
             for name in VARIANTS for config in [ablations.variant_config(name)]}  # fmt: skip
    tables, embedding = 4 * 4 * 15 * 15, 128 * 8 * 8
    assert count["full model"] - count["no position embedding or bias"] == tables + embedding
    assert count["no position, circular padding"] == count["no position embedding or bias"]
    assert count["gains start at 1, Kaiming init"] == count["gains start at 1, ViT init"] == \
        count["full model"]  # fmt: skip
    assert count["ResNet-20, the ViT's recipe"] == count["ResNet-20, SGD recipe"] == 272_474


def _build(name: str):
    torch.manual_seed(0)
    config = ablations.variant_config(name)
    return create_model(config.model, **config.model_overrides).eval()


def test_circular_padding_removes_absolute_position():
    """Without explicit position, zero padding still tells the model where the border is: its
    output changes when the image is rolled by a whole token (4 pixels). With circular padding it
    cannot (a roll by 1 pixel, not a whole token, still changes the stride-2 grid)."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rolled = torch.roll(images, shifts=(4, 8), dims=(2, 3))
    with torch.no_grad():
        zero, circular = _build("no position embedding or bias"), _build("no position, circular padding")
        assert torch.allclose(circular(rolled), circular(images), atol=1e-5)
        assert not torch.allclose(zero(rolled), zero(images), atol=1e-3)
        assert not torch.allclose(circular(torch.roll(images, 1, dims=3)), circular(images), atol=1e-3)


def test_vit_init_draws_weights_of_std_0_02():
    plain, kaiming = _build("gains start at 1, ViT init"), _build("gains start at 1, Kaiming init")
    for model, low, high in ((plain, 0.018, 0.022), (kaiming, 0.1, 0.2)):
        weight = model.blocks[0].mlp.fc1.weight  # (256, 128): Kaiming fan-in std sqrt(2 / 128)
        assert low < float(weight.detach().std()) < high
        assert float(model.blocks[0].gamma_attn) == 1.0


def test_blocks_rotate_the_order_and_hold_every_variant():
    orders = [ablations.block_order(b) for b in range(3)]
    assert all(sorted(order) == sorted(VARIANTS) for order in orders)
    assert [order.index("full model") for order in orders] == [0, 5, 2]


@pytest.mark.slow
def test_run_ablations_writes_resumable_csv_files_at_equal_images(tmp_path, cifar_root, monkeypatch):
    names = ["full model", "ResNet-20, SGD recipe"]
    runs, curves = run_ablations([0, 1], tmp_path, names, str(cifar_root), tiny=True)
    for file, columns in (("ablations.csv", ablations.RUN_COLUMNS),
                          ("ablation_curves.csv", ablations.CURVE_COLUMNS)):  # fmt: skip
        with open(tmp_path / file) as f:
            assert next(csv.reader(f)) == columns
    # block 0 in VARIANTS order, block 1 rotated: the SGD ResNet first, the full model after it
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("full model", 0), ("ResNet-20, SGD recipe", 0), ("ResNet-20, SGD recipe", 1), ("full model", 1)]
    tiny_images = ablations.TINY["epochs"] * ablations.TINY["epoch_images"]
    for run in runs:
        assert 0 <= run["test_acc"] <= 1 and run["steps"] * 128 == tiny_images  # equal images
        own = [c for c in curves if c["variant"] == run["variant"] and c["seed"] == run["seed"]]
        assert [c["epoch"] for c in own] == [1, 2] and own[-1]["images_seen"] == tiny_images

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablations, "run_once", no_training)
    again, _ = run_ablations([0, 1], tmp_path, names, str(cifar_root), tiny=True)
    assert again == runs
    for bad, message in [({"variants": ["no gains"]}, "unknown variant 'no gains'"),
                         ({"seeds": [0.5]}, r"seeds=\[0.5\]: expected a non-empty list"),
                         ({"seeds": []}, r"seeds=\[\]: expected a non-empty list")]:  # fmt: skip
        arguments = {"seeds": [0], "folder": tmp_path / "new", **bad}
        with pytest.raises(ValueError, match=message):
            run_ablations(**arguments, datapath=str(cifar_root), tiny=True)
        assert not (tmp_path / "new").exists()


def test_t_quantiles_match_the_tables():
    for p, df, t in ((0.975, 1, 12.706), (0.975, 4, 2.776), (0.975, 16, 2.120), (0.995, 16, 2.921),
                     (0.975, 10_000, 1.960)):  # fmt: skip
        assert ablations.t_quantile(p, df) == pytest.approx(t, abs=1e-3)


def test_summarize_pools_the_seed_spread_and_states_each_verdict():
    accs = {"full model": [0.80, 0.82, 0.81], "no augmentation": [0.70, 0.72, 0.74],
            "gains start at 1, Kaiming init": [0.805, 0.815, 0.825]}  # fmt: skip
    runs = [{"variant": v, "seed": s, "test_acc": a, "steps": 500}
            for v, values in accs.items() for s, a in enumerate(values)]  # fmt: skip
    speed = [{"variant": "full model", "train_images_per_s": x} for x in (400, 500, 450)]
    table = {row["variant"]: row for row in summarize(runs, speed)}
    pooled = math.sqrt((0.0002 + 0.0008 + 0.0002) / 6)  # squared deviations over 3 x (3 - 1)
    no_aug, gains = table["no augmentation"], table["gains start at 1, Kaiming init"]
    assert no_aug["se"] == pytest.approx(pooled * math.sqrt(2 / 3)) and no_aug["pooled_sd"] == pytest.approx(pooled)
    assert no_aug["vs full"] == pytest.approx(-0.09) and no_aug["verdict"] == "worse"
    assert gains["vs full"] == pytest.approx(0.005) and gains["verdict"] == "not shown"
    assert table["full model"]["images"] == 64_000 and table["full model"]["images_per_s"] == 450
    assert table["full model"]["minutes"] == pytest.approx(64_000 / 450 / 60)
    assert no_aug["df"] == 6 and no_aug["t_q"] == pytest.approx(2.447, abs=1e-3)
    cells = {row[0]: row for row in ablations.format_table(summarize(runs, speed))}
    assert cells["no augmentation"][3:6] == [f"-9.00 ± {100 * no_aug['se']:.2f}", "-7.8", "worse"]


def test_committed_results_are_the_equal_image_design():
    """The CSV files notebook 07 plots (bench/results/): every variant in each of 3 blocks, every
    run on the same 64,000 training images, and every variant's speed in 6 rounds."""
    runs = read_csv(results_dir() / "ablations.csv")
    curves = read_csv(results_dir() / "ablation_curves.csv")
    speed = read_csv(results_dir() / "ablation_speed.csv")
    for name in VARIANTS:
        own = [r for r in runs if r["variant"] == name]
        assert sorted(r["seed"] for r in own) == [0, 1, 2], name
        assert all(r["steps"] * 128 == 64_000 and r["block"] == r["seed"] for r in own), name
        assert any(c["variant"] == name for c in curves), name
        assert len([s for s in speed if s["variant"] == name]) == 6, name
    figures = load_bench_module("figures")
    assert figures.ablation_figure(runs, curves).axes


@pytest.mark.slow
def test_bench_ablations_tiny(tmp_path, cifar_root):
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(BENCH / "ablations.py"), "--tiny", "--seeds", "0",
               "--variants", "no position, circular padding", "--out", str(tmp_path),
               "--results", str(results), "--datapath", str(cifar_root)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = results.read_text()
    assert "## ablations TINY" in text and "| no position, circular padding | 1 |" in text
    assert read_csv(tmp_path / "ablations.csv")[0]["variant"] == "no position, circular padding"
    speed = subprocess.run(command + ["--speed", "1"], capture_output=True, text=True, timeout=300)
    assert speed.returncode == 0, speed.stderr[-3000:]
    assert {r["variant"] for r in read_csv(tmp_path / "ablation_speed.csv")} == set(VARIANTS)


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
