"""The training run on the tiny config: what it writes, exact resume, locks, non-finite losses,
EMA and TTA, the validation split, the learning rate of every step, and the recipes no preset
test runs otherwise (the reference recipe's restarts, fp16 with gradient clipping)."""

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from helpers import TINY_MODEL, assert_same_tensors

from vitlib.checkpoint import load_checkpoint
from vitlib.data import load_cifar10
from vitlib.evaluate import evaluate_model, load_model
from vitlib.rundir import RunLock
from vitlib.schedule import lr_at
from vitlib.train import TrainingError, train

STEPS = 6  # per epoch of the tiny run: 96 images in batches of 16


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("full") / "run"
    return out, train(tiny_config(out))


def weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def at_step(n, action):
    """An ``on_batch`` hook that calls ``action(images)`` before the run's n-th step."""

    def hook(run, images, labels):
        if run.progress.step + 1 == n:
            action(images)

    return hook


def test_run_directory_contents(uninterrupted, tiny_config):
    out, result = uninterrupted
    assert {"config.json", "metrics.csv", "metrics.jsonl", "last.pt", "best.pt"} <= set(
        os.listdir(out)
    )
    assert not (out / "run.lock").exists()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"epoch", "train_loss", "test_loss", "test_acc", "lr", "seconds"} <= set(rows[0])
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").open()] == [1, 2, 3]
    assert float(rows[-1]["test_acc"]) == pytest.approx(result["test_acc"])
    assert json.loads((out / "config.json").read_text())["model_overrides"] == TINY_MODEL
    state = load_checkpoint(out / "last.pt")
    assert {"model", "optimizer", "scaler", "epoch", "step", "config", "progress"} <= set(state)
    plain = torch.load(out / "last.pt", weights_only=True)  # a standard torch archive
    assert_same_tensors(plain["model"], state["model"])
    assert (state["epoch"], state["step"]) == (3, 3 * STEPS)
    model, best = load_model(out / "best.pt")
    assert best["progress"]["best_acc"] == max(float(r["test_acc"]) for r in rows)
    assert best["optimizer"] is None and model.config.depth == 1


def test_every_step_takes_its_learning_rate_from_lr_at(tmp_path, tiny_config):
    """Per step (cpu-quick): step s runs at lr_at(s); the metrics log each epoch's last step."""
    config, seen = tiny_config(tmp_path / "run"), []
    train(config, on_batch=lambda run, images, labels: seen.append(run.progress.step))
    lrs = [lr_at(s, lr=config.lr, min_lr=config.min_lr, warmup=0.5 * STEPS,
                 cycle_length=3 * STEPS) for s in seen]  # fmt: skip
    assert seen == list(range(3 * STEPS)) and lrs[0] == config.min_lr
    logged = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert logged == [lrs[STEPS - 1], lrs[2 * STEPS - 1], lrs[3 * STEPS - 1]]


@pytest.mark.slow
def test_the_reference_recipe_restarts_inside_the_run_and_resumes_mid_cycle(tmp_path, tiny_config):
    """The reference preset's own loop, tiny: per-epoch lr with 2 warm restarts in 4 epochs
    (cycles of 2 epochs, warmup 1 epoch), stopped mid-cycle and resumed, then extended."""
    settings = dict(cycles=2, epochs=4, warmup_epochs=1.0, schedule_unit="epoch", lr=2e-3)
    config = dataclasses.replace(tiny_config(tmp_path / "whole"), preset="reference", **settings)
    whole = train(config)
    assert [r["lr"] for r in whole["history"]] == [1e-5, 2e-3, 1e-5, 2e-3]  # restart at epoch 3
    out = tmp_path / "stopped"
    stopped = dataclasses.replace(config, out=str(out))
    sigterm = at_step(2 * STEPS + 2, lambda images: signal.raise_signal(signal.SIGTERM))
    assert train(stopped, on_batch=sigterm)["interrupted"] == signal.SIGTERM
    assert load_checkpoint(out / "last.pt")["step"] == 2 * STEPS + 2  # inside cycle 2
    resumed = train(dataclasses.replace(stopped, resume=True))
    assert [r["lr"] for r in resumed["history"]] == [r["lr"] for r in whole["history"]]
    assert_same_tensors(weights(out), weights(tmp_path / "whole"))
    extended = train(dataclasses.replace(stopped, resume=True, epochs=6))  # cycles of 3 epochs
    assert [r["lr"] for r in extended["history"]][4:] == pytest.approx([2e-3, 1.005e-3])


