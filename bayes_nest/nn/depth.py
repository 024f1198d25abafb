"""Depth nesting: a stage of residual blocks whose trailing blocks can be dropped.

A residual stage computes ``x_L = x_0 + Σ_m b_m`` (the unravelled view of a ResNet), so its
residual blocks are additive building blocks ordered by depth. A :class:`NestedStage` owns one
``depth`` axis over its blocks: the first ``always_on`` blocks are applied as ordinary layers
(they may change the shape, e.g. a downsampling block with its own shortcut), the remaining ones
are residual *branches* ``f_i`` applied as ``x <- x + m_i · f_i(x)``. Dropping the deepest blocks
gives nested depths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .axis import NestedModule

__all__ = ["NestedStage"]


def _check_modules(modules: Sequence[nn.Module], argument: str) -> list[nn.Module]:
    if isinstance(modules, nn.Module) and not isinstance(modules, nn.ModuleList | nn.Sequential):
        raise TypeError(f"{argument} must be a sequence of nn.Module, got a single {modules!r}")
    try:
        modules = list(modules)
    except TypeError:
        raise TypeError(
            f"{argument} must be a sequence of nn.Module, got {type(modules).__name__}"
        ) from None
    if not modules:
        raise ValueError(f"{argument} must hold at least one module, got an empty sequence")
    for i, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise TypeError(f"{argument}[{i}] must be an nn.Module, got {type(module).__name__}")
    return modules


def _check_always_on(always_on: int, size: int, argument: str) -> int:
    if isinstance(always_on, bool) or not isinstance(always_on, int):
        raise TypeError(f"always_on must be an int, got {always_on!r}")
    if not 0 <= always_on <= size:
        raise ValueError(
            f"always_on must be in [0, {size}] (the number of {argument}), got {always_on}"
        )
    return always_on


class NestedStage(NestedModule):
    r"""A sequence of blocks whose trailing residual blocks form a ``depth`` axis.

    With ``A = always_on`` and blocks ``g_1..g_A, f_{A+1}..f_M``:

    .. math::

        x \leftarrow g_i(x) \quad (i \le A), \qquad
        x \leftarrow x + m_i \, f_i(x) \quad (A < i \le M).

    Under a hard keep count ``n`` only ``blocks[:n]`` run (the rest are skipped, costing
    nothing); under a tensor mask every block runs and branch ``i`` is scaled by ``m_i``
    (entries of always-on blocks are ignored: those blocks are not residual branches).

    Parameters
    ----------
    blocks : sequence of nn.Module
        ``blocks[:always_on]`` map ``x`` to the next ``x`` (any shape change allowed);
        ``blocks[always_on:]`` are residual branches whose output has the shape of their input.
    always_on : int
        Leading blocks that are never dropped (default 1, e.g. a downsampling block).
    axis_name : str, optional
        Explicit axis name; default: the module path.

    Attributes
    ----------
    blocks : nn.ModuleList

    Shapes
    ------
    input: whatever ``blocks[0]`` accepts; output: the shape after the always-on blocks.
    """

    axis_kind = "depth"

    def __init__(
        self, blocks: Sequence[nn.Module], *, always_on: int = 1, axis_name: str | None = None
    ) -> None:
        blocks = _check_modules(blocks, "blocks")
        always_on = _check_always_on(always_on, len(blocks), "blocks")
        super().__init__(size=len(blocks), always_on=always_on, axis_name=axis_name)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = self.kept_blocks()
        scale = self.block_scale(x.dtype)
        for i in range(kept):
            block = self.blocks[i]
            if i < self.axis_always_on:
                x = block(x)
                continue
            branch = block(x)
            if branch.shape != x.shape:
                raise ValueError(
                    f"residual block {i} of a NestedStage returned shape {tuple(branch.shape)} "
                    f"for an input of shape {tuple(x.shape)}; blocks after the always-on ones "
                    "must keep the shape"
                )
            x = x + (branch if scale is None else scale[i] * branch)
        return x
