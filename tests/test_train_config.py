"""TrainConfig presets and validation: every bad value named with its allowed range, at once."""

import dataclasses

import pytest
import torch

from vitlib.config import (
    PRESETS,
    TrainConfig,
    auto_preset,
    config_from_dict,
    fit_schedule,
    preset_config,
    validate,
)


@pytest.fixture(autouse=True)
def _data(monkeypatch, tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setenv("VITLIB_DATA", str(tmp_path))


def test_reference_defaults_follow_the_recipe():
    c = TrainConfig()
    assert (c.lr, c.betas, c.eps, c.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.1)
    assert (c.batch_size, c.epochs, c.label_smoothing, c.mix, c.mix_alpha, c.mix_prob) == (
        128, 200, 0.1, "cutmix", 0.5, 1.0,
    )  # fmt: skip
    assert (c.warmup_epochs, c.min_lr, c.cycles, c.schedule_unit) == (10, 1e-5, 4, "epoch")
    assert (c.precision, c.compile, c.model) == ("fp32", False, "vit_cifar10_patch2_input32")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    validate(preset_config(name, device="cpu"))


def test_fast_and_cpu_quick():
    fast, quick = preset_config("fast"), preset_config("cpu-quick")
    assert fast.model == TrainConfig().model and fast.mix == "cutmix" and fast.augment == "recipe"
    assert (fast.batch_size, fast.cycles, fast.schedule_unit, fast.compile) == (
        512,
        1,
        "step",
        True,
    )
    assert quick.model == "vit_cifar10_small"


def test_all_problems_in_one_error():
    config = TrainConfig(
        epochs=20, lr=-1.0, mix="blend", betas=(0.9, 1.5), train_limit=100, model="vit_huge",
        label_smoothing=1.0, batch_size="128", preset="slow", device="cuda:7", ema=1.0,
    )  # fmt: skip
    with pytest.raises(ValueError) as info:
        validate(config)
    message = str(info.value)
    for expected in (
        "batch_size='128' has the wrong type: expected <class 'int'>",
        "preset='slow' is out of range: one of ['cpu-quick', 'fast', 'reference']",
        "mix='blend' is out of range: one of ['cutmix', 'none']",
        "lr=-1.0 is out of range: a finite number > 0",
        "warmup_epochs=10.0 is out of range: [0, epochs / cycles)",
        "betas=(0.9, 1.5) is out of range: two numbers in [0, 1)",
        "label_smoothing=1.0 is out of range: [0, 1)",
        "ema=1.0 is out of range: [0, 1)",
        "model='vit_huge' is invalid: unknown model 'vit_huge': choose one of "
        "['vit_cifar10_patch2_input32', 'vit_cifar10_small']",
        "device='cuda:7' is not available",
    ):
        assert expected in message


def test_batch_size_against_dataset_and_processes():
    with pytest.raises(
        ValueError, match=r"batch_size=128 is out of range: 1\.\.100 \(the training images"
    ):
        validate(TrainConfig(train_limit=100))
    with pytest.raises(ValueError, match="divisible by the 3 process"):
        validate(TrainConfig(), world_size=3)


def test_epoch_images_against_the_training_images():
    with pytest.raises(ValueError, match=r"epoch_images=60000 is out of range: 1\.\.49000 "):
        validate(TrainConfig(epoch_images=60_000, val_split=1000))
    with pytest.raises(ValueError, match=r"batch_size=128 is out of range: 1\.\.100 \(the "
                       r"training images of one epoch\)"):  # fmt: skip
        validate(TrainConfig(epoch_images=100, device="cpu"))


def test_schedule_shape_checks():
    with pytest.raises(ValueError, match="cycles=3 is out of range: a divisor of epochs=200"):
        validate(TrainConfig(cycles=3))
    validate(TrainConfig(cycles=3, schedule_unit="step", warmup_epochs=5.0, device="cpu"))


def test_model_overrides_checked_and_data_location(monkeypatch):
    with pytest.raises(ValueError, match="model_overrides=.*depth must be a positive integer"):
        validate(TrainConfig(model_overrides={"depth": 0}))
    monkeypatch.delenv("VITLIB_DATA")
    with pytest.raises(ValueError, match="VITLIB_DATA is unset: pass --datapath"):
        validate(TrainConfig())


def test_config_round_trip_through_a_dict():
    config = preset_config("fast", model_overrides={"depth": 2})
    assert config_from_dict(dataclasses.asdict(config) | {"betas": [0.9, 0.999]}) == config
    with pytest.raises(ValueError, match=r"unknown training config field\(s\) \['learning_rate'\]"):
        config_from_dict({"learning_rate": 1})


def test_auto_precision_follows_the_hardware(monkeypatch):
    from vitlib.hardware import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    for capability, expected in (((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize(
    ("epochs", "cycles", "warmup", "unit"),
    [
        (200, 4, 10.0, "epoch"),  # the recipe itself
        (100, 4, 5.0, "epoch"),  # 4 cycles of 25, warmup a fifth of each
        (41, 1, 8.2, "epoch"),  # 4 does not divide 41: one cycle
        (40, 4, 2.0, "epoch"),  # a 2-epoch warmup per epoch: min_lr, then half-way, then the peak
        (20, 4, 1.0, "step"),  # per epoch, a 1-epoch warmup would jump from min_lr to the peak
        (8, 1, 1.6, "step"),  # 4 cycles would warm up for 0.4 epochs each
        (4, 1, 0.8, "step"),
        (1, 1, 0.2, "step"),
    ],
)
def test_a_shorter_reference_run_gets_the_schedule_fitted(epochs, cycles, warmup, unit):
    config = preset_config("reference", epochs=epochs, device="cpu")
    assert (config.cycles, config.schedule_unit) == (cycles, unit)
    assert config.warmup_epochs == pytest.approx(warmup)
    validate(config)


def test_explicit_schedule_fields_are_kept_and_checked():
    config = preset_config("reference", epochs=4, cycles=2)
    assert (config.cycles, config.warmup_epochs, config.schedule_unit) == (2, 10.0, "epoch")
    with pytest.raises(ValueError) as info:
        validate(config)
    assert "warmup_epochs=10.0 is out of range" in str(info.value)
    assert fit_schedule(TrainConfig(), -3) == {}  # left to validate, which names it
    with pytest.raises(ValueError, match="epochs=-3 is out of range"):
        validate(preset_config("reference", epochs=-3))


def test_cpu_quick_keeps_its_warmup_share():
    config = preset_config("cpu-quick", epochs=2)
    assert (config.cycles, config.schedule_unit) == (1, "step")
    assert config.warmup_epochs == pytest.approx(2 * 0.5 / 11)  # 0.5 of 11 epochs, kept as a share


def test_auto_preset_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_preset() == "cpu-quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_preset() == "reference"


@pytest.mark.parametrize("name", ["reference", "fast"])
def test_a_gpu_preset_on_a_cpu_stops_at_once_unless_asked_for(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        validate(preset_config(name))
    assert f"preset={name!r} is built for a GPU and no GPU was found" in str(info.value)
    assert "--preset cpu-quick" in str(info.value) and "--device cpu" in str(info.value)
    validate(preset_config(name, device="cpu"))  # the explicit override
