"""A small convolutional network with nested channel widths (8×8 to 32×32 images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..nn.width import NestedLinear, SlicedLinear
from .blocks import (
    attach_bits,
    check_bits,
    check_groups,
    check_image_input,
    check_int,
    check_ints,
    nested_conv_bn,
)

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """Conv-BN-ReLU-MaxPool layers with nested channels, then a (nested) MLP head.

    Layer ``i`` is a 3×3 :class:`~bayes_nest.nn.NestedConv2d` (axis ``"convs.<i>"``) followed by
    a 2×2 max-pool (``ceil_mode``, so a 1×1 map stays 1×1); then global average pooling, an
    optional nested hidden layer (axis ``"hidden"``) and a plain linear classifier. Suits
    scikit-learn's digits as ``(N, 1, 8, 8)`` and CIFAR-sized inputs alike.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    channels : sequence of int
        Output channels of the conv layers; each divisible by ``groups``.
    hidden : int, optional
        Width of a nested hidden layer before the classifier (divisible by ``groups``).
    groups : int
        Ordered blocks of every width axis.
    always_on : int
        Always-kept leading groups of every width axis.
    bits : int, optional
        Nest the weights' quantization bits too (one shared ``"bits"`` axis).

    Shapes
    ------
    input ``(N, in_channels, H, W)``; output ``(N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32),
        *,
        hidden: int | None = None,
        groups: int = 8,
        always_on: int = 1,
        bits: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes")
        in_channels = check_int(in_channels, "in_channels")
        channels = check_ints(channels, "channels")
        widths = list(channels)
        if hidden is not None:
            hidden = check_int(hidden, "hidden")
            widths.append(hidden)
        groups, always_on = check_groups(widths, groups, always_on, "channels + [hidden]")
        bits = check_bits(bits)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.bits = bits
        convs = []
        previous = in_channels
        for width in channels:
            convs.append(nested_conv_bn(previous, width, 3, groups=groups, always_on=always_on))
            previous = width
        self.convs = nn.ModuleList(convs)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.hidden = (
            None
            if hidden is None
            else NestedLinear(previous, hidden, groups=groups, always_on=always_on, norm="batch")
        )
        self.head = SlicedLinear(previous if hidden is None else hidden, num_classes)
        attach_bits(self, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, type(self).__name__)
        for conv in self.convs:
            x = self.pool(conv(x))
        x = x.mean(dim=(-2, -1))
        if self.hidden is not None:
            x = self.hidden(x)
        return self.head(x)
