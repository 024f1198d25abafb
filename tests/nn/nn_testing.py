"""Shared helpers for the tests of the depth and paths layers (blocks summed into an output)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from bayes_nest.testing import assert_close


class CountingBranch(nn.Module):
    """``activation(W x + b)`` that counts its calls (to see which blocks a layer runs)."""

    def __init__(self, width_in: int, width_out: int | None = None, activation=torch.tanh):
        super().__init__()
        self.linear = nn.Linear(width_in, width_in if width_out is None else width_out)
        self.activation = activation
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.activation(self.linear(x))


def check_int_mask(
    layer: nn.Module,
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    count: int,
    reference: Callable[[nn.Module, torch.Tensor, list[float]], torch.Tensor],
) -> None:
    """Keep count ``count`` runs exactly ``blocks[:count]``, matches ``reference`` with 0/1
    scales and equals the prefix tensor mask; only :class:`CountingBranch` blocks are counted."""
    scales = [1.0] * count + [0.0] * (len(blocks) - count)
    counted = [(i, b) for i, b in enumerate(blocks) if isinstance(b, CountingBranch)]
    for _, block in counted:
        block.calls = 0
    layer.mask = count
    out = layer(x)
    assert [b.calls for _, b in counted] == [int(i < count) for i, _ in counted]
    assert_close(out, reference(layer, x, scales))
    layer.mask = torch.tensor(scales)
    assert_close(layer(x), out)


def check_dropped_blocks_do_not_matter(
    layer: nn.Module, blocks: Sequence[nn.Module], x: torch.Tensor, kept: int, shift: float
) -> None:
    """With keep count ``kept``, shifting the weights of ``blocks[kept:]`` leaves the output as it
    is, and shifting the last kept block's bias changes it."""
    layer.mask = kept
    before = layer(x)
    with torch.no_grad():
        for block in blocks[kept:]:
            block.linear.weight.add_(shift)
            block.linear.bias.add_(shift)
    assert_close(layer(x), before)
    with torch.no_grad():
        blocks[kept - 1].linear.bias.add_(shift)
    assert not torch.allclose(layer(x), before)
