"""CIFAR-style residual network with nested depths (per stage) and nested widths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..nn.depth import NestedStage
from ..nn.width import NestedConv2d, SlicedLinear
from .blocks import (
    ConvBranch,
    Projection,
    Residual,
    check_bits,
    check_groups,
    check_int,
    check_ints,
)

__all__ = ["ResNet", "stage_width_axis"]


def stage_width_axis(stage: int) -> str:
    """Name of the width axis shared by the layers summed in stage ``stage``."""
    return f"stages.{stage}.width"


def stem_conv(
    in_channels: int, width: int, *, groups: int, always_on: int, axis_name: str
) -> NestedConv2d:
    """The 3×3 conv-BN-ReLU stem, on the first stage's shared width axis."""
    return NestedConv2d(
        in_channels,
        width,
        3,
        padding=1,
        groups=groups,
        always_on=always_on,
        norm="batch",
        activation="relu",
        axis_name=axis_name,
    )


def shortcut_conv(
    in_channels: int, out_channels: int, *, groups: int, always_on: int, axis_name: str
) -> NestedConv2d:
    """A strided 1×1 conv-BN projection shortcut on the stage's shared width axis."""
    return NestedConv2d(
        in_channels,
        out_channels,
        1,
        stride=2,
        groups=groups,
        always_on=always_on,
        norm="batch",
        activation=None,
        axis_name=axis_name,
    )


class ResNet(nn.Module):
    r"""A CIFAR-style ResNet whose every stage is a depth axis and every layer a width axis.

    Layout: stem conv3×3 → ``len(widths)`` stages → ReLU → global average pool → linear.
    Stage ``s`` has ``depths[s]`` blocks at ``widths[s]`` channels; its first block is always on
    (stage 0: identity shortcut; later stages: stride 2 with a 1×1 projection shortcut), the
    others are pre-activated residual branches ``ReLU → conv-BN-ReLU → conv-BN`` that the stage's
    depth axis ``"stages.<s>"`` drops from the end. Everything summed in a stage (stem or
    shortcut, and the last conv of every branch) shares the width axis ``"stages.<s>.width"``,
    so channels stay aligned for every keep count; each branch's inner conv has its own width
    axis (``"stages.<s>.blocks.<i>.conv1"``, or ``...blocks.0.body.conv1`` for a projection
    block). The classifier is not nested.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    widths : sequence of int
        Channels per stage; each divisible by ``groups``.
    depths : sequence of int
        Residual blocks per stage (``>= 1``), same length as ``widths``.
    groups : int
        Ordered blocks of every width axis.
    always_on : int
        Always-kept leading groups of every width axis (depth axes keep their first block).
    bits : int, optional
        Nest the weights' quantization bits too (one shared ``"bits"`` axis).

    Shapes
    ------
    input ``(N, in_channels, H, W)``; output ``(N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (2, 2, 2),
        *,
        groups: int = 8,
        always_on: int = 1,
        bits: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_int(num_classes, "num_classes")
        in_channels = check_int(in_channels, "in_channels")
        widths = check_ints(widths, "widths")
        depths = check_ints(depths, "depths")
        if len(depths) != len(widths):
            raise ValueError(
                f"depths must have one entry per stage (len(widths)={len(widths)}), got {depths}"
            )
        groups, always_on = check_groups(widths, groups, always_on, "widths")
        bits = check_bits(bits)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.widths = tuple(widths)
        self.depths = tuple(depths)
        self.bits = bits
        kw = {"groups": groups, "always_on": always_on}

        self.stem = stem_conv(in_channels, widths[0], axis_name=stage_width_axis(0), **kw)
        stages = []
        previous = widths[0]
        for s, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            axis = stage_width_axis(s)
            if s == 0:
                first: nn.Module = Residual(ConvBranch(width, width, width, out_axis=axis, **kw))
            else:
                first = Projection(
                    shortcut_conv(previous, width, axis_name=axis, **kw),
                    ConvBranch(previous, width, width, stride=2, out_axis=axis, **kw),
                )
            blocks = [first] + [
                ConvBranch(width, width, width, out_axis=axis, **kw) for _ in range(depth - 1)
            ]
            stages.append(NestedStage(blocks, always_on=1))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.head = SlicedLinear(widths[-1], num_classes)
        if bits is not None:
            from ..nn.bits import attach_weight_quantizers

            attach_weight_quantizers(self, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = torch.relu(x).mean(dim=(-2, -1))
        return self.head(x)
