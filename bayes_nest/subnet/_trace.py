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

__all__ = ["Call", "Trace", "check_input_shape", "eval_mode", "input_from_shape", "trace"]


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
