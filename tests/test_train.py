"""The training loop on a tiny model and 128 real images: outputs, exact resume, locks, NaN."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import vitlib.loop as loop_module
from vitlib.checkpoint import load_checkpoint
from vitlib.config import preset_config
from vitlib.data import load_cifar10
from vitlib.evaluate import evaluate_model, load_model
from vitlib.rundir import RunLock
from vitlib.schedule import build_schedule
from vitlib.train import TrainingError, train

TINY_MODEL = {"depth": 1, "dim": 32, "head_channels": 16, "head_dropout": 0.3}


def tiny(out, **overrides):
    """3 epochs x 4 steps of a 109k-parameter model, CutMix + full augmentation + dropout."""
    settings = dict(
        out=str(out),
        train_limit=128,
        test_limit=64,
        epochs=3,
        batch_size=32,
        warmup_epochs=0.5,
        model_overrides=TINY_MODEL,
        augment="recipe",
        mix="cutmix",
        progress="off",
        compile=False,
    )
    return preset_config("cpu-quick", **{**settings, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cifar_root):
    out = tmp_path_factory.mktemp("full") / "run"
    result = train(tiny(out, datapath=str(cifar_root)))
    return out, result


def weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_directory_contents(uninterrupted):
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
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "config"} <= set(state)
    plain = torch.load(out / "last.pt", weights_only=True)  # a standard torch archive
    assert_same_weights(plain["model"], state["model"])
    assert (state["epoch"], state["step"]) == (3, 12)
    # step-wise schedule: 12 scheduler steps; the lr logged for epoch 1 is that of its 4th step
    assert state["scheduler"]["last_epoch"] == 12
    config = tiny(out)
    schedule = build_schedule(lr=config.lr, min_lr=config.min_lr, epochs=3, warmup_epochs=0.5,
                              cycles=1, unit="step", steps_per_epoch=4)  # fmt: skip
    logged = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").open()]
    assert logged == [config.lr * schedule(t) for t in (3, 7, 11)]
    model, best = load_model(out / "best.pt")
    assert best["progress"]["best_acc"] == max(float(r["test_acc"]) for r in rows)
    assert model.config.depth == 1


def test_compiling_leaves_the_batchnorm_statistics_alone(
    uninterrupted, tmp_path, monkeypatch, cifar_root
):
    """Compiling runs one warm-up step on a zero batch; it must not move the stem's BatchNorm
    statistics, or a compiled run would differ from an eager one and resume inexactly.
    (torch.compile is replaced by the identity: the same warm-up, without the compile time.)"""
    monkeypatch.setattr(torch, "compile", lambda model, options=None: model)
    out = tmp_path / "run"
    train(tiny(out, datapath=str(cifar_root), compile=True))
    assert_same_weights(weights(out), weights(uninterrupted[0]))  # buffers included


def test_channels_last_changes_the_memory_order_not_the_run(uninterrupted, tmp_path, cifar_root):
    """``channels_last`` stores the conv weights NHWC (the stem's 3x3 convolutions show it; a 1x1
    or depthwise weight is both layouts at once) and trains the same run: other kernels only
    round otherwise."""
    out = tmp_path / "run"
    result = train(tiny(out, datapath=str(cifar_root), channels_last=True))
    nhwc, nchw = weights(out), weights(uninterrupted[0])
    spatial = [k for k, w in nhwc.items() if w.dim() == 4 and w.shape[1] > 1 and w.shape[-1] > 1]
    assert spatial
    for key in spatial:
        assert nhwc[key].is_contiguous(memory_format=torch.channels_last), key
        assert not nchw[key].is_contiguous(memory_format=torch.channels_last), key
    losses = [e["train_loss"] for e in uninterrupted[1]["history"]]
    assert [e["train_loss"] for e in result["history"]] == pytest.approx(losses, rel=1e-2)


def test_resume_after_a_crash_at_an_epoch_boundary_is_exact(
    uninterrupted, tmp_path, monkeypatch, cifar_root
):
    out = tmp_path / "run"
    real_append = loop_module.append_metrics

    def crash_after_epoch_1(run_dir, record):
        real_append(run_dir, record)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(loop_module, "append_metrics", crash_after_epoch_1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny(out, datapath=str(cifar_root)))
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    result = train(tiny(out, datapath=str(cifar_root), resume=True))
    assert_same_weights(weights(out), weights(uninterrupted[0]))
    assert result["test_acc"] == uninterrupted[1]["test_acc"]
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_sigterm_mid_epoch_saves_and_resume_is_exact(
    uninterrupted, tmp_path, monkeypatch, cifar_root, capsys
):
    out = tmp_path / "run"
    real_loss, calls = loop_module.mixed_loss, []

    def sigterm_on_6th_step(*args):
        calls.append(1)
        if len(calls) == 6:  # epoch 2, batch 2
            signal.raise_signal(signal.SIGTERM)
        return real_loss(*args)

    monkeypatch.setattr(loop_module, "mixed_loss", sigterm_on_6th_step)
    result = train(tiny(out, datapath=str(cifar_root)))
    monkeypatch.undo()
    assert result["interrupted"] == signal.SIGTERM
    state = load_checkpoint(out / "last.pt")
    assert (state["progress"]["epoch"], state["progress"]["batch"], state["step"]) == (1, 2, 6)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    capsys.readouterr()
    train(tiny(out, datapath=str(cifar_root), resume=True))
    assert "resuming from epoch 2 (step 6, batch 2 of that epoch)" in capsys.readouterr().out
    assert_same_weights(weights(out), weights(uninterrupted[0]))


def test_second_run_into_the_same_directory_refuses(uninterrupted, cifar_root):
    out = uninterrupted[0]
    with pytest.raises(TrainingError, match="already holds a run .*--resume"):
        train(tiny(out, datapath=str(cifar_root)))
    with RunLock(out, resume=True):  # as a live run in this process holds it
        with pytest.raises(TrainingError, match=f"in use by process {os.getpid()}"):
            train(tiny(out, datapath=str(cifar_root), resume=True))
    assert not (out / "run.lock").exists()


def test_stale_lock_is_taken_over_only_when_resuming(tmp_path, cifar_root):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run.lock").write_text(f"{dead.pid} {os.uname().nodename}\n")
    with pytest.raises(TrainingError, match="stale lock .*--resume"):
        train(tiny(out, datapath=str(cifar_root), epochs=1))


def test_resume_refuses_a_changed_config(uninterrupted, cifar_root):
    with pytest.raises(ValueError, match=r"different config.*lr: 0.003 -> 0.01"):
        train(tiny(uninterrupted[0], datapath=str(cifar_root), resume=True, lr=0.01))


def test_resume_without_checkpoint(tmp_path, cifar_root):
    with pytest.raises(FileNotFoundError, match=r"last\.pt does not exist"):
        train(tiny(tmp_path / "empty", datapath=str(cifar_root), resume=True))


def nan_on_6th_step(monkeypatch):
    real_loss, calls = loop_module.mixed_loss, []

    def loss(*args):
        calls.append(1)
        value = real_loss(*args)
        return value * float("nan") if len(calls) == 6 else value

    monkeypatch.setattr(loop_module, "mixed_loss", loss)


def test_nonfinite_loss_stops_naming_step_lr_and_checkpoint(tmp_path, monkeypatch, cifar_root):
    nan_on_6th_step(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(tiny(out, datapath=str(cifar_root)))
    message = str(info.value)
    assert "non-finite loss (nan) at step 6 (epoch 2, batch 2), lr " in message
    assert f"last good checkpoint: {out / 'last.pt'}" in message
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the good checkpoint is intact


def test_nonfinite_loss_skip_option(tmp_path, monkeypatch, cifar_root):
    nan_on_6th_step(monkeypatch)
    result = train(tiny(tmp_path / "run", datapath=str(cifar_root), on_nonfinite="skip"))
    assert [r["skipped_steps"] for r in result["history"]] == [0, 1, 1]
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "run").values())


def test_mixup_ema_and_tta(tmp_path, cifar_root):
    out = tmp_path / "run"
    config = tiny(out, datapath=str(cifar_root), epochs=1, mix="mixup", ema=0.5, tta=True)
    result = train(config)
    state = load_checkpoint(out / "last.pt")
    assert state["ema_n_averaged"] == 4  # one EMA update per step
    assert not torch.equal(state["ema"]["head.weight"], state["model"]["head.weight"])
    model, _ = load_model(out / "last.pt")  # evaluation uses the EMA weights
    assert torch.equal(model.state_dict()["head.weight"], state["ema"]["head.weight"])
    images, labels = load_cifar10(cifar_root, "test", limit=64)
    again = evaluate_model(model, images, labels, tta=True, autocast_dtype=torch.bfloat16)
    assert result["epoch"] == 1 and result["test_acc"] == again["accuracy"]  # EMA, flip TTA


def test_training_curves_with_the_reference_overlaid(uninterrupted):
    from vitlib.plots import load_reference_log, plot_training

    reference = load_reference_log()
    assert reference["epoch"][-1] == 200 and reference["test_acc"][-1] == 0.968
    assert reference["lr"][11] == 1e-3  # the recorded run peaked in epoch 12 (its quirk)
    fig = plot_training(uninterrupted[0])
    loss_ax, acc_ax, lr_ax = fig.axes
    assert len(acc_ax.lines) == 2 and list(acc_ax.lines[0].get_xdata()) == [1, 2, 3]
    assert lr_ax.get_yscale() == "log"


def test_validation_split_selects_best_pt(tmp_path, cifar_root):
    """With --val_split, best.pt is the epoch of the best validation accuracy (held out of the
    training images), not of the best test accuracy; without it val_acc is nan."""
    out = tmp_path / "run"
    result = train(tiny(out, datapath=str(cifar_root), val_split=32, test_limit=32))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    val = [float(r["val_acc"]) for r in rows]
    assert all(0 <= v <= 1 for v in val)
    assert load_checkpoint(out / "last.pt")["step"] == 3 * 3  # 96 training images, batch 32
    best = load_checkpoint(out / "best.pt")
    chosen = max(range(len(val)), key=lambda i: (val[i], i))  # ties: the later epoch
    assert best["epoch"] == chosen + 1 and best["progress"]["best_acc"] == max(val)
    assert result["val_acc"] == val[-1]


def test_no_validation_split_writes_nan(uninterrupted):
    out, _ = uninterrupted
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert all(r["val_acc"] == "nan" for r in rows)


def test_the_run_says_how_long_it_will_take_and_what_resume_does(tmp_path, cifar_root, capsys):
    config = tiny(tmp_path / "run", datapath=str(cifar_root))
    train(config)
    out = capsys.readouterr().out
    assert "s per step: about" in out and " s for the remaining 1 steps" in out  # 12 steps
    train(dataclasses.replace(config, resume=True))
    out = capsys.readouterr().out
    assert "already holds the complete run (3 epochs): nothing to do" in out