def test_fp16_loss_scaling_clips_the_unscaled_gradients(tmp_path, tiny_config):
    """The step a T4 runs (fp16 autocast, a GradScaler, --grad_clip), here on a CPU: the run is
    switched to fp16 with a live loss scaler before its first step. The optimizer then sees the
    gradients unscaled and clipped, and last.pt keeps the scaler's state."""
    norms = []

    def total_norm(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.nn.utils.get_total_norm(grads).item())

    def fp16_on_this_cpu(run, images, labels):
        if run.progress.step == 0:
            run.amp_dtype, run.scaler = torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0**12)
            run.optimizer.register_step_pre_hook(total_norm)

    out = tmp_path / "run"
    result = train(tiny_config(out, epochs=1, grad_clip=0.05), on_batch=fp16_on_this_cpu)
    assert math.isfinite(result["train_loss"]) and len(norms) == STEPS
    assert max(norms) <= 0.05 * 1.001  # unscaled first: scaled gradients are 4096x larger
    assert load_checkpoint(out / "last.pt")["scaler"]["scale"] > 1


@pytest.mark.slow
def test_the_fast_preset_runs_on_a_cpu_when_asked(tmp_path, tiny_config):
    """The fast preset (per-step schedule, precision auto -> fp32 on a CPU, torch.compile) for one
    tiny epoch with --device cpu; without it a CPU is refused (tests/test_train_config.py)."""
    config = dataclasses.replace(tiny_config(tmp_path / "run", epochs=1), preset="fast",
                                 device="cpu", precision="auto", compile=True, lr=2e-3)  # fmt: skip
    result = train(config)
    assert result["step"] == STEPS and math.isfinite(result["train_loss"])


