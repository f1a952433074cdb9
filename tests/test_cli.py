"""The command line: every flag documented, seed README spellings, unknown flags rejected."""

import dataclasses
import subprocess
import sys

import pytest

from vitlib.config import TrainConfig, build_parser, config_from_args, preset_config
from vitlib.train import main


def test_help_documents_every_flag(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in text
        assert f"--{f.name.replace('_', '-')}" in text
    assert "(default: {'reference': 128, 'fast': 512, 'cpu-quick': 128})" in text
    assert "$VITLIB_DATA" in text


def test_module_entry_point():
    run = subprocess.run(
        [sys.executable, "-m", "vitlib.train", "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0 and "usage: python -m vitlib.train" in run.stdout


def test_seed_readme_flags_in_their_working_spelling():
    argv = (
        "--dataset CIFAR-10 --datapath /data --batch_size 128 --epochs 200 --lr 1e-3 "
        "--weight_decay 1e-1 --min_lr 1e-5 --warmup_epochs 10"
    ).split()
    assert config_from_args(argv) == TrainConfig(datapath="/data")


def test_dash_spellings_and_other_fields():
    config = config_from_args(
        "--preset fast --batch-size 256 --weight-decay 0.05 --betas 0.9 0.95 --train-limit 1000 "
        "--no-compile --model_overrides depth=2 attention=reference --seed 3 --device cpu".split()
    )
    assert config == preset_config(
        "fast",
        batch_size=256,
        weight_decay=0.05,
        betas=(0.9, 0.95),
        train_limit=1000,
        compile=False,
        model_overrides={"depth": 2, "attention": "reference"},
        seed=3,
        device="cpu",
    )


@pytest.mark.parametrize(
    "argv", [["--learning", "rate", "1e-3"], ["--warm-up", "epochs", "10"], ["--bogus"]]
)
def test_unknown_flags_are_errors(argv, capsys):
    assert main(argv) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_bad_values_are_errors(capsys):
    assert main(["--mix", "blend"]) == 2
    assert "invalid choice: 'blend'" in capsys.readouterr().err
    assert main(["--epochs", "0", "--lr", "-1", "--datapath", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert "epochs=0 is out of range" in err and "lr=-1.0 is out of range" in err
    assert "datapath='/nonexistent' has no cifar-10-batches-py/" in err


def test_datapath_defaults_to_vitlib_data(monkeypatch, tmp_path):
    assert config_from_args([]).datapath is None  # resolved from VITLIB_DATA by validate/load
    monkeypatch.delenv("VITLIB_DATA", raising=False)
    assert main(["--out", str(tmp_path / "run")]) == 1


def test_resume_reads_the_saved_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = preset_config("cpu-quick", out=str(run), epochs=7, betas=(0.8, 0.9))
    (run / "config.json").write_text(__import__("json").dumps(dataclasses.asdict(saved)))
    config = config_from_args(["--out", str(run), "--resume", "--device", "cpu"])
    assert config == dataclasses.replace(saved, resume=True)


def test_parser_flags_are_unique():
    parser = build_parser()
    strings = [s for action in parser._actions for s in action.option_strings]
    assert len(strings) == len(set(strings))


def test_a_few_epochs_of_the_recipe_from_the_command_line(capsys):
    """--epochs alone fits the reference schedule to the run (it was refused before: 4 cycles
    and a 10-epoch warmup do not fit in 4 epochs); explicit schedule flags are kept."""
    config = config_from_args(["--epochs", "4"])
    assert (config.cycles, config.warmup_epochs, config.schedule_unit) == (1, 0.8, "step")
    kept = config_from_args(["--epochs", "4", "--warmup_epochs", "1", "--cycles", "1"])
    assert (kept.cycles, kept.warmup_epochs, kept.schedule_unit) == (1, 1.0, "epoch")
