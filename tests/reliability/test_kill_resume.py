"""A run killed at random moments (SIGKILL, also mid-checkpoint-write) or stopped by SIGTERM /
SIGINT, then resumed, ends with exactly the weights, optimizer state, best.pt and metrics of an
uninterrupted run; a live run's directory is refused to a second process."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import assert_same_tensors, tiny_argv

from vitlib.checkpoint import load_checkpoint
from vitlib.train import main, train

# The child trains through the CLI on a slow disk: every fsync waits 50 ms, so a checkpoint
# write (temporary file -> fsync -> rename) is a window that random kills can hit.
CHILD = """
import os, sys, time
real_fsync = os.fsync
os.fsync = lambda fd: (time.sleep(0.05), real_fsync(fd))[1]
from vitlib.train import main
sys.exit(main(sys.argv[1:]))
"""
KILLS = 12
TIMING_COLUMNS = {"seconds", "train_images_per_s"}


def launch(run_dir, datapath, log):
    """Start the tiny run (4 epochs x 6 steps, a checkpoint every step) in a child process."""
    argv = tiny_argv(run_dir, datapath, "--checkpoint_every", "1", "--epochs", "4")
    if run_dir.exists():
        argv.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv], stdout=log, stderr=subprocess.STDOUT, env=env
    )


def wait_for(condition, child, timeout=120.0) -> bool:
    """Poll ``condition`` every 2 ms until true (True) or the child exits (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if child.poll() is not None:
            return False
        time.sleep(0.002)
    raise TimeoutError("child made no progress")


def training_started(log_path):
    return lambda: "parameters" in log_path.read_text()


def writing_checkpoint(run_dir):
    return lambda: any(run_dir.glob(".*.pt.tmp-*"))


def metrics(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.mark.slow
def test_random_kills_and_signals_lose_nothing(tmp_path, cifar_root, capsys):
    reference, run = tmp_path / "reference", tmp_path / "run"
    with open(tmp_path / "reference.log", "w") as log:
        launched = time.monotonic()
        child = launch(reference, cifar_root, log)
    assert wait_for(training_started(tmp_path / "reference.log"), child)
    startup = time.monotonic() - launched
    assert child.wait() == 0
    # Each interrupted attempt trains for at most one slice, so the 14 attempts before the last
    # cover at most 14/24 of the run: it cannot finish early, and every kill and signal lands.
    slice_ = (time.monotonic() - launched - startup) / (2 * KILLS)
    chance = random.Random(2024)
    kills = mid_write = signals = 0
    for attempt in range(KILLS + 3):
        log_path = tmp_path / f"attempt{attempt}.log"
        with open(log_path, "w") as log:
            child = launch(run, cifar_root, log)
        if attempt == 1:  # a live run holds the lock: a second process is refused
            assert wait_for(training_started(log_path), child)
            assert main(tiny_argv(run, cifar_root, "--resume")) == 1
            assert f"in use by process {child.pid}" in capsys.readouterr().err
        if attempt >= KILLS + 2:  # the last attempt runs to the end
            assert child.wait() == 0, log_path.read_text()
            break
        if attempt in (3, 7):  # Colab interrupt / preemption notice: save, then exit 128 + sig
            sig = signal.SIGINT if attempt == 3 else signal.SIGTERM
            if wait_for(training_started(log_path), child):
                time.sleep(chance.uniform(0, slice_))
                child.send_signal(sig)
            assert child.wait() in (0, 128 + sig), log_path.read_text()
            signals += child.returncode == 128 + sig
            assert not (run / "run.lock").exists()
            continue
        if attempt % 4 == 1:  # kill while a checkpoint is being written
            wait_for(writing_checkpoint(run), child)
        else:
            try:
                child.wait(timeout=chance.uniform(0, startup + slice_))
            except subprocess.TimeoutExpired:
                pass
        if child.poll() is None:
            child.kill()
            child.wait()
            kills += 1
            mid_write += any(run.glob(".*.pt.tmp-*"))
    print(f"\n{kills} SIGKILLs ({mid_write} mid-checkpoint-write), {signals} SIGINT/SIGTERM stops")
    assert kills >= 10 and mid_write >= 1 and signals == 2
    final, expected = load_checkpoint(run / "last.pt"), load_checkpoint(reference / "last.pt")
    assert_same_tensors(final["model"], expected["model"])
    assert final["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for key, value in expected["optimizer"]["state"].items():
        assert_same_tensors(final["optimizer"]["state"][key], value)
    assert final["scaler"] == expected["scaler"] and final["step"] == expected["step"]
    assert_same_tensors(
        load_checkpoint(run / "best.pt")["model"], load_checkpoint(reference / "best.pt")["model"]
    )
    assert metrics(run) == metrics(reference)
    assert sorted(os.listdir(run)) == sorted(os.listdir(reference))  # no lock, no temp files


def test_ctrl_c_in_a_notebook_saves_then_resume_is_exact(tiny_config, tmp_path):
    """SIGINT (Ctrl-C, Colab's interrupt button) before step 8, in-process; tests/test_train.py
    covers SIGTERM the same way."""
    sig = signal.SIGINT
    before = signal.getsignal(sig)  # SIG_IGN in a process started in the background (cmd &)
    reference = train(tiny_config(tmp_path / "reference"))

    def interrupt_before_step_8(run, images, labels):
        if run.progress.step + 1 == 8:  # epoch 2, batch 2
            signal.raise_signal(sig)

    out = tmp_path / "run"
    assert train(tiny_config(out), on_batch=interrupt_before_step_8)["interrupted"] == sig
    saved = load_checkpoint(out / "last.pt")
    assert (saved["progress"]["epoch"], saved["progress"]["batch"], saved["step"]) == (1, 2, 8)
    assert signal.getsignal(sig) == before  # training restored the handler it found
    result = train(tiny_config(out, resume=True))
    assert result["history"] == [
        {**row, "seconds": r["seconds"], "train_images_per_s": r["train_images_per_s"]}
        for row, r in zip(reference["history"], result["history"], strict=True)
    ]
    assert_same_tensors(
        load_checkpoint(out / "last.pt")["model"],
        load_checkpoint(tmp_path / "reference" / "last.pt")["model"],
    )
