"""Building blocks and argument checks shared by the reference convolutional models."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from ..nn.width import NestedConv2d

__all__ = ["ConvBranch", "Projection", "Residual"]


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_ints(values: Sequence[int], name: str, minimum: int = 1) -> list[int]:
    """Return ``values`` as a non-empty list of ints ``>= minimum``, else raise naming ``name``."""
    message = f"{name} must be a non-empty sequence of ints, got {values!r}"
    if isinstance(values, str | bytes | numbers.Number):
        raise ValueError(message)
    try:
        values = list(values)  # tuples, lists, NumPy arrays
    except TypeError:
        raise ValueError(message) from None
    if not values:
        raise ValueError(message)
    return [check_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(values)]


def check_groups(widths: Sequence[int], groups: int, always_on: int, name: str) -> tuple[int, int]:
    """Check ``groups`` and ``always_on`` against every width in ``widths``; return them."""
    groups = check_int(groups, "groups")
    always_on = check_int(always_on, "always_on", 0)
    for i, width in enumerate(widths):
        if width % groups:
            raise ValueError(f"groups={groups} must divide every width; {name}[{i}]={width}")
    if always_on > groups:
        raise ValueError(f"always_on must be in [0, groups={groups}], got {always_on}")
    return groups, always_on


def check_bits(bits: int | None) -> int | None:
    """``bits`` is ``None`` or an int (its range is checked by the quantizer)."""
    return None if bits is None else check_int(bits, "bits")


class Residual(nn.Module):
    """Identity shortcut around a body: ``y = x + body(x)`` (an always-on residual block)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Projection(nn.Module):
    """Projection shortcut around a body: ``y = shortcut(x) + body(x)`` (a downsampling block)."""

    def __init__(self, shortcut: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class ConvBranch(nn.Module):
    """A residual branch ``ReLU → conv3×3-BN-ReLU → conv3×3-BN`` with nested widths.

    The first convolution owns its own width axis (named after its path); the second one's output
    channels are summed with the shortcut, so it joins the stage's shared axis ``out_axis``.
    The leading ReLU makes the block pre-activated: the residual sum itself is linear, so the
    stage output is ``x_0 + Σ_m b_m`` and dropping trailing blocks leaves a valid network.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        groups: int,
        always_on: int,
        out_axis: str,
    ) -> None:
        super().__init__()
        self.conv1 = NestedConv2d(
            in_channels,
            mid_channels,
            3,
            stride=stride,
            padding=1,
            groups=groups,
            always_on=always_on,
            norm="batch",
            activation="relu",
        )
        self.conv2 = NestedConv2d(
            mid_channels,
            out_channels,
            3,
            padding=1,
            groups=groups,
            always_on=always_on,
            norm="batch",
            activation=None,
            axis_name=out_axis,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(torch.relu(x)))
