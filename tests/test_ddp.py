"""Two CPU processes under torchrun (gloo): ranks stay identical and match one process, and a run
stopped mid-epoch on two processes resumes on one."""

import subprocess
import sys
import textwrap

import pytest
import torch

from vitlib.checkpoint import load_checkpoint
from vitlib.data import derive_seed
from vitlib.distributed import match_conv_grad_layout
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
    "--lr", "2e-3", "--precision", "fp32", "--progress_bar", "off", "--no-compile",
]  # fmt: skip

# Records every process's weights at the end of each epoch.
SPY = textwrap.dedent(
    """
    import sys, torch
    from vitlib.config import config_from_args
    from vitlib.train import train
    config = config_from_args(sys.argv[1:])
    def record_weights(run, record):
        torch.save(run.model.state_dict(), f"{config.out}/rank{run.info.rank}.pt")
    train(config, on_epoch_end=record_weights)
    """
)


@pytest.mark.slow
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
    assert "128 train / 32 test images, 4 steps per epoch" in run.stdout  # the whole set, 2 shares
    rank0, rank1 = torch.load(ddp_out / "rank0.pt"), torch.load(ddp_out / "rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    ddp = load_checkpoint(ddp_out / "last.pt")
    assert ddp["step"] == 2 * 4 and ddp["world_size"] == 2  # 4 global batches of 32 per epoch

    assert main([*FLAGS, *data, "--out", str(single_out)]) == 0
    single = load_checkpoint(single_out / "last.pt")
    for key, value in single["model"].items():  # two half batches sum in another order: on an
        # AMD EPYC one weight near zero differs by 1.3e-5 (at the commit before this one too)
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-4)
    torch.manual_seed(derive_seed(0, "init"))  # the initial weights: training did move them
    initial = create_model("vit_cifar10_small", depth=1, dim=32, head_channels=16, stem="patch")
    initial = initial.state_dict()
    assert (initial["head.weight"] - single["model"]["head.weight"]).abs().max() > 1e-3
    assert [r["test_acc"] for r in ddp["progress"]["history"]] == pytest.approx(
        [r["test_acc"] for r in single["progress"]["history"]], abs=1 / 32
    )


# Both processes are asked to stop (SIGTERM) before their 3rd step: epoch 1, batch 3 of 4.
STOP_AT_STEP_3 = textwrap.dedent(
    """
    import signal, sys
    from vitlib.config import config_from_args
    from vitlib.train import train
    def stop_before_step_3(run, images, labels):
        if run.progress.step + 1 == 3:
            signal.raise_signal(signal.SIGTERM)
    train(config_from_args(sys.argv[1:]), on_batch=stop_before_step_3)
    """
)


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_on_2_processes_resumes_on_1(tmp_path, cifar_root):
    """Equality that holds: the resumed run continues at the same step with the same global
    batches and learning rates, and ends within float rounding of an uninterrupted 1-process
    run (summation order differs; with augmentation each process's draws would differ too)."""
    data = ["--datapath", str(cifar_root)]
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


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_gradients_get_their_parameters_strides(channels_last):
    """DDP's gradient buckets have each parameter's strides. A CPU depthwise convolution, and a
    1x1 convolution kept channels-last, return gradients that differ in the stride of a size-1
    dimension; ``match_conv_grad_layout`` gives every conv weight's gradient its parameter's."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("vit_cifar10_small", depth=1, dim=32, head_channels=16)
    model = model.to(memory_format=layout)
    images = torch.rand(4, 3, 32, 32).to(memory_format=layout)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    model(images).sum().backward()
    assert any(w.grad.stride() != w.stride() for w in convs)  # what DDP warned about
    model.zero_grad(set_to_none=True)
    match_conv_grad_layout(model)
    model(images).sum().backward()
    assert [w.grad.stride() for w in convs] == [w.stride() for w in convs]
