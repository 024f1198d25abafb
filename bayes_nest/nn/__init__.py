"""Nested layers: modules that own axes (width, depth, paths, bits) and apply their masks."""

from .axis import (
    AXIS_KINDS,
    Axis,
    Mask,
    NestedModule,
    axes,
    axis_owners,
    full_block_mask,
    get_masks,
    masked,
    set_masks,
)
from .width import NestedConv2d, NestedLinear, SlicedConv2d, SlicedLinear, make_activation

__all__ = [
    "AXIS_KINDS",
    "Axis",
    "Mask",
    "NestedConv2d",
    "NestedLinear",
    "NestedModule",
    "SlicedConv2d",
    "SlicedLinear",
    "axes",
    "axis_owners",
    "full_block_mask",
    "get_masks",
    "make_activation",
    "masked",
    "set_masks",
]
