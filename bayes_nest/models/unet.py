r"""A U-Net for dense (per-pixel) prediction with nested widths and a nested-depth bottleneck.

The encoder has ``L = len(widths)`` levels; level ``s`` runs at ``H / 2^s`` and has ``widths[s]``
channels. The decoder climbs back up with nearest-neighbour upsampling, and joins each encoder
level's features by an *additive* skip connection (as in LinkNet, Chaurasia & Culurciello 2017)
rather than a concatenation: a sliced layer uses the *leading* input channels of its weight, so a
concatenation of two sliced tensors would shift the second one's channels, whereas a sum of two
tensors on one shared width axis slices consistently. The summed layers therefore share the axis
``"level<s>"``::

    enc.<s>.0  ──►  level<s> ─────────────── skip ──────────────┐
       (own axis)    (conv, shared)                              ▼
                        │ max-pool                up.<s> (level<s>) + skip ─► dec.<s> (own axis)
                        ▼                             ▲ nearest ×2
                       ...  ─► bottleneck (level<L-1>, residual blocks: depth axis) ─┘

Every convolution is a 3×3 :class:`~bayes_nest.nn.NestedConv2d` with batch-norm and ReLU, so a
dropped channel block contributes exactly nothing downstream and
:func:`~bayes_nest.subnet.export` gives a plain network computing the same function. The
bottleneck is a :class:`~bayes_nest.nn.NestedStage` (depth axis ``"bottleneck"``) of
``bottleneck_blocks`` pre-activated residual blocks after an always-on entry convolution.
The output layer (a 1×1 convolution to ``out_channels`` logits) is not nested.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.depth import NestedStage
from ..nn.width import SlicedConv2d
from .blocks import (
    ConvBranch,
    attach_bits,
    check_bits,
    check_groups,
    check_image_input,
    check_int,
    check_ints,
    nested_conv_bn,
)

__all__ = ["UNet"]


def level_axis(level: int) -> str:
    """Name of the width axis shared by the layers summed at encoder level ``level``."""
    return f"level{level}"


class UNet(nn.Module):
    """Nested U-Net: per-pixel logits from images, every stage's width an axis.

    Parameters
    ----------
    in_channels : int
        Channels of the input images.
    out_channels : int
        Output logits per pixel (1 for a binary mask with a Bernoulli likelihood or BCE loss,
        ``K`` for ``K`` classes).
    widths : sequence of int
        Channels per level, top (full resolution) to bottom; each divisible by ``groups``. The
        input height and width must be divisible by ``2 ** (len(widths) - 1)``.
    bottleneck_blocks : int
        Residual blocks of the bottleneck, the ``"bottleneck"`` depth axis (0: no residual
        blocks and no depth axis).
    groups : int
        Ordered channel blocks of every width axis.
    always_on : int
        Always-kept leading groups of every width axis.
    dropout : float
        Channel dropout (``nn.Dropout2d``) before every decoder convolution; active in training
        mode only (switch it on at test time for MC dropout).
    bits : int, optional
        Nest the weights' quantization bits too (one shared ``"bits"`` axis).

    Axes
    ----
    ``"enc.<s>.0"`` (first conv of encoder level ``s``), ``"level<s>"`` (shared by the second
    conv of level ``s``, the decoder's upsampling conv into it and, at the bottom, the residual
    blocks), ``"dec.<s>"`` (decoder conv of level ``s``), ``"bottleneck"`` (depth).

    Shapes
    ------
    input ``(N, in_channels, H, W)``; output ``(N, out_channels, H, W)``.

    Examples
    --------
    >>> import torch
    >>> from bayes_nest.models import UNet
    >>> from bayes_nest.subnet import cost, full
    >>> net = UNet(1, 1, widths=(16, 32, 64), groups=4)
    >>> net(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        *,
        bottleneck_blocks: int = 2,
        groups: int = 8,
        always_on: int = 1,
        dropout: float = 0.0,
        bits: int | None = None,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels")
        out_channels = check_int(out_channels, "out_channels")
        widths = check_ints(widths, "widths")
        if len(widths) < 2:
            raise ValueError(f"widths must name at least 2 levels, got {widths}")
        bottleneck_blocks = check_int(bottleneck_blocks, "bottleneck_blocks", 0)
        groups, always_on = check_groups(widths, groups, always_on, "widths")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise TypeError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        bits = check_bits(bits)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.widths = tuple(widths)
        self.downsampling = 2 ** (len(widths) - 1)
        kw = {"groups": groups, "always_on": always_on}
        bottom = len(widths) - 1
        enc, previous = [], in_channels
        for s, width in enumerate(widths[:-1]):
            enc.append(
                nn.Sequential(
                    nested_conv_bn(previous, width, 3, **kw),
                    nested_conv_bn(width, width, 3, axis_name=level_axis(s), **kw),
                )
            )
            previous = width
        self.enc = nn.ModuleList(enc)
        width = widths[-1]
        entry = nested_conv_bn(previous, width, 3, axis_name=level_axis(bottom), **kw)
        blocks = [
            ConvBranch(width, width, width, out_axis=level_axis(bottom), **kw)
            for _ in range(bottleneck_blocks)
        ]
        self.bottleneck: nn.Module = (
            NestedStage([entry, *blocks], always_on=1, axis_name="bottleneck") if blocks else entry
        )
        self.up = nn.ModuleList(
            nested_conv_bn(widths[s + 1], widths[s], 3, axis_name=level_axis(s), **kw)
            for s in range(bottom)
        )
        self.dec = nn.ModuleList(
            nested_conv_bn(widths[s], widths[s], 3, axis_name=f"dec.{s}", **kw)
            for s in range(bottom)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = SlicedConv2d(widths[0], out_channels, 1)
        attach_bits(self, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, "UNet")  # fewer channels would run truncated
        if not isinstance(x, torch.fx.Proxy):  # a traced export has static shapes
            if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
                raise ValueError(
                    f"UNet expects images (N, C, H, W) with H and W divisible by "
                    f"{self.downsampling} (2 ** (levels - 1)), got {tuple(x.shape)}"
                )
        skips = []
        for level in self.enc:
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for s in range(len(skips) - 1, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.up[s](x) + skips[s]
            x = self.dec[s](self.dropout(x))
        return self.head(x)
