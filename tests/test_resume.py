"""Stateless randomness and what it buys: a loader that starts at any batch, global batches that
do not depend on the number of processes (tests/test_ddp.py resumes a 2-process run as 1),
and a finished run extended with --epochs."""

import pytest
import torch
from helpers import labelled_images, tiny_argv

from vitlib import data as D
from vitlib.checkpoint import load_checkpoint
from vitlib.train import main


def test_a_loader_started_at_batch_b_yields_what_a_full_epoch_yields_there():
    images, ids = labelled_images(40)
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
    images, ids = labelled_images(100)
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


def test_a_finished_run_is_extended_with_epochs_and_never_shortened(tmp_path, cifar_root, capsys):
    run = tmp_path / "run"
    base = tiny_argv(run, cifar_root, "--epochs", "2")
    assert main(base) == 0
    assert main([*base, "--resume"]) == 0
    assert "already holds the complete run (2 epochs): nothing to do; pass --epochs M (more " \
        "than 2) with --resume to extend it" in capsys.readouterr().out  # fmt: skip
    assert main([*base, "--resume", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "extending the run from 2 to 3 epochs" in out and "resuming from epoch 3" in out
    extended = load_checkpoint(run / "last.pt")
    assert extended["step"] == 18
    assert main(tiny_argv(tmp_path / "three", cifar_root, "--epochs", "3")) == 0
    planned = load_checkpoint(tmp_path / "three" / "last.pt")["progress"]["history"]
    assert extended["progress"]["history"][2]["lr"] == planned[2]["lr"]  # the 3-epoch schedule
    capsys.readouterr()
    assert main([*base, "--resume", "--epochs", "1"]) == 1
    assert "--epochs 1 is shorter than the run" in capsys.readouterr().err
