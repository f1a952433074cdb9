"""--time_budget: the schedule follows the clock, training stops when the time is used, a stopped
run resumes on the clock it had used. A fake clock that advances 10 s per optimizer step makes
every run the same length on any machine."""

import dataclasses
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest
from test_ddp import FLAGS
from test_train import tiny

import vitlib.loop as loop_module
import vitlib.train as train_module
from vitlib.checkpoint import load_checkpoint
from vitlib.schedule import lr_at
from vitlib.train import main, train

STEP_S = 10.0  # fake seconds per optimizer step; the tiny run has 4 steps per epoch


@pytest.fixture
def step_clock(monkeypatch):
    """``time.perf_counter`` in the training engine reads 10 s per loss computed (one per step),
    plus a microsecond per call so that no interval is zero. Returns the list of steps' losses."""
    steps, calls = [], [0]
    real_loss = loop_module.mixed_loss

    def perf_counter() -> float:
        calls[0] += 1
        return STEP_S * len(steps) + 1e-6 * calls[0]

    def counting_loss(*args):
        steps.append(1)
        return real_loss(*args)

    fake_time = types.SimpleNamespace(perf_counter=perf_counter)
    monkeypatch.setattr(loop_module, "time", fake_time)
    monkeypatch.setattr(train_module, "time", fake_time)
    monkeypatch.setattr(loop_module, "mixed_loss", counting_loss)
    return steps


def test_a_run_stops_when_its_time_is_used_and_its_cosine_ends_there(
    tmp_path, cifar_root, step_clock, capsys
):
    # 1 minute = 6 steps of 10 s: epoch 1 (4 steps), then epoch 2 is cut after 2 steps.
    config = tiny(tmp_path / "run", datapath=str(cifar_root), time_budget=1.0)
    result = train(config)
    assert result["step"] == 6 and len(step_clock) == 6
    assert [e["epoch"] for e in result["history"]] == [1, 2]
    assert [e["step"] for e in result["history"]] == [4, 6]
    # The schedule (3 epochs x 4 steps, warmup 2 steps) runs at t = 12 * elapsed / 60 s.
    warmup, length = 0.5 * 4, 3 * 4
    end_of_epoch_1 = lr_at(length * 40 / 60, lr=config.lr, min_lr=config.min_lr, warmup=warmup,
                           cycle_length=length)  # fmt: skip
    assert result["history"][0]["lr"] == pytest.approx(end_of_epoch_1, rel=1e-4)
    assert result["history"][1]["lr"] == pytest.approx(config.min_lr)  # the cosine's end
    out = capsys.readouterr().out
    assert (
        "for a 1-minute budget" in out and "warmup 16.7% of the time + cosine), on the clock" in out
    )
    assert "epoch   2  train_loss" in out  # no "/3": the length is the time, not the epochs
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["elapsed_s"] >= 60


def test_the_budget_is_a_length_not_a_cap_on_epochs(tmp_path, cifar_root, step_clock):
    # 3 epochs set the schedule's shape; 2 min 15 s = 14 steps of 10 s: 3 epochs and 2 steps.
    result = train(tiny(tmp_path / "run", datapath=str(cifar_root), time_budget=2.25))
    assert result["step"] == 14 and [e["epoch"] for e in result["history"]] == [1, 2, 3, 4]


def test_a_stopped_run_resumes_on_the_clock_it_had_used(tmp_path, cifar_root, step_clock, capsys):
    counting_loss = loop_module.mixed_loss

    def sigterm_on_3rd_step(*args):
        if len(step_clock) == 2:  # the run stops after this step
            signal.raise_signal(signal.SIGTERM)
        return counting_loss(*args)

    loop_module.mixed_loss = sigterm_on_3rd_step  # step_clock's monkeypatch restores the original
    config = tiny(tmp_path / "run", datapath=str(cifar_root), time_budget=1.0)
    stopped = train(config)
    assert stopped["interrupted"] == signal.SIGTERM
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["elapsed_s"] == pytest.approx(
        30, abs=0.01
    )
    loop_module.mixed_loss = counting_loss
    capsys.readouterr()
    resumed = train(dataclasses.replace(config, resume=True))
    assert "(step 3, batch 3 of that epoch, 0.5 of 1 min used)" in capsys.readouterr().out
    assert resumed["step"] == 6  # 3 + 3 more: the same length as an uninterrupted run
    train(dataclasses.replace(config, resume=True))
    assert "it used its 1-minute budget; nothing to do" in capsys.readouterr().out


def test_time_budget_on_the_command_line_and_a_bad_value(tmp_path, cifar_root, capsys):
    flags = ["--preset", "cpu-quick", "--datapath", str(cifar_root), "--train_limit", "128",
             "--test_limit", "32", "--batch_size", "32", "--model_overrides", "depth=1", "dim=32",
             "head_channels=16", "--no-compile", "--progress", "off"]  # fmt: skip
    start = time.perf_counter()
    assert main([*flags, "--out", str(tmp_path / "run"), "--time_budget", "0.02"]) == 0
    assert time.perf_counter() - start < 30  # 1.2 s of training; start-up and one evaluation
    history = load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["history"]
    assert history[-1]["lr"] == pytest.approx(1e-5)  # the preset's min_lr: the cosine ended
    assert main([*flags, "--out", str(tmp_path / "bad"), "--time_budget", "-1"]) != 0
    assert "time_budget" in capsys.readouterr().err


# Both ranks count 10 s per step, but rank 1's own clock reads 1,000 s ahead: a rank that went by
# its own clock would stop at once, and the other would wait for it in the next all-reduce.
SKEWED_CLOCKS = textwrap.dedent(
    """
    import sys, types, torch.distributed as dist, vitlib.loop as loop, vitlib.train as t
    steps, real = [], loop.mixed_loss
    def counting_loss(*args):
        steps.append(1)
        return real(*args)
    def perf_counter():
        ahead = 1000.0 if dist.is_initialized() and dist.get_rank() == 1 else 0.0
        return 10.0 * len(steps) + ahead
    loop.time = t.time = types.SimpleNamespace(perf_counter=perf_counter)
    loop.mixed_loss = counting_loss
    sys.exit(t.main(sys.argv[1:]))
    """
)


def test_all_processes_stop_at_the_same_step_on_the_main_process_clock(tmp_path, cifar_root):
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED_CLOCKS)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), *FLAGS, "--datapath", str(cifar_root), "--out", str(tmp_path / "ddp"),
         "--time_budget", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    saved = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert (saved["world_size"], saved["step"]) == (2, 6)  # 60 s of rank 0's clock
    assert saved["progress"]["history"][-1]["lr"] == pytest.approx(1e-5)  # min_lr: the end
