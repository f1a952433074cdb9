"""Smoke tests of the GPU path, for a machine with CUDA (skipped elsewhere): the fast preset
compiled in bf16, fp16 with loss scaling and clipping, and the two attention forms on the GPU."""

import dataclasses
import math

import pytest
import torch

import vitlib
from vitlib.checkpoint import load_checkpoint
from vitlib.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_the_fast_preset_trains_compiled_in_its_automatic_precision(tmp_path, tiny_config):
    config = dataclasses.replace(tiny_config(tmp_path / "run", epochs=2), preset="fast",
                                 device="cuda", precision="auto", compile=True, lr=2e-3)  # fmt: skip
    result = train(config)
    assert result["step"] == 12 and math.isfinite(result["train_loss"])
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["device"] == "cuda"


def test_fp16_with_loss_scaling_and_clipping(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = train(tiny_config(out, epochs=1, device="cuda", precision="fp16", grad_clip=1.0))
    assert math.isfinite(result["train_loss"])
    assert load_checkpoint(out / "last.pt")["scaler"]["scale"] > 0  # a live GradScaler


def test_teaching_and_fused_forms_agree_on_the_gpu():
    torch.manual_seed(0)
    model = vitlib.create_model("vit_cifar10_small").cuda().eval()
    images = torch.rand(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        fused = model(images)
        teaching = model.set_attention("teaching")(images)
    torch.testing.assert_close(fused, teaching, atol=1e-4, rtol=1e-4)
