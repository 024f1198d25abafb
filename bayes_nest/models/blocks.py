"""Building blocks and argument checks shared by the reference convolutional models."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..nn.bits import attach_weight_quantizers
from ..nn.depth import NestedStage
from ..nn.width import NestedConv2d, SlicedLinear

__all__ = [
    "ConvBranch",
    "check_features_input",
    "check_image_input",
    "PreActivatedBranch",
    "Projection",
    "Residual",
    "ResidualStagesNet",
    "nested_conv_bn",
]


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


def check_stages(
    num_classes: int,
    in_channels: int,
    widths: Sequence[int],
    depths: Sequence[int],
    groups: int,
    always_on: int,
) -> tuple[int, int, list[int], list[int], int, int]:
    """Check the arguments of a residual network with one ``(width, depth)`` per stage."""
    num_classes = check_int(num_classes, "num_classes")
    in_channels = check_int(in_channels, "in_channels")
    widths = check_ints(widths, "widths")
    depths = check_ints(depths, "depths")
    if len(depths) != len(widths):
        raise ValueError(
            f"depths must have one entry per stage (len(widths)={len(widths)}), got {depths}"
        )
    groups, always_on = check_groups(widths, groups, always_on, "widths")
    return num_classes, in_channels, widths, depths, groups, always_on


def _traced(x: object) -> bool:
    """Whether ``x`` is a symbolic value of ``torch.fx`` (export traces the models' forward)."""
    return isinstance(x, torch.fx.Proxy)


def check_features_input(x: torch.Tensor, in_features: int, model: str) -> None:
    """Check that ``x`` is a batch ``(N, *shape)`` of examples with ``prod(shape) == in_features``.

    Nested layers accept inputs narrower than their full width (a narrowed layer feeds the next
    one), so a wrong feature count would otherwise run on truncated weights without an error.
    """
    if _traced(x):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a tensor input, got {type(x).__name__}")
    if x.ndim < 2 or math.prod(x.shape[1:]) != in_features:
        raise ValueError(
            f"{model} expects inputs of shape (N, {in_features}) (or (N, *shape) with "
            f"{in_features} values per example), got shape {tuple(x.shape)}"
        )


def check_image_input(x: torch.Tensor, in_channels: int, model: str) -> None:
    """Check that ``x`` is a batch of images ``(N, in_channels, H, W)``."""
    if _traced(x):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a tensor input, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{model} expects images of shape (N, {in_channels}, H, W), got shape {tuple(x.shape)}"
        )


def attach_bits(model: nn.Module, bits: int | None) -> None:
    """Nest the weights' quantization bits of ``model`` (one shared ``"bits"`` axis), if asked."""
    if bits is not None:
        attach_weight_quantizers(model, bits)


def nested_conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    groups: int,
    always_on: int,
    stride: int = 1,
    activation: str | None = "relu",
    axis_name: str | None = None,
) -> NestedConv2d:
    """A ``kernel_size``-square nested conv-BN(-activation), padded to keep the map size."""
    return NestedConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        always_on=always_on,
        norm="batch",
        activation=activation,
        axis_name=axis_name,
    )


def stage_width_axis(stage: int) -> str:
    """Name of the width axis shared by the layers summed in stage ``stage``."""
    return f"stages.{stage}.width"


def stem_conv(
    in_channels: int, width: int, *, groups: int, always_on: int, axis_name: str
) -> NestedConv2d:
    """The 3×3 conv-BN-ReLU stem, on the first stage's shared width axis."""
    return nested_conv_bn(
        in_channels, width, 3, groups=groups, always_on=always_on, axis_name=axis_name
    )


def shortcut_conv(
    in_channels: int, out_channels: int, *, groups: int, always_on: int, axis_name: str
) -> NestedConv2d:
    """A strided 1×1 conv-BN projection shortcut on the stage's shared width axis."""
    return nested_conv_bn(
        in_channels,
        out_channels,
        1,
        stride=2,
        groups=groups,
        always_on=always_on,
        activation=None,
        axis_name=axis_name,
    )


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


class PreActivatedBranch(nn.Module):
    """A residual branch ``y = conv2(conv1(ReLU(x)))``.

    The leading ReLU makes the block pre-activated: the residual sum itself is linear, so a
    stage output is ``x_0 + Σ_m b_m`` and dropping trailing blocks leaves a valid network.
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(torch.relu(x)))


class ConvBranch(PreActivatedBranch):
    """A residual branch ``ReLU → conv3×3-BN-ReLU → conv3×3-BN`` with nested widths.

    The first convolution owns its own width axis (named after its path); the second one's output
    channels are summed with the shortcut, so it joins the stage's shared axis ``out_axis``.
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
        kw = {"groups": groups, "always_on": always_on}
        super().__init__(
            nested_conv_bn(in_channels, mid_channels, 3, stride=stride, **kw),
            nested_conv_bn(
                mid_channels, out_channels, 3, activation=None, axis_name=out_axis, **kw
            ),
        )


#: ``branch(stage, block, in_channels, out_channels, stride)``: a residual branch of a stage.
BranchFactory = Callable[[int, int, int, int, int], nn.Module]


class ResidualStagesNet(nn.Module):
    """Base of the residual reference networks: stem → stages → ReLU → global average pool → head.

    Stage ``s`` is a :class:`~bayes_nest.nn.NestedStage` (depth axis ``"stages.<s>"``) of
    ``depths[s]`` blocks at ``widths[s]`` channels whose first block is always on: stage 0's is
    ``first(width)`` (an identity-shortcut block), a later stage's is a strided 1×1 projection
    shortcut plus ``branch(s, 0, previous, width, 2)``; block ``i > 0`` is
    ``branch(s, i, width, width, 1)``. Everything summed in a stage shares the width axis
    ``"stages.<s>.width"``, starting with the stem on stage 0's.
    """

    def _build(
        self,
        in_channels: int,
        widths: Sequence[int],
        depths: Sequence[int],
        num_classes: int,
        *,
        groups: int,
        always_on: int,
        first: Callable[[int], nn.Module],
        branch: BranchFactory,
    ) -> None:
        """Create ``stem``, ``stages`` and ``head`` in this order (it fixes the initialization)."""
        kw = {"groups": groups, "always_on": always_on}
        self.stem = stem_conv(in_channels, widths[0], axis_name=stage_width_axis(0), **kw)
        stages = []
        previous = widths[0]
        for s, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if s == 0:
                block: nn.Module = first(width)
            else:
                block = Projection(
                    shortcut_conv(previous, width, axis_name=stage_width_axis(s), **kw),
                    branch(s, 0, previous, width, 2),
                )
            blocks = [block] + [branch(s, i, width, width, 1) for i in range(1, depth)]
            stages.append(NestedStage(blocks, always_on=1))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.head = SlicedLinear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, type(self).__name__)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = torch.relu(x).mean(dim=(-2, -1))
        return self.head(x)
