"""Shape tracing: run a module once under a sub-network config and record every module call.

Cost models and export both need to know, for each layer, the shapes it actually sees in a given
sub-network (how many input channels reach it, how large its output is, whether a residual block
runs at all). A single forward pass of a batch-1 zero tensor under :func:`~bayes_nest.subnet.use`
answers all of these exactly, whatever the architecture, because owners *slice* under hard keep
counts: a dropped block is never called and a narrowed layer sees narrowed inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import use

__all__ = [
    "Call",
    "Trace",
    "check_input_fits",
    "check_input_shape",
    "eval_mode",
    "infer_input_shape",
    "input_from_shape",
    "resolve_input_shape",
    "trace",
]


@dataclass
class Call:
    """One call of one module during a traced forward pass."""

    path: str
    module: nn.Module
    input_shapes: list[tuple[int, ...]]
    output_shape: tuple[int, ...] | None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the first tensor argument."""
        if not self.input_shapes:
            raise ValueError(f"module {self.path!r} was called without a tensor argument")
        return self.input_shapes[0]


@dataclass
class Trace:
    """Calls recorded in one forward pass, in completion order (children before parents)."""

    calls: list[Call]
    batch_size: int

    def by_module(self) -> dict[int, list[Call]]:
        """Calls grouped by ``id(module)``."""
        grouped: dict[int, list[Call]] = {}
        for call in self.calls:
            grouped.setdefault(id(call.module), []).append(call)
        return grouped


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own training flag on exit."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype if p.is_floating_point() else torch.float32
    return torch.device("cpu"), torch.float32


def input_from_shape(module: nn.Module, input_shape: Sequence[int], batch_size: int = 1):
    """A zero tensor of shape ``(batch_size, *input_shape)`` on the module's device and dtype."""
    shape = check_input_shape(input_shape)
    device, dtype = _device_and_dtype(module)
    return torch.zeros((batch_size, *shape), device=device, dtype=dtype)


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    """Validate the shape of one example (no batch dimension)."""
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"input_shape must be a sequence of positive ints (one example, no batch "
            f"dimension), got {input_shape!r}"
        ) from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive ints (one example, no batch "
            f"dimension), got {input_shape!r}"
        )
    return shape


def _shapes(args: Sequence[Any]) -> list[tuple[int, ...]]:
    return [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]


def trace(
    module: nn.Module,
    config: Mapping[str, int] | None,
    *,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
) -> Trace:
    """Run ``module`` once (eval mode, no grad) under ``config`` and record every module call.

    Parameters
    ----------
    module : nn.Module
    config : Mapping[str, int] or None
        Sub-network to trace (``None``: the module's current masks).
    input_shape : sequence of int, optional
        Shape of one example; a batch-1 zero tensor is traced.
    example_input : Tensor, optional
        A batch to trace instead (its first dimension is the batch size).

    Returns
    -------
    Trace
    """
    if example_input is None:
        if input_shape is None:
            raise ValueError("trace needs input_shape or example_input")
        example_input = input_from_shape(module, input_shape)
    calls: list[Call] = []
    paths = {id(m): p for p, m in module.named_modules(remove_duplicate=False)}

    def hook(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        out_shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        calls.append(Call(paths.get(id(mod), "?"), mod, _shapes(args), out_shape, dict(kwargs)))

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in {id(m): m for m in module.modules()}.values()
    ]
    try:
        with (
            eval_mode(module),
            torch.no_grad(),
            use(module, config) if config is not None else contextlib.nullcontext(),
        ):
            module(example_input)
    finally:
        for h in handles:
            h.remove()
    return Trace(calls, int(example_input.shape[0]))


# ----------------------------------------------------------------------------- input shapes


def _sliceable_layers() -> tuple[type, ...]:
    """Layer types that accept inputs narrower than their full input width (and slice)."""
    from ..nn.bayesian import BayesianLayer
    from ..nn.width import SlicedConv2d, SlicedLinear

    return (SlicedLinear, SlicedConv2d, BayesianLayer)


def _full_input_units(module: nn.Module) -> tuple[int, int] | None:
    """``(units, dim)``: a sliceable layer's full input width and the input dim holding it."""
    if isinstance(getattr(module, "in_features", None), int):
        return module.in_features, -1
    if isinstance(getattr(module, "in_channels", None), int):
        return module.in_channels, -3
    return None


def check_input_fits(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Check that examples of ``input_shape`` fit ``module``; return the shape.

    Nested layers slice their weights to the width of their input (a narrowed layer feeds the
    next one a narrower input), so an input with too few features would run on truncated weights
    without any error. In the *full* network nothing is narrowed, so every sliceable layer must
    see its full input width there: the full network is traced once on ``input_shape`` and any
    narrower input is an error naming the layer.

    Raises
    ------
    ValueError
        If the full network cannot run on ``input_shape`` or a layer sees a narrower input.
    """
    from .config import full

    shape = check_input_shape(input_shape)
    try:
        traced = trace(module, full(module), input_shape=shape)
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"{type(module).__name__} cannot run on examples of input_shape {shape}: {err}"
        ) from err
    sliceable = _sliceable_layers()
    for call in traced.calls:
        if not isinstance(call.module, sliceable) or not call.input_shapes:
            continue
        expected = _full_input_units(call.module)
        if expected is None or len(call.input_shape) < -expected[1]:
            continue
        units, dim = expected
        if call.input_shape[dim] != units:
            raise ValueError(
                f"input_shape {shape} does not fit {type(module).__name__}: layer {call.path!r} "
                f"takes {units} input features/channels but gets {call.input_shape[dim]} in the "
                "full network (it would compute on truncated weights)"
            )
    return shape


def infer_input_shape(module: nn.Module) -> tuple[int, ...] | None:
    """The shape of one example when the layers determine it, else ``None``.

    The first layer owning parameters (in registration order) decides: a linear layer (plain,
    sliced, nested or Bayesian) with ``in_features`` inputs gives ``(in_features,)``, as for an
    :class:`~bayes_nest.models.MLP`; anything else (a convolution has no fixed image size) gives
    ``None``. The result is checked with :func:`check_input_fits` by the callers.
    """
    for layer in module.modules():
        if next(layer.parameters(recurse=False), None) is None:
            continue
        expected = _full_input_units(layer)
        if isinstance(layer, (nn.Linear, *_sliceable_layers())) and expected and expected[1] == -1:
            return (expected[0],)
        return None
    return None


def resolve_input_shape(
    module: nn.Module, input_shape: Sequence[int] | None, what: str
) -> tuple[int, ...]:
    """``input_shape`` checked against ``module``, or inferred from its layers when ``None``.

    Raises
    ------
    ValueError
        If the shape does not fit the module (:func:`check_input_fits`) or is ``None`` and
        cannot be inferred; ``what`` names the caller in the message.
    """
    if input_shape is not None:
        return check_input_fits(module, input_shape)
    inferred = infer_input_shape(module)
    if inferred is None:
        raise ValueError(
            f"{what} needs input_shape: the shape of one example without the batch dimension, "
            f"e.g. (3, 32, 32); it cannot be inferred from the layers of {type(module).__name__}"
        )
    try:
        return check_input_fits(module, inferred)
    except ValueError as err:
        raise ValueError(
            f"{what}: the input shape {inferred} inferred from the first layer of "
            f"{type(module).__name__} does not fit ({err}); pass input_shape"
        ) from err
