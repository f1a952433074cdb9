"""--time_budget: the schedule follows the clock, training stops when the time is used, a stopped
run resumes on the clock it had used, and every process stops on the main process's clock. A
fake clock that reads 10 s per optimizer step makes every run the same length on any machine."""

import dataclasses
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import StepClock, tiny_argv

from vitlib.checkpoint import load_checkpoint
from vitlib.schedule import lr_at
from vitlib.train import main, train

STEPS = 6  # per epoch of the tiny run


def test_a_run_stops_when_its_time_is_used_and_its_cosine_follows_the_clock(
    tmp_path, tiny_config, capsys
):
    # 1.5 minutes = 9 steps of 10 s: epoch 1 (6 steps), then epoch 2 is cut after 3 steps.
    config, clock = tiny_config(tmp_path / "run", time_budget=1.5), StepClock()
    result = train(config, clock=clock, on_batch=clock.count_step)
    assert result["step"] == 9 and clock.steps == 9
    assert [(e["epoch"], e["step"]) for e in result["history"]] == [(1, 6), (2, 9)]
    # The schedule's shape (3 epochs x 6 steps, warmup 3 steps) runs at t = 18 * elapsed / 90 s,
    # the elapsed time the previous step ended at: 50 s before step 6, 80 s before step 9.
    def lr(seconds):
        return lr_at(18 * seconds / 90, lr=config.lr, min_lr=config.min_lr, warmup=3,
                     cycle_length=18)  # fmt: skip

    assert result["history"][0]["lr"] == pytest.approx(lr(50), rel=1e-4)
    assert result["history"][1]["lr"] == pytest.approx(lr(80), rel=1e-4)
    out = capsys.readouterr().out
    assert "for a 1.5-minute budget" in out and "warmup 16.7% of the time + cosine), on the clock" in out
    assert "epoch   2  train_loss" in out  # no "/3": the length is the time, not the epochs
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["elapsed_s"] >= 90


def test_the_budget_is_a_length_not_a_cap_on_epochs(tmp_path, tiny_config):
    clock = StepClock()
    result = train(tiny_config(tmp_path / "run", time_budget=4.0), clock=clock,
                   on_batch=clock.count_step)  # fmt: skip
    assert result["step"] == 24 and result["epoch"] == 4  # 4 epochs of a 3-epoch shape


def test_a_stopped_run_resumes_on_the_clock_it_had_used(tmp_path, tiny_config, capsys):
    config, clock = tiny_config(tmp_path / "run", time_budget=1.0), StepClock()

    def sigterm_before_step_3(run, images, labels):
        clock.count_step(run, images, labels)
        if clock.steps == 3:  # the run stops after this step
            signal.raise_signal(signal.SIGTERM)

    assert train(config, clock=clock, on_batch=sigterm_before_step_3)["interrupted"]
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["progress"]
    assert saved["elapsed_s"] == pytest.approx(30, abs=0.01)
    capsys.readouterr()
    clock = StepClock()  # a new process: its clock starts anywhere
    resumed = train(dataclasses.replace(config, resume=True), clock=clock,
                    on_batch=clock.count_step)  # fmt: skip
    assert "(step 3, batch 3 of that epoch, 0.5 of 1 min used)" in capsys.readouterr().out
    assert resumed["step"] == 6  # 3 + 3 more: the length of an uninterrupted run
    train(dataclasses.replace(config, resume=True))
    assert "it used its 1-minute budget; nothing to do" in capsys.readouterr().out


def test_time_budget_on_the_command_line_and_a_bad_value(tmp_path, cifar_root, capsys):
    start = time.perf_counter()
    assert main(tiny_argv(tmp_path / "run", cifar_root, "--time_budget", "0.02")) == 0
    assert time.perf_counter() - start < 30  # 1.2 s of training; start-up and one evaluation
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["progress"]
    assert saved["elapsed_s"] >= 1.2 and saved["history"][-1]["lr"] < 3e-3 / 2  # cosine's 2nd half
    assert main(tiny_argv(tmp_path / "bad", cifar_root, "--time_budget", "-1")) == 1
    assert "time_budget=-1.0 is out of range" in capsys.readouterr().err


# Both processes count 10 s per step, but rank 1's own clock reads 1,000 s ahead: a process that
# went by its own clock would stop at once, and the other would wait for it in the next step.
SKEWED_CLOCKS = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv.pop(1))
    from helpers import StepClock
    from vitlib.config import config_from_args
    from vitlib.train import train
    clock = StepClock(ahead=1000.0 if os.environ["RANK"] == "1" else 0.0)
    train(config_from_args(sys.argv[1:]), clock=clock, on_batch=clock.count_step)
    """
)


@pytest.mark.slow
def test_all_processes_stop_at_the_same_step_on_the_main_process_clock(tmp_path, cifar_root):
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED_CLOCKS)
    argv = tiny_argv(tmp_path / "ddp", cifar_root, "--time_budget", "1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(Path(__file__).parent), *argv],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    saved = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert (saved["world_size"], saved["step"]) == (2, 6)  # 60 s of rank 0's clock
