"""The run directory's lock dies with its process, and a run too big for the memory is refused
before it starts."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import vitlib
from vitlib import hardware
from vitlib.rundir import RunLock, TrainingError
from vitlib.train import main

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from vitlib.rundir import RunLock
    with RunLock(Path(sys.argv[1]), resume=True):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_the_lock_is_released_when_its_process_is_killed(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=f"in use by process {holder.pid} on "):
            RunLock(run, resume=True).__enter__()
    finally:
        holder.kill()
        holder.wait()
    assert (run / "run.lock").exists()  # SIGKILL left the file, not the lock
    with pytest.raises(TrainingError, match=f"stale lock from process {holder.pid} .*--resume"):
        RunLock(run, resume=False).__enter__()
    with RunLock(run, resume=True):
        assert (run / "run.lock").read_text().split()[0] == str(os.getpid())
    assert not (run / "run.lock").exists()


def test_memory_estimate_grows_with_the_batch_and_the_model():
    small = vitlib.create_model("vit_cifar10_small")
    reference = vitlib.create_model("vit_cifar10_patch2_input32")
    per_image = hardware.activation_bytes_per_image(small, None)
    assert hardware.activation_bytes_per_image(small, torch.bfloat16) < per_image
    assert hardware.activation_bytes_per_image(reference, None) > 10 * per_image
    assert hardware.memory_estimate(small, 256, None) > hardware.memory_estimate(small, 128, None)


def test_a_run_that_does_not_fit_in_memory_is_refused_naming_the_flag(
    tmp_path, cifar_root, monkeypatch, capsys
):
    monkeypatch.setattr(hardware, "available_memory", lambda device: 2**30)  # a 1 GiB machine
    argv = ["--preset", "reference", "--device", "cpu", "--batch_size", "512", "--epochs", "1",
            "--datapath", str(cifar_root), "--out", str(tmp_path / "run"), "--progress_bar", "off"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB on cpu for batch_size=512" in err
    assert "1.0 GiB is available: pass --batch_size " in err
    assert (
        not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "run.lock").exists()
    )


def test_the_training_modules_import_without_fcntl():
    """Windows has no ``fcntl``: the run directory's lock is filelock's, so importing the loop
    must not need it."""
    code = "import sys; sys.modules['fcntl'] = None; import vitlib.train, vitlib.rundir"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
