"""Path nesting: a layer whose output is a sum of parallel branches (ResNeXt-style).

A ResNeXt block computes ``y = x + Σ_p T_p(x)``: its parallel paths are additive building blocks.
A :class:`NestedPaths` owns one ``paths`` axis over its branches and drops the trailing ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .axis import NestedModule
from .depth import _check_always_on, _check_modules

__all__ = ["NestedPaths"]


class NestedPaths(NestedModule):
    r"""Parallel branches summed, with the trailing branches forming a ``paths`` axis.

    .. math::

        y = [x] + \sum_{p=1}^{P} m_p \, T_p(x),

    where ``[x]`` is present when ``residual`` is true. Under a hard keep count ``n`` only the
    first ``n`` branches run; under a tensor mask every branch runs and branch ``p`` is scaled by
    ``m_p`` (always-on branches included, as for width layers).

    Parameters
    ----------
    branches : sequence of nn.Module
        Branches ``T_p``; all must return the same shape (that of ``x`` when ``residual``).
    always_on : int
        Leading branches never dropped (default 1). Must be at least 1 when ``residual`` is false,
        so the output always has a defined shape.
    residual : bool
        Add the input to the sum (default). Use ``False`` for a block that is itself a branch of
        a :class:`~bayes_nest.nn.NestedStage` or sits next to a projection shortcut.
    axis_name : str, optional
        Explicit axis name; default: the module path.

    Attributes
    ----------
    branches : nn.ModuleList
    residual : bool
    """

    axis_kind = "paths"

    def __init__(
        self,
        branches: Sequence[nn.Module],
        *,
        always_on: int = 1,
        residual: bool = True,
        axis_name: str | None = None,
    ) -> None:
        branches = _check_modules(branches, "branches")
        always_on = _check_always_on(always_on, len(branches), "branches")
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool, got {residual!r}")
        if not residual and always_on < 1:
            raise ValueError(
                "always_on must be >= 1 when residual=False (an empty sum has no shape), "
                f"got {always_on}"
            )
        super().__init__(size=len(branches), always_on=always_on, axis_name=axis_name)
        self.branches = nn.ModuleList(branches)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.block_scale(x.dtype)
        out = x if self.residual else None
        for p in range(self.kept_blocks()):
            branch = self.branches[p](x)
            if scale is not None:
                branch = scale[p] * branch
            if out is None:
                out = branch
            elif branch.shape != out.shape:
                raise ValueError(
                    f"branch {p} of a NestedPaths returned shape {tuple(branch.shape)}, expected "
                    f"{tuple(out.shape)}"
                )
            else:
                out = out + branch
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, residual={self.residual}"
