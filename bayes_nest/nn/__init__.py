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
from .bayesian import BayesianConv2d, BayesianLinear, to_bayesian_
from .bits import MAX_BITS, NestedQuantizer, attach_weight_quantizers, bit_planes, truncate
from .depth import NestedStage
from .nest import LayerPlan, NestError, check_narrowing, nest, nest_plan
from .paths import NestedPaths
from .width import NestedConv2d, NestedLinear, SlicedConv2d, SlicedLinear, make_activation

__all__ = [
    "AXIS_KINDS",
    "Axis",
    "BayesianConv2d",
    "BayesianLinear",
    "MAX_BITS",
    "LayerPlan",
    "Mask",
    "NestError",
    "NestedConv2d",
    "NestedLinear",
    "NestedModule",
    "NestedPaths",
    "NestedQuantizer",
    "NestedStage",
    "SlicedConv2d",
    "SlicedLinear",
    "attach_weight_quantizers",
    "axes",
    "axis_owners",
    "bit_planes",
    "check_narrowing",
    "full_block_mask",
    "get_masks",
    "make_activation",
    "masked",
    "nest",
    "nest_plan",
    "set_masks",
    "to_bayesian_",
    "truncate",
]
