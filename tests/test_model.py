import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitlib
from vitlib.model import ModelConfig
from vitlib.summary import count_parameters, flops_per_image, summary

SEED_MODEL = "vit_cifar10_patch2_input32"


def with_random_gains(model):
    """Nonzero residual gains, so every branch contributes (at initialisation they are 0)."""
    with torch.no_grad():
        for block in model.blocks:
            block.gamma_attn.uniform_(0.5, 1.5)
            block.gamma_mlp.uniform_(0.5, 1.5)
    return model


def test_seed_model_has_the_seeds_shape():
    model = vitlib.create_model(SEED_MODEL)
    assert count_parameters(model) == 6_482_138
    config = model.config
    assert (config.dim, config.depth, config.heads, config.head_channels) == (256, 8, 8, 32)
    assert config.grid == (16, 16) and config.head_dropout == 0.3
    assert model.blocks[0].attn.rel_pos.table.shape == (8, 31 * 31)
    assert model.pos_embedding.shape == (256, 16, 16)


def test_seed_model_flops_match_the_recipe():
    # RECIPE.md: ~1.89 G multiply-adds per 32x32 image.
    assert flops_per_image(vitlib.create_model(SEED_MODEL)) / 2 == pytest.approx(1.89e9, rel=0.01)


def test_every_block_is_the_identity_at_initialisation():
    model = vitlib.create_model(SEED_MODEL)
    tokens = torch.randn(2, 256, 256)
    for block in model.blocks:
        assert torch.equal(block(tokens), tokens)


def test_initialisation_follows_the_recipe():
    model = vitlib.create_model(SEED_MODEL)
    fc1 = model.blocks[0].mlp.fc1.weight  # fan-in 256: Kaiming std = sqrt(2 / 256)
    assert fc1.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.02)
    assert model.pos_embedding.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[3].attn.rel_pos.table.std().item() == pytest.approx(0.02, rel=0.1)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            assert torch.all(module.bias == 0)
        if isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("projection", ["pointwise", "depthwise"])
def test_fused_and_teaching_models_give_the_same_logits_and_gradients(dtype, tol, projection):
    overrides = {
        "depth": 2,
        "dim": 64,
        "head_channels": 16,
        "head_dropout": 0.0,
        "projection": projection,
    }
    teaching = with_random_gains(
        vitlib.create_model(SEED_MODEL, attention="teaching", **overrides)
    ).to(dtype)
    fused = vitlib.create_model(SEED_MODEL, attention="fused", **overrides).to(dtype)
    fused.load_state_dict(teaching.state_dict())
    images = torch.rand(9, 3, 32, 32, dtype=dtype)
    labels = torch.randint(0, 10, (9,))
    logits_teaching, logits_fused = teaching(images), fused(images)
    assert torch.allclose(logits_teaching, logits_fused, atol=tol, rtol=0)
    F.cross_entropy(logits_teaching, labels).backward()
    F.cross_entropy(logits_fused, labels).backward()
    teaching_grads = dict(teaching.named_parameters())
    for name, param in fused.named_parameters():
        assert torch.allclose(param.grad, teaching_grads[name].grad, atol=tol, rtol=0), name


