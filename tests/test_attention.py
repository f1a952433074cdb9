import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlib.attention import SelfAttention2d


class SeedSelfAttention2d(nn.Module):
    """The seed README's module, verbatim apart from the table's initialisation."""

    def __init__(self, in_channels, out_channels, head_channels, shape):
        super().__init__()
        self.heads = out_channels // head_channels
        self.head_channels = head_channels
        self.scale = head_channels**-0.5
        self.to_keys = nn.Conv2d(in_channels, out_channels, 1)
        self.to_queries = nn.Conv2d(in_channels, out_channels, 1)
        self.to_values = nn.Conv2d(in_channels, out_channels, 1)
        self.unifyheads = nn.Conv2d(out_channels, out_channels, 1)
        height, width = shape
        self.pos_enc = nn.Parameter(torch.randn(self.heads, (2 * height - 1) * (2 * width - 1)))
        self.register_buffer("relative_indices", self.get_indices(height, width))

    def forward(self, x):
        b, _, h, w = x.shape
        keys = self.to_keys(x).view(b, self.heads, self.head_channels, -1)
        values = self.to_values(x).view(b, self.heads, self.head_channels, -1)
        queries = self.to_queries(x).view(b, self.heads, self.head_channels, -1)
        att = keys.transpose(-2, -1) @ queries
        indices = self.relative_indices.expand(self.heads, -1)
        rel_pos_enc = self.pos_enc.gather(-1, indices)
        rel_pos_enc = rel_pos_enc.unflatten(-1, (h * w, h * w))
        att = att * self.scale + rel_pos_enc
        att = F.softmax(att, dim=-2)
        out = values @ att
        out = out.view(b, -1, h, w)
        out = self.unifyheads(out)
        return out

    @staticmethod
    def get_indices(h, w):
        y = torch.arange(h, dtype=torch.long)
        x = torch.arange(w, dtype=torch.long)
        y1, x1, y2, x2 = torch.meshgrid(y, x, y, x, indexing="ij")
        indices = (y1 - y2 + h - 1) * (2 * w - 1) + x1 - x2 + w - 1
        indices = indices.flatten()
        return indices


def make_pair(dim=64, head_channels=16, grid=(4, 6), projection="pointwise", dtype=torch.float32):
    """A teaching and a fused module holding the same random weights."""
    teaching = SelfAttention2d(dim, head_channels, grid, form="teaching", projection=projection)
    torch.nn.init.normal_(teaching.rel_pos.table)
    fused = SelfAttention2d(dim, head_channels, grid, form="fused", projection=projection)
    fused.load_state_dict(teaching.state_dict())
    return teaching.to(dtype), fused.to(dtype)


@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_teaching_form_is_the_seed_module(grid):
    seed = SeedSelfAttention2d(32, 32, 8, grid)
    ours = SelfAttention2d(32, 8, grid, form="teaching")
    state = {k: v for k, v in seed.state_dict().items() if k not in ("pos_enc", "relative_indices")}
    ours.load_state_dict({**state, "rel_pos.table": seed.pos_enc.detach()})
    feature_map = torch.randn(2, 32, *grid)
    tokens = rearrange(feature_map, "b c h w -> b (h w) c")
    expected = rearrange(seed(feature_map), "b c h w -> b (h w) c")
    assert torch.allclose(ours(tokens), expected, atol=1e-5)


@pytest.mark.parametrize("projection", ["pointwise", "depthwise"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fused_equals_teaching_outputs_and_gradients(projection, dtype, tol):
    teaching, fused = make_pair(projection=projection, dtype=dtype)
    tokens = torch.randn(10, 24, 64, dtype=dtype)  # 10 > the CPU chunk of 8: two chunks
    x1 = tokens.clone().requires_grad_()
    x2 = tokens.clone().requires_grad_()
    out1, out2 = teaching(x1), fused(x2)
    assert torch.allclose(out1, out2, atol=tol, rtol=0)
    upstream = torch.randn_like(out1)
    out1.backward(upstream)
    out2.backward(upstream)
    assert torch.allclose(x1.grad, x2.grad, atol=tol, rtol=0)
    grads1 = dict(teaching.named_parameters())
    for name, param in fused.named_parameters():
        assert torch.allclose(param.grad, grads1[name].grad, atol=tol * 10, rtol=0), name


def test_fused_equals_teaching_without_grad():
    teaching, fused = make_pair()
    tokens = torch.randn(3, 24, 64)
    with torch.no_grad():
        assert torch.allclose(teaching(tokens), fused(tokens), atol=1e-5)


def test_forms_share_state_dict_keys():
    teaching, fused = make_pair()
    assert teaching.state_dict().keys() == fused.state_dict().keys()


def test_attention_map_rows_are_distributions():
    _, fused = make_pair()
    probs = fused.attention_map(torch.randn(2, 24, 64))
    assert probs.shape == (2, 4, 24, 24)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 24))


def test_one_by_one_convolution_is_a_per_token_linear_layer():
    conv = nn.Conv2d(16, 8, kernel_size=1)
    feature_map = torch.randn(2, 16, 5, 5)
    by_linear = F.linear(
        rearrange(feature_map, "b c h w -> b h w c"), conv.weight.flatten(1), conv.bias
    )
    assert torch.allclose(rearrange(conv(feature_map), "b c h w -> b h w c"), by_linear, atol=1e-6)


@pytest.mark.parametrize(
    ("projection", "sees_neighbours"), [("pointwise", False), ("depthwise", True)]
)
def test_only_depthwise_projections_see_neighbouring_tokens(projection, sees_neighbours):
    """The query of token 0 depends on token 1 (its right neighbour) only with depthwise projections."""
    _, fused = make_pair(projection=projection)
    tokens = torch.randn(1, 24, 64, requires_grad=True)
    queries, _, _ = fused.project(tokens)  # (1, heads, N, d)
    queries[:, :, 0].sum().backward()
    assert (tokens.grad[0, 1].abs().sum() > 0) == sees_neighbours
    assert tokens.grad[0, 0].abs().sum() > 0


def test_bad_head_channels_and_names():
    with pytest.raises(ValueError, match="dim=64.*not divisible by head_channels=24"):
        SelfAttention2d(64, 24, (4, 4))
    with pytest.raises(ValueError, match="unknown attention form 'slow'"):
        SelfAttention2d(64, 16, (4, 4), form="slow")
    with pytest.raises(ValueError, match="unknown projection 'dense'"):
        SelfAttention2d(64, 16, (4, 4), projection="dense")
