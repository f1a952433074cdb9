"""Relative position bias: a learned number per head for every 2-D offset between tokens.

On an ``H x W`` grid the offset from a query at ``(y_q, x_q)`` to a key at ``(y_k, x_k)`` is
``(dy, dx) = (y_k - y_q, x_k - x_q)``, ``dy`` in ``[-(H-1), H-1]``, ``dx`` in ``[-(W-1), W-1]``:
``(2H-1)(2W-1)`` offsets. Each head learns a table of one number per offset, and the ``N x N``
bias (``N = HW``) is gathered from it with an index matrix computed once:

    index[q, k] = (dy + H - 1) * (2W - 1) + (dx + W - 1),     bias[h, q, k] = table[h, index[q, k]]

The bias depends only on the offset: it is translation-invariant, like a convolution's weights.
The seed wrote the matrix transposed (keys first). Relative positions: Shaw et al. 2018
(https://arxiv.org/abs/1803.02155); a learned 2-D table: Swin (https://arxiv.org/abs/2103.14030)."""

import torch
from torch import nn


def relative_position_index(height: int, width: int) -> torch.Tensor:
    """``index[q, k]``, the table entry of the offset from query to key: ``(H*W, H*W)`` long
    values in ``[0, (2H-1)(2W-1))``, tokens numbered row-major (``token = y * W + x``)."""
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1x1, got {height}x{width}")
    y, x = torch.cartesian_prod(torch.arange(height), torch.arange(width)).T  # (N,) each
    dy = y[None, :] - y[:, None]  # (N_q, N_k): y_k - y_q
    dx = x[None, :] - x[:, None]
    return (dy + height - 1) * (2 * width - 1) + (dx + width - 1)


class RelativePositionBias(nn.Module):
    """A learned ``(heads, (2H-1)(2W-1))`` table gathered into a ``(heads, N, N)`` bias."""

    def __init__(self, heads: int, height: int, width: int):
        super().__init__()
        self.heads, self.height, self.width = heads, height, width
        self.table = nn.Parameter(torch.zeros(heads, (2 * height - 1) * (2 * width - 1)))
        # Derived from the grid, so not saved in the state_dict.
        self.register_buffer("index", relative_position_index(height, width), persistent=False)

    def forward(self) -> torch.Tensor:
        """Returns the bias ``(heads, N, N)``, ``bias[h, q, k] = table[h, index[q, k]]``."""
        n = self.index.shape[0]
        gathered = self.table.gather(1, self.index.flatten().expand(self.heads, -1))  # (heads, N*N)
        return gathered.view(self.heads, n, n)

    def extra_repr(self) -> str:
        shape = tuple(self.table.shape)
        return f"heads={self.heads}, grid={self.height}x{self.width}, table={shape}"


def offset_table(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One head's table as a ``(2H-1, 2W-1)`` image: row ``dy + H - 1``, column ``dx + W - 1``."""
    return table.reshape(2 * height - 1, 2 * width - 1)