def test_set_attention_switches_form_in_place():
    model = with_random_gains(vitlib.create_model("vit_cifar10_small", head_dropout=0.0)).eval()
    images = torch.rand(2, 3, 32, 32)
    fused = model(images)
    teaching = model.set_attention("teaching")(images)
    assert model.config.attention == "teaching"
    assert torch.allclose(fused, teaching, atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention form 'slow'"):
        model.set_attention("slow")
    assert model.config.attention == "teaching"  # refused before any layer changed
    assert {block.attn.form for block in model.blocks} == {"teaching"}


def test_create_model_and_overrides():
    assert {SEED_MODEL, "vit_cifar10_small"} <= set(vitlib.list_models())
    model = vitlib.create_model(SEED_MODEL, attention="teaching", num_classes=100)
    assert model.head.out_features == 100 and model.config.attention == "teaching"
    assert vitlib.create_model(SEED_MODEL).state_dict().keys() == model.state_dict().keys()
    small = vitlib.create_model("vit_cifar10_small")
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(small) < count_parameters(model) / 4


def test_depthwise_projection_adds_a_few_parameters():
    pointwise = count_parameters(vitlib.create_model(SEED_MODEL))
    depthwise = count_parameters(vitlib.create_model(SEED_MODEL, projection="depthwise"))
    assert depthwise - pointwise == 8 * 256 * 3 * 3


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown model 'vit_huge'.*vit_cifar10_patch2_input32"):
        vitlib.create_model("vit_huge")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['widht'\]"):
        vitlib.create_model(SEED_MODEL, widht=3)
    with pytest.raises(ValueError, match="unknown attention form 'flash'"):
        vitlib.create_model(SEED_MODEL, attention="flash")


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="image size 32 is not divisible by patch size 3"):
        ModelConfig(patch_size=3)
    with pytest.raises(ValueError, match="dim=256.*not divisible by head_channels=48"):
        ModelConfig(head_channels=48)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        ModelConfig(depth=0)
    with pytest.raises(ValueError, match=r"head_dropout must be in \[0, 1\)"):
        ModelConfig(head_dropout=1.0)
    with pytest.raises(ValueError, match=r"unknown stem 'vgg': choose one of \['patch', 'conv'\]"):
        ModelConfig(stem="vgg")
    with pytest.raises(ValueError, match="patch_size must be a power of two, got 6"):
        ModelConfig(image_size=36, patch_size=6, stem="conv")
    with pytest.raises(ValueError, match="relative_position must be True or False, got 'no'"):
        ModelConfig(relative_position="no")
    with pytest.raises(ValueError, match="gain_init must be a finite number, got nan"):
        ModelConfig(gain_init=float("nan"))


def test_ablation_switches():
    """Each ingredient can be switched off (notebook 07): its parameters are gone, the teaching
    and fused forms still agree, and the residual gains start where asked."""
    for switch, removed in (
        ("relative_position", "rel_pos"),
        ("absolute_position", "pos_embedding"),
    ):
        model = vitlib.create_model("vit_cifar10_small", **{switch: False}, gain_init=1.0)
        assert not any(removed in name for name, _ in model.named_parameters())
        assert all(b.gamma_attn.item() == b.gamma_mlp.item() == 1.0 for b in model.blocks)
        x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            fused = model.eval()(x)
            assert torch.allclose(model.set_attention("teaching")(x), fused, atol=1e-5)
    attn = vitlib.create_model("vit_cifar10_small", relative_position=False).blocks[0].attn
    assert attn.rel_pos is None
    maps = attn.attention_map(torch.randn(2, 64, 128))
    assert torch.allclose(maps.sum(-1), torch.ones(2, 4, 64))


def test_bad_inputs_are_refused():
    model = vitlib.create_model("vit_cifar10_small")
    with pytest.raises(ValueError, match="got a 3-D tensor.*unsqueeze"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="built for 32x32 images, got 64x64"):
        model(torch.rand(2, 3, 64, 64))


def test_summary_lists_parts_and_totals():
    model = vitlib.create_model(SEED_MODEL)
    text = summary(model)
    assert "blocks.7" in text and "6,482,138" in text and "1.89 G multiply-adds" in text
    assert model.training  # measured in eval mode, then given back in training mode


def test_overfits_32_real_images(cifar_root):
    from vitlib.data import load_cifar10

    images, labels = load_cifar10(cifar_root, split="train", limit=32)
    images = images.float() / 255
    model = vitlib.create_model("vit_cifar10_small", depth=2, dim=64, head_dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(300):  # no dropout; BatchNorm normalises with this batch's statistics
        logits = model(images)
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        if accuracy == 1.0:
            break
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert accuracy == 1.0, (
        f"train accuracy {accuracy:.3f} after 300 steps (loss {loss.item():.3f})"
    )


@pytest.mark.slow
def test_torch_compile_runs_on_cpu():
    model = vitlib.create_model("vit_cifar10_small", depth=1, head_dropout=0.0)
    images = torch.rand(4, 3, 32, 32)
    compiled = torch.compile(model)
    out = compiled(images)
    out.sum().backward()
    with torch.no_grad():
        assert torch.allclose(out, model(images), atol=1e-4)
    assert model.head.weight.grad is not None
