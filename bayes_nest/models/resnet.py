"""CIFAR-style residual network with nested depths (per stage) and nested widths."""

from __future__ import annotations

from collections.abc import Sequence

from .blocks import (
    ConvBranch,
    Residual,
    ResidualStagesNet,
    attach_bits,
    check_bits,
    check_stages,
    stage_width_axis,
)
from .blocks import shortcut_conv as shortcut_conv  # re-exported
from .blocks import stem_conv as stem_conv  # re-exported

__all__ = ["ResNet", "stage_width_axis"]


class ResNet(ResidualStagesNet):
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
        num_classes, in_channels, widths, depths, groups, always_on = check_stages(
            num_classes, in_channels, widths, depths, groups, always_on
        )
        bits = check_bits(bits)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.widths = tuple(widths)
        self.depths = tuple(depths)
        self.bits = bits
        kw = {"groups": groups, "always_on": always_on}

        def branch(s: int, i: int, c_in: int, c_out: int, stride: int) -> ConvBranch:
            return ConvBranch(c_in, c_out, c_out, stride=stride, out_axis=stage_width_axis(s), **kw)

        def first(width: int) -> Residual:
            return Residual(branch(0, 0, width, width, 1))

        self._build(in_channels, widths, depths, num_classes, first=first, branch=branch, **kw)
        attach_bits(self, bits)
