"""ResNeXt-style network: residual stages whose blocks are sums of nested parallel paths."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..nn.paths import NestedPaths
from .blocks import (
    PreActivatedBranch,
    ResidualStagesNet,
    attach_bits,
    check_bits,
    check_int,
    check_stages,
    nested_conv_bn,
    stage_width_axis,
)

__all__ = ["ResNeXt"]


class Path(PreActivatedBranch):
    """One parallel path ``ReLU → conv1×1-BN-ReLU (path_width) → conv3×3-BN (out channels)``.

    ``inner_axis`` is shared by the inner convs of all paths of a block; ``out_axis`` is the
    stage's shared width axis (the paths are summed with the shortcut).
    """

    def __init__(
        self,
        in_channels: int,
        path_width: int,
        out_channels: int,
        *,
        stride: int,
        groups: int,
        always_on: int,
        inner_groups: int,
        inner_always_on: int,
        inner_axis: str,
        out_axis: str,
    ) -> None:
        super().__init__(
            nested_conv_bn(
                in_channels,
                path_width,
                1,
                groups=inner_groups,
                always_on=inner_always_on,
                axis_name=inner_axis,
            ),
            nested_conv_bn(
                path_width,
                out_channels,
                3,
                stride=stride,
                groups=groups,
                always_on=always_on,
                activation=None,
                axis_name=out_axis,
            ),
        )


class ResNeXt(ResidualStagesNet):
    r"""A small ResNeXt: every residual block is a sum of ``cardinality`` nested paths.

    Layout as :class:`~bayes_nest.models.ResNet`: stem → stages → ReLU → global average pool →
    linear. Block ``i`` of stage ``s`` is a :class:`~bayes_nest.nn.NestedPaths` with the paths axis
    ``"stages.<s>.blocks.<i>.paths"`` (trailing paths dropped); the inner 1×1 convs of its paths
    share the width axis ``"stages.<s>.blocks.<i>.inner"`` (``gcd(groups, path_width)`` groups),
    and their outputs join the stage's shared width axis ``"stages.<s>.width"``. Each stage is a
    depth axis ``"stages.<s>"`` whose first block is always on (stage 0: ``x + Σ_p T_p(x)``; later
    stages: a strided 1×1 projection shortcut plus strided paths); the later blocks are
    ``Σ_p T_p(x)`` branches of the stage.

    Parameters
    ----------
    num_classes, in_channels : int
    widths, depths : sequence of int
        Channels and blocks per stage (as for :class:`~bayes_nest.models.ResNet`).
    cardinality : int
        Parallel paths per block.
    path_width : int
        Channels inside each path.
    groups, always_on : int
        Ordered blocks and always-kept leading groups of every width axis.
    paths_always_on : int
        Always-kept leading paths of every block (``>= 1``).
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
        widths: Sequence[int] = (32, 64),
        depths: Sequence[int] = (2, 2),
        *,
        cardinality: int = 4,
        path_width: int = 4,
        groups: int = 8,
        always_on: int = 1,
        paths_always_on: int = 1,
        bits: int | None = None,
    ) -> None:
        super().__init__()
        num_classes, in_channels, widths, depths, groups, always_on = check_stages(
            num_classes, in_channels, widths, depths, groups, always_on
        )
        cardinality = check_int(cardinality, "cardinality")
        path_width = check_int(path_width, "path_width")
        paths_always_on = check_int(paths_always_on, "paths_always_on")
        if paths_always_on > cardinality:
            raise ValueError(
                f"paths_always_on must be in [1, cardinality={cardinality}], got {paths_always_on}"
            )
        bits = check_bits(bits)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.widths = tuple(widths)
        self.depths = tuple(depths)
        self.cardinality = cardinality
        self.path_width = path_width
        self.bits = bits
        inner_groups = math.gcd(groups, path_width)
        kw = {"groups": groups, "always_on": always_on}

        def paths(
            s: int, i: int, c_in: int, c_out: int, stride: int, residual: bool = False
        ) -> NestedPaths:
            prefix = f"stages.{s}.blocks.{i}"
            branches = [
                Path(
                    c_in,
                    path_width,
                    c_out,
                    stride=stride,
                    inner_groups=inner_groups,
                    inner_always_on=min(always_on, inner_groups),
                    inner_axis=f"{prefix}.inner",
                    out_axis=stage_width_axis(s),
                    **kw,
                )
                for _ in range(cardinality)
            ]
            return NestedPaths(
                branches,
                always_on=paths_always_on,
                residual=residual,
                axis_name=f"{prefix}.paths",
            )

        def first(width: int) -> NestedPaths:
            return paths(0, 0, width, width, 1, residual=True)

        self._build(in_channels, widths, depths, num_classes, first=first, branch=paths, **kw)
        attach_bits(self, bits)
