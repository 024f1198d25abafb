"""Multi-layer perceptron whose every hidden layer is a width axis."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..nn.width import NestedLinear, SlicedLinear
from .blocks import attach_bits, check_features_input

__all__ = ["MLP"]


class MLP(nn.Module):
    """A fully connected network with nested hidden widths.

    Every hidden layer is a :class:`~bayes_nest.nn.NestedLinear` with ``groups`` ordered blocks,
    the first ``always_on`` of them never dropped; its axis is named ``"hidden.<i>"``. The output
    layer is not nested (it accepts the narrowed last hidden layer).

    Parameters
    ----------
    in_features : int
        Input dimension; inputs of shape ``(N, *shape)`` are flattened to ``(N, in_features)``.
    hidden : int or sequence of int
        Hidden widths, each divisible by ``groups``.
    out_features : int
        Number of outputs (classes).
    groups : int
        Ordered blocks per hidden layer.
    always_on : int
        Always-kept leading blocks per hidden layer.
    bits : int, optional
        Nest the weights' quantization bits too (one shared ``"bits"`` axis of this many bits).
    norm : {None, "batch"}
        Batch normalisation in the hidden layers.
    activation : str or callable
    """

    def __init__(
        self,
        in_features: int,
        hidden: int | Sequence[int],
        out_features: int,
        *,
        groups: int = 16,
        always_on: int = 1,
        bits: int | None = None,
        norm: str | None = None,
        activation: str | Callable = "relu",
    ) -> None:
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        if not widths or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths
        ):
            raise ValueError(
                f"hidden must be a positive int or a non-empty list of them, got {hidden!r}"
            )
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        layers = []
        previous = in_features
        for width in widths:
            layers.append(
                NestedLinear(
                    previous,
                    width,
                    groups=groups,
                    always_on=always_on,
                    norm=norm,
                    activation=activation,
                )
            )
            previous = width
        self.hidden = nn.ModuleList(layers)
        self.output = SlicedLinear(previous, out_features)
        attach_bits(self, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features_input(x, self.in_features, type(self).__name__)
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = layer(x)
        return self.output(x)
