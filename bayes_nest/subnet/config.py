"""Sub-network configurations: a mapping from axis name to the number of kept blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from torch import nn

from ..nn.axis import axes, masked
from ..nn.nest import check_narrowing

__all__ = ["Config", "full", "smallest", "use", "validate_config"]

Config = dict[str, int]


def full(module: nn.Module) -> Config:
    """The configuration keeping every block of every axis (each axis at ``size``)."""
    return {name: axis.size for name, axis in axes(module).items()}


def smallest(module: nn.Module) -> Config:
    """The configuration keeping only the always-on blocks (each axis at ``always_on``)."""
    return {name: axis.always_on for name, axis in axes(module).items()}


def validate_config(
    module: nn.Module, config: Mapping[str, int], *, partial: bool = True
) -> Config:
    """Check a configuration against a module's axes and return it as a complete ``dict``.

    Parameters
    ----------
    module : nn.Module
    config : Mapping[str, int]
        Axis name to keep count, ``always_on <= count <= size``.
    partial : bool
        Allow axes to be missing (they are filled with ``size``). With ``False`` every axis is
        required.

    Raises
    ------
    ValueError
        Naming the unknown axis, the missing axis or the out-of-range count.
    TypeError
        For a non-mapping config or a non-integer count.
    """
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a mapping axis name -> keep count, got {type(config).__name__}"
        )
    known = axes(module)
    for name in config:
        if name not in known:
            raise ValueError(f"unknown axis {name!r}; known axes: {sorted(known)}")
    missing = [name for name in known if name not in config]
    if missing and not partial:
        raise ValueError(f"config is missing axis {missing[0]!r}")
    return {name: axis.check_count(config.get(name, axis.size)) for name, axis in known.items()}


@contextlib.contextmanager
def use(module: nn.Module, config: Mapping[str, int]) -> Iterator[nn.Module]:
    """Context manager under which ``module`` computes the sub-network ``config``.

    Axes missing from ``config`` are kept whole. Hard counts make every owner slice, so the
    computation costs what the sub-network costs.

    Examples
    --------
    >>> import torch
    >>> from bayes_nest.models import MLP
    >>> net = MLP(16, [32, 32], 3, groups=8)
    >>> with use(net, {"hidden.0": 2}):  # 2 of 8 blocks: 8 of the 32 units
    ...     logits = net(torch.randn(5, 16))
    >>> logits.shape
    torch.Size([5, 3])
    """
    checked = validate_config(module, config)
    with masked(module, checked):
        try:
            yield module
        except RuntimeError:
            check_narrowing(module)  # a plain layer fed by a narrowed one: say so
            raise
