"""Multi-head self-attention over a feature map, with a learned relative position bias.

For one head with queries ``Q``, keys ``K``, values ``V`` (each ``N x d``) and the learned
relative bias ``B`` (``N x N``, :mod:`vitlib.relpos`):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + B) V        (softmax over the keys)

The projections are 1x1 convolutions on the ``(C, H, W)`` map, as in the seed: one linear map
per token, with no spatial context. ``projection="depthwise"`` first filters the map with one 3x3
depthwise convolution, a simplified CvT (https://arxiv.org/abs/2103.15808). The two forms,
``"teaching"`` (the seed's code step by step) and ``"fused"`` (default), are one function on the
same parameters (docs/library.md); under bf16 autocast the fused form adds the bias in bf16."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .relpos import RelativePositionBias

ATTENTION_FORMS = ("fused", "teaching")
PROJECTIONS = ("pointwise", "depthwise")


def check_attention(dim: int, head_channels: int, form: str, projection: str) -> None:
    """The one check of these options: a ``ValueError`` naming what is wrong with them."""
    if dim % head_channels != 0:
        raise ValueError(f"channels (dim={dim}) are not divisible by head_channels="
                         f"{head_channels}: choose head_channels that divides {dim}")  # fmt: skip
    if form not in ATTENTION_FORMS:
        raise ValueError(f"unknown attention form {form!r}: choose one of {ATTENTION_FORMS}")
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}: choose one of {PROJECTIONS}")


CPU_CHUNK = 8  # images per call of the CPU math kernel (see biased_attention)


def biased_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                     bias: torch.Tensor | None, scale: float) -> torch.Tensor:  # fmt: skip
    """``softmax(Q K^T * scale + bias) V`` by ``scaled_dot_product_attention``: queries, keys,
    values ``(B, heads, N, d)``; bias ``(heads, N, N)`` or ``None`` -> ``(B, heads, N, d)``.

    On CUDA (the memory-efficient kernel) and on a CPU without gradients (flash) no
    ``(B, heads, N, N)`` scores are stored. To train on a CPU, PyTorch runs a bias through its math
    kernel, which writes the scores to memory: on chunks of ``CPU_CHUNK`` images they stay in cache,
    about 2x faster on 2 cores (``bench/model_speed.py``). Without a bias the chunked math kernel
    still beats the CPU flash kernel's backward on these small heads (388 vs 339 training images/s,
    ``vit_cifar10_small``, eager, bf16), so a bias ablation measures the bias, not a kernel."""
    if bias is not None:
        bias = bias.unsqueeze(0)  # (1, heads, N, N): the 4-D mask the fused kernels accept
    needs_grad = queries.requires_grad or (bias is not None and bias.requires_grad)
    if queries.device.type != "cpu" or not needs_grad:
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias, scale=scale)
    chunks = zip(queries.split(CPU_CHUNK), keys.split(CPU_CHUNK), values.split(CPU_CHUNK))
    with sdpa_kernel(SDPBackend.MATH):
        return torch.cat([F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
                          for q, k, v in chunks])  # fmt: skip


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the tokens ``(B, N, C)`` of an ``H x W`` map, ``N = H * W``
    in row-major order. ``relative_position=False`` (an ablation) leaves ``rel_pos`` ``None``."""

    def __init__(self, dim: int, head_channels: int, grid: tuple[int, int], form: str = "fused",
                 projection: str = "pointwise", relative_position: bool = True):  # fmt: skip
        super().__init__()
        check_attention(dim, head_channels, form, projection)
        self.form, self.grid, self.head_channels = form, grid, head_channels
        self.heads, self.scale = dim // head_channels, head_channels**-0.5
        self.spatial = None  # projection="depthwise": a 3x3 filter per channel before q, k, v
        if projection == "depthwise":
            self.spatial = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.to_queries = nn.Conv2d(dim, dim, kernel_size=1)
        self.to_keys = nn.Conv2d(dim, dim, kernel_size=1)
        self.to_values = nn.Conv2d(dim, dim, kernel_size=1)
        self.unifyheads = nn.Conv2d(dim, dim, kernel_size=1)
        self.rel_pos = RelativePositionBias(self.heads, *grid) if relative_position else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``(B, N, C)`` -> ``(B, N, C)``."""
        teaching = self.form == "teaching"
        return self.forward_teaching(tokens) if teaching else self.forward_fused(tokens)

    def forward_teaching(self, tokens: torch.Tensor) -> torch.Tensor:
        """The seed's computation, one named step at a time (keys-first layout)."""
        h, w = self.grid
        x = rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)  # (B, C, H, W)
        if self.spatial is not None:
            x = self.spatial(x)
        b = x.shape[0]
        keys = self.to_keys(x).view(b, self.heads, self.head_channels, -1)  # (B, heads, d, N)
        values = self.to_values(x).view(b, self.heads, self.head_channels, -1)  # (B, heads, d, N)
        queries = self.to_queries(x).view(b, self.heads, self.head_channels, -1)  # (B, heads, d, N)

        att = keys.transpose(-2, -1) @ queries  # (B, heads, N_k, N_q): att[k, q] = k . q
        att = att * self.scale
        if self.rel_pos is not None:
            att = att + self.rel_pos().transpose(-2, -1)  # (heads, N_k, N_q), keys first like att
        att = F.softmax(att, dim=-2)  # normalise over the keys of each query

        out = values @ att  # (B, heads, d, N_q): out[:, q] = sum_k att[k, q] v_k
        out = out.view(b, -1, h, w)  # (B, C, H, W)
        out = self.unifyheads(out)
        return rearrange(out, "b c h w -> b (h w) c")

    def forward_fused(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fused projection + ``scaled_dot_product_attention``, tokens-last layout throughout."""
        b, n, c = tokens.shape
        queries, keys, values = self.project(tokens)
        bias = None if self.rel_pos is None else self.rel_pos().to(queries.dtype)  # (heads, N, N)
        out = biased_attention(queries, keys, values, bias, self.scale)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C), heads concatenated
        return F.linear(out, self.unifyheads.weight.flatten(1), self.unifyheads.bias)

    def project(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens ``(B, N, C)`` -> q, k, v ``(B, heads, N, d)`` by one ``(3C, C)`` matrix."""
        b, n, c = tokens.shape
        if self.spatial is not None:  # the depthwise 3x3 filter, on the (B, C, H, W) map
            x = tokens.transpose(1, 2).reshape(b, c, *self.grid)
            tokens = self.spatial(x).flatten(2).transpose(1, 2)
        convs = (self.to_queries, self.to_keys, self.to_values)
        weight = torch.cat([conv.weight for conv in convs]).flatten(1)  # (3C, C)
        bias = torch.cat([conv.bias for conv in convs])  # (3C,)
        qkv = F.linear(tokens, weight, bias).view(b, n, 3, self.heads, self.head_channels)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def attention_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """The attention probabilities ``(B, heads, N_q, N_k)``; each row sums to 1."""
        queries, keys, _ = self.project(tokens)
        scores = queries @ keys.transpose(-2, -1) * self.scale
        if self.rel_pos is not None:
            scores = scores + self.rel_pos()
        return scores.softmax(dim=-1)

    def extra_repr(self) -> str:
        return f"form={self.form!r}, heads={self.heads}, head_channels={self.head_channels}"