def test_resume_after_a_crash_at_an_epoch_boundary_is_exact(uninterrupted, tmp_path, tiny_config):
    out = tmp_path / "run"

    def crash_after_epoch_1(run, record):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(out), on_epoch_end=crash_after_epoch_1)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    result = train(tiny_config(out, resume=True))
    assert_same_tensors(weights(out), weights(uninterrupted[0]))
    assert result["test_acc"] == uninterrupted[1]["test_acc"]
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_sigterm_mid_epoch_saves_and_resume_is_exact(uninterrupted, tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    sigterm = at_step(STEPS + 2, lambda images: signal.raise_signal(signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    result = train(tiny_config(out), on_batch=sigterm)
    assert result["interrupted"] == signal.SIGTERM
    state = load_checkpoint(out / "last.pt")
    assert (state["progress"]["epoch"], state["progress"]["batch"], state["step"]) == (1, 2, 8)
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    capsys.readouterr()
    train(tiny_config(out, resume=True))
    assert "resuming from epoch 2 (step 8, batch 2 of that epoch)" in capsys.readouterr().out
    assert_same_tensors(weights(out), weights(uninterrupted[0]))


def test_a_stop_at_an_epochs_last_step_resumes_with_its_record_intact(uninterrupted, tmp_path,
                                                                       tiny_config):  # fmt: skip
    """SIGTERM before step 6, the last of epoch 1: last.pt holds the finished batches of an
    epoch not yet evaluated; the resumed run evaluates it with that epoch's learning rate."""
    out = tmp_path / "run"
    sigterm = at_step(STEPS, lambda images: signal.raise_signal(signal.SIGTERM))
    assert train(tiny_config(out), on_batch=sigterm)["interrupted"] == signal.SIGTERM
    resumed = train(tiny_config(out, resume=True))
    assert [r["lr"] for r in resumed["history"]] == [r["lr"] for r in uninterrupted[1]["history"]]
    assert_same_tensors(weights(out), weights(uninterrupted[0]))


def test_second_run_into_the_same_directory_refuses(uninterrupted, tiny_config):
    out = uninterrupted[0]
    with pytest.raises(TrainingError, match="already holds a run .*--resume"):
        train(tiny_config(out))
    with RunLock(out, resume=True):  # as a live run in this process holds it
        with pytest.raises(TrainingError, match=f"in use by process {os.getpid()}"):
            train(tiny_config(out, resume=True))
    assert not (out / "run.lock").exists()


def test_stale_lock_is_taken_over_only_when_resuming(tmp_path, tiny_config):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run.lock").write_text(f"{dead.pid} {os.uname().nodename}\n")
    with pytest.raises(TrainingError, match="stale lock .*--resume"):
        train(tiny_config(out, epochs=1))
    assert train(tiny_config(out, epochs=1, resume=True))["epoch"] == 1


def test_resume_refuses_a_changed_config(uninterrupted, tiny_config):
    with pytest.raises(ValueError, match=r"different config.*lr: 0.003 -> 0.01"):
        train(tiny_config(uninterrupted[0], resume=True, lr=0.01))


def test_resume_without_checkpoint(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match=r"last\.pt does not exist"):
        train(tiny_config(tmp_path / "empty", resume=True))


def nan_at_step(n):
    """An ``on_batch`` hook that makes the n-th step's loss NaN: the classifier's bias is +inf
    for that step only, so every logit is inf (inf - inf in the softmax)."""
    kept = {}

    def hook(run, images, labels):
        bias = run.model.head.bias.data
        if run.progress.step + 1 == n:
            kept["bias"] = bias.clone()
            bias.fill_(float("inf"))
        elif "bias" in kept:
            bias.copy_(kept.pop("bias"))

    return hook


def test_nonfinite_loss_stops_naming_step_lr_and_checkpoint(tmp_path, tiny_config):
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(tiny_config(out), on_batch=nan_at_step(STEPS + 2))
    message = str(info.value)
    assert "non-finite loss (nan) at step 8 (epoch 2, batch 2), lr " in message
    assert f"last good checkpoint: {out / 'last.pt'}" in message
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the good checkpoint is intact


def test_nonfinite_loss_skip_option(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = train(tiny_config(out, on_nonfinite="skip"), on_batch=nan_at_step(STEPS + 2))
    assert [r["skipped_steps"] for r in result["history"]] == [0, 1, 1]
    assert all(torch.isfinite(v).all() for v in weights(out).values())


def test_ema_and_tta(tmp_path, tiny_config, cifar_root):
    out = tmp_path / "run"
    result = train(tiny_config(out, epochs=1, ema=0.5, tta=True))
    state = load_checkpoint(out / "last.pt")
    assert state["ema_n_averaged"] == STEPS  # one EMA update per step
    assert not torch.equal(state["ema"]["head.weight"], state["model"]["head.weight"])
    model, _ = load_model(out / "last.pt")  # evaluation uses the EMA weights
    assert torch.equal(model.state_dict()["head.weight"], state["ema"]["head.weight"])
    images, labels = load_cifar10(cifar_root, "test", limit=32)
    again = evaluate_model(model, images, labels, tta=True, autocast_dtype=torch.bfloat16)
    assert result["epoch"] == 1 and result["test_acc"] == again["accuracy"]  # EMA, flip TTA


def test_compiling_leaves_the_batchnorm_statistics_alone(uninterrupted, tmp_path, tiny_config):
    """Compiling runs one warm-up step on a zero batch; it must not move the stem's BatchNorm
    statistics, or a compiled run would differ from an eager one and resume inexactly. (The
    warm-up is checked through ``torch.compile`` replaced by the identity: no compile time.)"""
    real_compile = torch.compile
    torch.compile = lambda model, options=None: model
    try:
        train(tiny_config(tmp_path / "run", compile=True))
    finally:
        torch.compile = real_compile
    assert_same_tensors(weights(tmp_path / "run"), weights(uninterrupted[0]))  # buffers too


def test_channels_last_changes_the_memory_order_not_the_run(uninterrupted, tmp_path, tiny_config):
    out = tmp_path / "run"
    result = train(tiny_config(out, channels_last=True))
    stem = weights(out)["stem.layers.0.weight"]
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    assert weights(uninterrupted[0])["stem.layers.0.weight"].is_contiguous()
    losses = [r["train_loss"] for r in result["history"]]
    expected = [r["train_loss"] for r in uninterrupted[1]["history"]]
    assert losses == pytest.approx(expected, rel=1e-2)


def test_validation_split_selects_best_pt(tmp_path, tiny_config):
    """With --val_split, best.pt is the epoch of the best validation accuracy (held out of the
    training images), not of the best test accuracy; without it val_acc is nan."""
    out = tmp_path / "run"
    result = train(tiny_config(out, val_split=32))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    val = [float(r["val_acc"]) for r in rows]
    assert all(0 <= v <= 1 for v in val)
    assert load_checkpoint(out / "last.pt")["step"] == 3 * 4  # 64 training images left
    best = load_checkpoint(out / "best.pt")
    chosen = max(range(len(val)), key=lambda i: (val[i], i))  # ties: the later epoch
    assert best["epoch"] == chosen + 1 and best["progress"]["best_acc"] == max(val)
    assert result["val_acc"] == val[-1]


def test_no_validation_split_writes_nan(uninterrupted):
    rows = list(csv.DictReader((uninterrupted[0] / "metrics.csv").open()))
    assert all(r["val_acc"] == "nan" for r in rows)


def test_the_progress_bar_shows_the_time_left_and_resume_says_what_it_does(
    tmp_path, tiny_config, capsys
):
    config = tiny_config(tmp_path / "run", progress_bar="on")
    train(config)
    bar = capsys.readouterr().err
    assert f"{3 * STEPS}/{3 * STEPS}" in bar and "step/s" in bar  # tqdm: steps, rate, time left
    train(dataclasses.replace(config, resume=True))
    out = capsys.readouterr().out
    assert "already holds the complete run (3 epochs): nothing to do" in out


def test_training_curves_with_the_reference_overlaid(uninterrupted):
    from vitlib.plots import load_reference_log, plot_training

    reference = load_reference_log()
    assert reference["epoch"][-1] == 200 and reference["test_acc"][-1] == 0.968
    assert reference["lr"][11] == 1e-3  # the recorded run peaked in epoch 12, one epoch late
    loss_ax, acc_ax, lr_ax = plot_training(uninterrupted[0]).axes
    assert len(acc_ax.lines) == 2 and list(acc_ax.lines[0].get_xdata()) == [1, 2, 3]
    assert lr_ax.get_yscale() == "log"
