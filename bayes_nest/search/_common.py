"""Shared machinery of the searches: the config space, cost resolution and cached scoring."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn.axis import Axis, axes
from ..subnet.config import validate_config
from ..subnet.cost import COST_METRICS, CostModel
from .front import Point

__all__ = ["CachedScore", "Space", "resolve_cost"]

Key = tuple[tuple[str, int], ...]


class Space:
    """The configs of a module: one keep count in ``[always_on, size]`` per axis."""

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.axes: dict[str, Axis] = axes(module)
        if not self.axes:
            raise ValueError(f"{type(module).__name__} has no axes to search over")
        self.names = list(self.axes)

    def full(self) -> dict[str, int]:
        return {n: a.size for n, a in self.axes.items()}

    def smallest(self) -> dict[str, int]:
        return {n: a.always_on for n, a in self.axes.items()}

    def size(self) -> int:
        return math.prod(a.size - a.always_on + 1 for a in self.axes.values())

    def key(self, config: Mapping[str, int]) -> Key:
        return tuple((n, int(config[n])) for n in self.names)

    def check(self, config: Mapping[str, int]) -> dict[str, int]:
        return validate_config(self.module, config)


def resolve_cost(
    module: nn.Module,
    cost: str | Callable[[Mapping[str, int]], float],
    input_shape: Sequence[int] | None,
) -> tuple[Callable[[Mapping[str, int]], float], str]:
    """A cost callable and its name from a metric name or a callable."""
    if isinstance(cost, str):
        if cost not in COST_METRICS:
            raise ValueError(f"cost must be one of {COST_METRICS} or a callable, got {cost!r}")
        return CostModel(module, cost, input_shape), cost
    if not callable(cost):
        raise TypeError(f"cost must be a metric name or a callable config -> float, got {cost!r}")
    return cost, getattr(cost, "metric", getattr(cost, "__name__", "cost"))


class CachedScore:
    """Scores and costs of configs, evaluated once each; counts score evaluations."""

    def __init__(
        self,
        space: Space,
        score: Callable[[Mapping[str, int]], float],
        cost: Callable[[Mapping[str, int]], float],
        *,
        cache: bool = True,
    ) -> None:
        if not callable(score):
            raise TypeError(f"score must be a callable config -> float, got {score!r}")
        self.space = space
        self._score = score
        self._cost = cost
        self.cache = cache
        self.scores: dict[Key, float] = {}
        self.costs: dict[Key, float] = {}
        self.evaluations = 0

    def cost(self, config: Mapping[str, int]) -> float:
        key = self.space.key(config)
        if key not in self.costs:
            value = self._cost(dict(config))
            value = _as_float(value, "cost", config)
            self.costs[key] = value
        return self.costs[key]

    def score(self, config: Mapping[str, int]) -> float:
        key = self.space.key(config)
        if self.cache and key in self.scores:
            return self.scores[key]
        value = _as_float(self._score(dict(config)), "score", config)
        self.evaluations += 1
        self.scores[key] = value
        return value

    def seen(self, config: Mapping[str, int]) -> bool:
        return self.space.key(config) in self.scores

    def points(self) -> list[Point]:
        return [Point(dict(key), s, self.cost(dict(key))) for key, s in self.scores.items()]


def _as_float(value: Any, what: str, config: Mapping[str, int]) -> float:
    """``value`` as a finite float; a clear error naming ``config`` and ``value`` otherwise.

    Accepted: real numbers (Python, NumPy) and one-element tensors or arrays. Text, ``None``,
    booleans, complex numbers, several values, NaN and infinities are refused: a score or cost
    the search cannot rank would silently reorder the front.
    """
    number = value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        number = value.item()
    elif isinstance(value, np.ndarray) and value.size == 1:
        number = value.item()
    if isinstance(number, bool | np.bool_) or not isinstance(number, numbers.Real):
        raise TypeError(
            f"{what} must return a real number, got {value!r} ({type(value).__name__}) for "
            f"config {dict(config)}"
        )
    number = float(number)
    if not math.isfinite(number):
        kind = "NaN" if math.isnan(number) else "an infinite value"
        raise ValueError(f"{what} returned {kind} ({value!r}) for config {dict(config)}")
    return number
