"""Constraints for ordered (downhill) masks and their parameters.

``downhill``
    Vectors ``m`` of length ``D`` with ``1 > m_1 > m_2 > ... > m_D > 0`` (event_dim 1). This is the
    support of :class:`~bayes_nest.distributions.Downhill`.
``downhill_closed``
    The closure: ``1 >= m_1 >= ... >= m_D >= 0``. It contains the hard masks ``1[i <= b]`` drawn by
    :class:`~bayes_nest.distributions.DownhillStraightThrough`.
``open_unit_interval``
    Scalars in ``(0, 1)`` (keep probabilities).
``positive_finite``
    Finite scalars ``> 0`` (temperatures).

Both downhill constraints are registered with :func:`torch.distributions.biject_to` and
:func:`torch.distributions.transform_to` (see :mod:`bayes_nest.distributions.transforms`), so
autoguides can place an unconstrained guide on a downhill site.
"""

from __future__ import annotations

import torch
from torch.distributions.constraints import Constraint

__all__ = ["downhill", "downhill_closed", "open_unit_interval", "positive_finite"]


class _Downhill(Constraint):
    """Non-increasing (``strict=False``) or strictly decreasing (``strict=True``) vectors in [0, 1].

    ``check`` reduces the rightmost dimension and returns a boolean tensor of the batch shape.
    The strict variant also excludes the end points 0 and 1.
    """

    event_dim = 1

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        if value.ndim == 0:
            return torch.tensor(False, device=value.device)
        if self.strict:
            inside = (value > 0) & (value < 1)
            ordered = value[..., 1:] < value[..., :-1]
        else:
            inside = (value >= 0) & (value <= 1)
            ordered = value[..., 1:] <= value[..., :-1]
        return inside.all(-1) & ordered.all(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__[1:]}(strict={self.strict})"


class _OpenUnitInterval(Constraint):
    """Scalars strictly between 0 and 1."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value > 0) & (value < 1)


class _PositiveFinite(Constraint):
    """Finite scalars strictly greater than 0."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value > 0) & torch.isfinite(value)


downhill = _Downhill(strict=True)
downhill_closed = _Downhill(strict=False)
open_unit_interval = _OpenUnitInterval()
positive_finite = _PositiveFinite()
