"""Two CPU processes under torchrun (gloo): ranks stay identical and match one process."""

import subprocess
import sys
import textwrap

import pytest
import torch

from vitlib.checkpoint import load_checkpoint
from vitlib.data import derive_seed
from vitlib.model import create_model
from vitlib.train import main

# Deterministic data path (no augmentation, mixing or dropout) in fp32, so the two processes'
# half batches together are exactly the single process's batches (strided sharding of one order)
# and only summation order differs. The patch stem has no BatchNorm, whose statistics a CPU rank
# takes over its half batch only (SyncBatchNorm, used on CUDA, has no CPU kernel).
FLAGS = [
    "--preset", "cpu-quick", "--train_limit", "128", "--test_limit", "32", "--epochs", "2",
    "--batch_size", "32", "--warmup_epochs", "0.5", "--augment", "none", "--mix", "none",
    "--model_overrides", "depth=1", "dim=32", "head_channels=16", "stem=patch", "head_dropout=0.0",
    "--lr", "2e-3", "--precision", "fp32", "--progress", "off", "--no-compile",
]  # fmt: skip

# Records every rank's weights when the loop evaluates them (at each epoch end).
SPY = textwrap.dedent(
    """
    import sys, torch, vitlib.loop as loop, vitlib.train as t
    real, out = loop.evaluate_model, sys.argv[sys.argv.index("--out") + 1]
    def spy(model, *args, **kwargs):
        torch.save(model.state_dict(), f"{out}/rank{torch.distributed.get_rank()}.pt")
        return real(model, *args, **kwargs)
    loop.evaluate_model = spy
    sys.exit(t.main(sys.argv[1:]))
    """
)


def test_two_process_gloo_matches_single_process(tmp_path, real_cifar_root):
    """On the real images. On the synthetic stand-in (flat coloured squares) some parameters
    get near-zero gradients, which Adam's per-parameter normalisation turns into full-size steps
    of either sign, so the processes' different summation order shows past 1e-5."""
    cifar_root = real_cifar_root
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    data = ["--datapath", str(cifar_root)]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(spy), *FLAGS, *data, "--out", str(ddp_out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Grad strides do not match bucket view strides" not in run.stderr  # depthwise convs
    assert "x 2 processes" in run.stdout and run.stdout.count("epoch   2/2") == 1  # rank 0 prints
    rank0, rank1 = torch.load(ddp_out / "rank0.pt"), torch.load(ddp_out / "rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    ddp = load_checkpoint(ddp_out / "last.pt")
    assert ddp["step"] == 2 * 4 and ddp["world_size"] == 2  # 4 global batches of 32 per epoch

    assert main([*FLAGS, *data, "--out", str(single_out)]) == 0
    single = load_checkpoint(single_out / "last.pt")
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5)
    torch.manual_seed(derive_seed(0, "init"))  # the initial weights: training did move them
    initial = create_model("vit_cifar10_small", depth=1, dim=32, head_channels=16, stem="patch")
    initial = initial.state_dict()
    assert (initial["head.weight"] - single["model"]["head.weight"]).abs().max() > 1e-3
    assert [r["test_acc"] for r in ddp["progress"]["history"]] == pytest.approx(
        [r["test_acc"] for r in single["progress"]["history"]], abs=1 / 32
    )
