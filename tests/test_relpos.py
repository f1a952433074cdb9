import pytest
import torch

from vitlib.relpos import RelativePositionBias, offset_table, relative_position_index


def brute_force_index(height, width):
    n = height * width
    index = torch.empty(n, n, dtype=torch.long)
    for q in range(n):
        for k in range(n):
            dy = k // width - q // width
            dx = k % width - q % width
            index[q, k] = (dy + height - 1) * (2 * width - 1) + (dx + width - 1)
    return index


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 5), (5, 3), (4, 7), (16, 16)])
def test_index_equals_brute_force(grid):
    assert torch.equal(relative_position_index(*grid), brute_force_index(*grid))


@pytest.mark.parametrize("grid", [(3, 4), (16, 16)])
def test_index_covers_every_offset(grid):
    height, width = grid
    index = relative_position_index(height, width)
    assert index.min() == 0 and index.max() == (2 * height - 1) * (2 * width - 1) - 1
    assert index.unique().numel() == (2 * height - 1) * (2 * width - 1)
    assert torch.all(index.diagonal() == (height - 1) * (2 * width - 1) + width - 1)  # zero offset


def test_index_is_the_transpose_of_the_seed_layout():
    # The seed's get_indices (keys first), verbatim.
    h, w = 4, 6
    y, x = torch.arange(h), torch.arange(w)
    y1, x1, y2, x2 = torch.meshgrid(y, x, y, x, indexing="ij")
    seed = ((y1 - y2 + h - 1) * (2 * w - 1) + x1 - x2 + w - 1).flatten().view(h * w, h * w)
    assert torch.equal(relative_position_index(h, w), seed.T)


def test_bias_depends_only_on_offset():
    height, width = 5, 4
    bias_module = RelativePositionBias(heads=3, height=height, width=width)
    torch.nn.init.normal_(bias_module.table)
    bias = bias_module()  # (3, N, N)
    by_offset = {}
    for q in range(height * width):
        for k in range(height * width):
            offset = (k // width - q // width, k % width - q % width)
            value = bias[:, q, k]
            if offset in by_offset:
                assert torch.equal(by_offset[offset], value)
            by_offset[offset] = value
    assert len(by_offset) == (2 * height - 1) * (2 * width - 1)
    # Different offsets read different table entries, so they get different biases.
    assert len({tuple(v.tolist()) for v in by_offset.values()}) == len(by_offset)


def test_offset_table_places_zero_offset_in_the_centre():
    height, width = 3, 4
    table = torch.arange((2 * height - 1) * (2 * width - 1), dtype=torch.float)
    image = offset_table(table, height, width)
    centre = relative_position_index(height, width)[0, 0]
    assert image[height - 1, width - 1] == table[centre]


def test_index_is_not_saved_in_the_state_dict():
    assert list(RelativePositionBias(2, 4, 4).state_dict()) == ["table"]
