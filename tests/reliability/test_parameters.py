"""Every bad command-line flag or papermill parameter is refused before any work starts, with one
message per bad value naming it and what is allowed."""

from __future__ import annotations

import re

import pytest

from vitlib.config import preset_config
from vitlib.train import TrainingError, main, train

# (flags, fragment of the error). Exit status 2: argparse refused the text; 1: validation.
PARSE_ERRORS = [
    (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--batch_size", "1e3"], "argument --batch_size/--batch-size: invalid int value"),
    (["--train_limit", "half"], "invalid _optional_int value: 'half'"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["--mix", "blend"], "argument --mix: invalid choice: 'blend'"),
    (["--augment", "autoaugment"], "argument --augment: invalid choice: 'autoaugment'"),
    (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["--on_nonfinite", "ignore"], "invalid choice: 'ignore'"),
    (["--schedule_unit", "batch"], "invalid choice: 'batch'"),
    (["--progress_bar", "maybe"], "argument --progress_bar/--progress-bar: invalid choice: 'maybe'"),
    (["--dataset", "MNIST"], "argument --dataset: invalid choice: 'MNIST'"),
    (["--betas", "0.9"], "argument --betas: expected 2 arguments"),
    (["--model_overrides", "depth"], "expected KEY=VALUE, got 'depth'"),
    (["--learning-rate", "1e-3"], "unrecognized arguments: --learning-rate"),
]
VALIDATION_ERRORS = [
    (["--epochs", "0"], "epochs=0 is out of range: an integer >= 1"),
    (["--epochs", "-3"], "epochs=-3 is out of range"),
    (["--batch_size", "0"], "batch_size=0 is out of range: 1..64"),
    (
        ["--batch_size", "65"],
        "batch_size=65 is out of range: 1..64 (the training images of one epoch)",
    ),
    (["--train_limit", "0"], "train_limit=0 is out of range: 1..50000 or None"),
    (["--train_limit", "60000"], "train_limit=60000 is out of range: 1..50000"),
    (["--test_limit", "0"], "test_limit=0 is out of range: 1..10000 or None"),
    (["--val_split", "64"], "val_split=64 is out of range: 0..63 (of the 64 training images)"),
    (["--val_split", "-1"], "val_split=-1 is out of range"),
    (
        ["--val_split", "50"],
        "batch_size=16 is out of range: 1..14 (the training images of one epoch)",
    ),
    (["--test_limit", "10001"], "test_limit=10001 is out of range"),
    (["--lr", "0"], "lr=0.0 is out of range: a finite number > 0"),
    (["--lr", "-1"], "lr=-1.0 is out of range"),
    (["--lr", "nan"], "lr=nan is out of range: a finite number > 0"),
    (["--lr", "inf"], "lr=inf is out of range"),
    (["--min_lr", "1"], "min_lr=1.0 is out of range: [0, lr=0.003]"),
    (["--min_lr=-1e-5"], "min_lr=-1e-05 is out of range"),
    (["--warmup_epochs", "-1"], "warmup_epochs=-1.0 is out of range: [0, epochs / cycles)"),
    (["--warmup_epochs", "9"], "warmup_epochs=9.0 is out of range"),
    (["--cycles", "0"], "cycles=0 is out of range: 1..epochs=3"),
    (["--cycles", "2", "--schedule_unit", "epoch"], "a divisor of epochs=3"),
    (["--betas", "1.0", "0.9"], "betas=(1.0, 0.9) is out of range: two numbers in [0, 1)"),
    (["--betas", "0.9", "-0.1"], "betas=(0.9, -0.1) is out of range"),
    (["--eps", "0"], "eps=0.0 is out of range: (0, 1)"),
    (["--weight_decay", "-0.1"], "weight_decay=-0.1 is out of range: a finite number >= 0"),
    (["--label_smoothing", "1"], "label_smoothing=1.0 is out of range: [0, 1)"),
    (["--mix_alpha", "0"], "mix_alpha=0.0 is out of range: a finite number > 0"),
    (["--mix_prob", "1.5"], "mix_prob=1.5 is out of range: [0, 1]"),
    (["--grad_clip", "-1"], "grad_clip=-1.0 is out of range: a finite number >= 0"),
    (["--ema", "1"], "ema=1.0 is out of range: [0, 1)"),
    (["--seed", "-1"], "seed=-1 is out of range: an integer >= 0"),
    (["--val_split", "-2"], "val_split=-2 is out of range: 0..63 (of the 64 training images)"),
    (["--checkpoint_every", "-1"], "checkpoint_every=-1 is out of range: an integer >= 0"),
    (["--out", ""], "out='' is out of range: a non-empty directory path"),
    (
        ["--model", "vit_huge"],
        "model='vit_huge' is invalid: unknown model 'vit_huge': choose one of",
    ),
    (["--model_overrides", "depth=0"], "depth must be a positive integer, got 0"),
    (["--model_overrides", "depth=two"], "depth must be a positive integer, got 'two'"),
    (["--model_overrides", "patch_size=3"], "image size 32 is not divisible by patch size 3"),
    (["--model_overrides", "head_channels=7"], "not divisible by head_channels=7"),
    (["--model_overrides", "dropout=1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--model_overrides", "bogus=1"], "model_overrides={'bogus': 1} is invalid"),
    (["--device", "tpu"], "device='tpu' is unknown"),
    (["--device", "cuda"], "device='cuda' is not available: no CUDA GPU found"),
    (["--device", "cuda:3"], "device='cuda:3' is not available"),
    (["--precision", "fp16"], "precision='fp16' needs a CUDA device"),
    (["--datapath", "/nonexistent"], "datapath='/nonexistent' has no cifar-10-batches-py/"),
]


@pytest.fixture
def base(tmp_path):
    """Flags of a valid tiny CPU run on a placeholder data folder; the run directory."""
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)
    out = tmp_path / "run"
    flags = ["--preset", "cpu-quick", "--train_limit", "64", "--batch_size", "16", "--epochs", "3"]
    return flags + ["--out", str(out), "--datapath", str(tmp_path / "data")], out


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="the device checks assume no GPU"
)
@pytest.mark.parametrize(
    "flags, message, status",
    [(f, m, 2) for f, m in PARSE_ERRORS] + [(f, m, 1) for f, m in VALIDATION_ERRORS],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flag_is_refused_before_any_work(base, flags, message, status, capsys):
    argv, out = base
    assert main(argv + flags) == status
    err = capsys.readouterr().err
    assert message in err
    if status == 1:  # exactly one complaint, about this value
        assert err.count("\n  ") == 1, err
    assert not out.exists()  # nothing was created: no run directory, no lock


def test_all_bad_values_are_reported_at_once(base, capsys):
    argv, out = base
    bad = ["--epochs", "0", "--lr", "-1", "--seed", "-4", "--ema", "2", "--mix_prob", "-1"]
    assert main(argv + bad) == 1
    err = capsys.readouterr().err
    assert err.count("is out of range") == 5 and not out.exists()


@pytest.mark.parametrize(
    "name, value",
    [
        ("epochs", "3"),  # papermill passes what the user typed: strings, floats, lists
        ("epochs", 3.0),
        ("lr", "1e-3"),
        ("batch_size", 12.5),
        ("augment", True),  # the boolean of earlier versions: now a policy name
        ("betas", [0.9]),
        ("model_overrides", "depth=2"),
        ("train_limit", True),
        ("val_split", "5000"),
        ("compile", 1),
        ("datapath", 5),
    ],
)
def test_papermill_values_of_the_wrong_type(tmp_path, name, value):
    config = preset_config("cpu-quick", out=str(tmp_path / "run"), **{name: value})
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r} has the wrong type")):
        train(config)
    assert not (tmp_path / "run").exists()


def test_unknown_papermill_parameter(tmp_path):
    with pytest.raises(TypeError, match="learning_rate"):
        preset_config("cpu-quick", learning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown preset 'huge': choose one of"):
        preset_config("huge")
    assert not isinstance(TrainingError("x"), ValueError)
