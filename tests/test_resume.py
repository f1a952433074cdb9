"""Stateless randomness and what it buys: a loader that starts at any batch, global batches that
do not depend on the number of processes, a mid-epoch resume with another number of processes,
and a finished run extended with --epochs."""

import subprocess
import sys
import textwrap

import pytest
import torch

from vitlib import data as D
from vitlib.checkpoint import load_checkpoint
from vitlib.train import main


def labelled(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random uint8 images whose 'label' is their index, to track samples through a loader."""
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    return images.to(torch.uint8), torch.arange(n)


def test_a_loader_started_at_batch_b_yields_what_a_full_epoch_yields_there():
    images, ids = labelled(40)
    loader = D.DeviceLoader(images, ids, 8, train=True, seed=5, augment="recipe")
    loader.set_epoch(3)
    full = list(loader)
    loader.set_epoch(3, start_batch=2)
    tail = list(loader)
    assert len(tail) == len(full) - 2
    for (x1, y1), (x2, y2) in zip(full[2:], tail, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)  # same images, same augmentation


@pytest.mark.parametrize("world_size", [2, 4])
def test_global_batches_are_the_same_images_for_any_number_of_processes(world_size):
    images, ids = labelled(100)
    one = D.DeviceLoader(images, ids, 16, train=True, seed=1, augment="none")
    one.set_epoch(2)
    ranks = [
        D.DeviceLoader(images, ids, 16 // world_size, train=True, seed=1, augment="none",
                       rank=r, world_size=world_size)
        for r in range(world_size)
    ]  # fmt: skip
    for loader in ranks:
        loader.set_epoch(2)
    shares = [list(loader) for loader in ranks]
    assert len(one) == len(shares[0])
    for b, (_, y) in enumerate(one):
        together = torch.cat([share[b][1] for share in shares])
        assert sorted(together.tolist()) == sorted(y.tolist())


# A deterministic data path (no augmentation, mixing, dropout or BatchNorm) in fp32: the only
# difference between 2 processes and 1 is then the order of floating-point sums.
FLAGS = [
    "--preset", "cpu-quick", "--train_limit", "128", "--test_limit", "32", "--epochs", "2",
    "--batch_size", "32", "--warmup_epochs", "0.5", "--augment", "none", "--mix", "none",
    "--model_overrides", "depth=1", "dim=32", "head_channels=16", "stem=patch", "head_dropout=0.0",
    "--lr", "2e-3", "--precision", "fp32", "--progress", "off", "--no-compile",
]  # fmt: skip

# Both ranks are asked to stop (SIGTERM) at their 3rd step: epoch 1, batch 3 of 4.
STOP_AT_STEP_3 = textwrap.dedent(
    """
    import signal, sys, vitlib.loop as loop
    real, calls = loop.mixed_loss, []
    def stop_at_3(*args):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(*args)
    loop.mixed_loss = stop_at_3
    import vitlib.train as t
    sys.exit(t.main(sys.argv[1:]))
    """
)


def test_a_run_stopped_mid_epoch_on_2_processes_resumes_on_1(tmp_path, real_cifar_root):
    """Equality that holds: the resumed run continues at the same step with the same global
    batches and learning rates, and ends within float rounding of an uninterrupted 1-process
    run (summation order differs; with augmentation each process's draws would differ too)."""
    data = ["--datapath", str(real_cifar_root)]
    script = tmp_path / "stop.py"
    script.write_text(STOP_AT_STEP_3)
    out, single = tmp_path / "ddp", tmp_path / "single"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), *FLAGS, *data, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    stopped = load_checkpoint(out / "last.pt")
    assert (stopped["world_size"], stopped["step"], stopped["progress"]["batch"]) == (2, 3, 3), (
        run.stderr[-3000:]
    )
    assert main([*FLAGS, *data, "--out", str(out), "--resume"]) == 0  # one process now
    assert main([*FLAGS, *data, "--out", str(single)]) == 0
    resumed, reference = load_checkpoint(out / "last.pt"), load_checkpoint(single / "last.pt")
    assert resumed["step"] == reference["step"] == 8
    lrs = [[r["lr"] for r in s["progress"]["history"]] for s in (resumed, reference)]
    assert lrs[0] == lrs[1]
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-4, atol=1e-4)


def test_a_finished_run_is_extended_with_epochs_and_never_shortened(tmp_path, cifar_root, capsys):
    run = tmp_path / "run"
    base = [*FLAGS, "--datapath", str(cifar_root), "--out", str(run)]
    assert main(base) == 0
    assert main([*base, "--resume"]) == 0
    assert "already holds the complete run (2 epochs): nothing to do; pass --epochs M (more " \
        "than 2) with --resume to extend it" in capsys.readouterr().out  # fmt: skip
    assert main([*base, "--resume", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "extending the run from 2 to 3 epochs" in out and "resuming from epoch 3" in out
    assert load_checkpoint(run / "last.pt")["step"] == 12
    assert main([*base, "--resume", "--epochs", "1"]) == 1
    assert "--epochs 1 is shorter than the run" in capsys.readouterr().err
