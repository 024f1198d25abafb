"""Axes: the nestable dimensions of a network, and the masks that truncate them.

An *axis* is one dimension along which a network can be shrunk by keeping a prefix of its blocks:
output groups of a layer (``width``), trailing residual blocks of a stage (``depth``), parallel
branches (``paths``) or low-order bits of a quantizer (``bits``). Modules that own an axis subclass
:class:`NestedModule`; :func:`axes` collects the axes of any module tree, and :func:`set_masks` /
:func:`masked` set the mask each owner applies.

A mask for an axis of ``size`` blocks is one of

* ``None`` -- every block kept (the full network);
* an ``int`` ``n`` with ``always_on <= n <= size`` -- a hard truncation keeping the first ``n``
  blocks; owners *slice* (compute only the kept blocks), so the output may be narrower;
* a tensor of shape ``(size,)`` -- a multiplier per block (a relaxed or straight-through
  Downhill sample, padded with ones for the always-on blocks); owners compute every block and
  scale it, so gradients reach the mask.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "AXIS_KINDS",
    "Axis",
    "Mask",
    "NestedModule",
    "axes",
    "axis_owners",
    "full_block_mask",
    "get_masks",
    "masked",
    "set_masks",
]

AXIS_KINDS = ("width", "depth", "paths", "bits")

Mask = int | torch.Tensor | None


@dataclass(frozen=True)
class Axis:
    """One nestable dimension of a network.

    Attributes
    ----------
    name : str
        Axis name; also the name of its Pyro mask site. Defaults to the owning module's path.
    kind : str
        One of ``"width"``, ``"depth"``, ``"paths"``, ``"bits"``.
    size : int
        Total number of blocks, always-on ones included.
    always_on : int
        Leading blocks that are never dropped (``0 <= always_on <= size``).
    block_size : int
        Units per block (neurons or channels per group; 1 for depth, paths and bits).
    """

    name: str
    kind: str
    size: int
    always_on: int = 0
    block_size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in AXIS_KINDS:
            raise ValueError(
                f"Axis {self.name!r}: kind must be one of {AXIS_KINDS}, got {self.kind!r}"
            )
        for field in ("size", "always_on", "block_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"Axis {self.name!r}: {field} must be an int, got {value!r}")
        if self.size < 1:
            raise ValueError(f"Axis {self.name!r}: size must be >= 1, got {self.size}")
        if not 0 <= self.always_on <= self.size:
            raise ValueError(
                f"Axis {self.name!r}: always_on must be in [0, size={self.size}], got {self.always_on}"
            )
        if self.block_size < 1:
            raise ValueError(f"Axis {self.name!r}: block_size must be >= 1, got {self.block_size}")

    @property
    def orderable(self) -> int:
        """Number of blocks that can be dropped (``size - always_on``): the Downhill event size D."""
        return self.size - self.always_on

    def check_count(self, count: int) -> int:
        """Validate a keep count for this axis and return it as an ``int``.

        Accepts Python and NumPy integers, integer-valued floats and one-element integer
        tensors; rejects booleans and non-integral values (no silent rounding).
        """
        value = count
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.dtype == torch.bool:
                raise TypeError(f"axis {self.name!r}: keep count must be an integer, got {count!r}")
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"axis {self.name!r}: keep count must be an integer, got {count!r}")
        if not isinstance(value, numbers.Integral):
            if not math.isfinite(value) or value != int(value):
                raise TypeError(f"axis {self.name!r}: keep count must be an integer, got {count!r}")
        value = int(value)
        if not self.always_on <= value <= self.size:
            raise ValueError(
                f"axis {self.name!r}: keep count {value} out of range "
                f"[always_on={self.always_on}, size={self.size}]"
            )
        return value


class NestedModule(nn.Module):
    """Base class of modules that own one axis and apply its mask.

    Subclasses set ``axis_kind``, call ``super().__init__(size=..., always_on=..., block_size=...,
    axis_name=...)`` and read :attr:`mask` in ``forward``. ``axis_name=None`` names the axis after
    the module's path in the tree it is collected from; modules given the same explicit name share
    one axis (e.g. layers joined by a residual sum).
    """

    axis_kind: str = ""

    def __init__(
        self, *, size: int, always_on: int = 0, block_size: int = 1, axis_name: str | None = None
    ) -> None:
        super().__init__()
        if axis_name is not None and (not isinstance(axis_name, str) or not axis_name):
            raise ValueError(f"axis_name must be a non-empty string or None, got {axis_name!r}")
        # Validate eagerly with a provisional name.
        Axis(axis_name or type(self).__name__, self.axis_kind, size, always_on, block_size)
        self.axis_name = axis_name
        self.axis_size = size
        self.axis_always_on = always_on
        self.axis_block_size = block_size
        self.mask: Mask = None

    def axis(self, name: str) -> Axis:
        """The :class:`Axis` of this module under ``name``."""
        return Axis(name, self.axis_kind, self.axis_size, self.axis_always_on, self.axis_block_size)

    def kept_blocks(self) -> int:
        """Number of blocks computed under the current mask (``size`` unless the mask is an int)."""
        return self.mask if isinstance(self.mask, int) else self.axis_size

    def block_scale(self, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """The per-block multiplier for a tensor mask, else ``None``."""
        if isinstance(self.mask, torch.Tensor):
            return self.mask if dtype is None else self.mask.to(dtype)
        return None

    def extra_repr(self) -> str:
        name = f"axis={self.axis_name!r}, " if self.axis_name else ""
        return f"{name}size={self.axis_size}, always_on={self.axis_always_on}"


def axis_owners(module: nn.Module) -> Iterator[tuple[str, NestedModule]]:
    """Yield ``(axis_name, owner)`` for every :class:`NestedModule` in ``module``, in module order."""
    for path, sub in module.named_modules():
        if isinstance(sub, NestedModule):
            yield (sub.axis_name or path or type(sub).__name__), sub


def axes(module: nn.Module) -> dict[str, Axis]:
    """All axes of a module tree, in order of first appearance.

    Parameters
    ----------
    module : nn.Module
        Any module; its :class:`NestedModule` descendants define the axes.

    Returns
    -------
    dict[str, Axis]
        Axis name to :class:`Axis`. Owners sharing a name must agree on kind, size and always-on.

    Raises
    ------
    ValueError
        If two owners share an axis name but disagree on its shape.
    """
    found: dict[str, Axis] = {}
    for name, owner in axis_owners(module):
        axis = owner.axis(name)
        previous = found.get(name)
        if previous is None:
            found[name] = axis
        elif (previous.kind, previous.size, previous.always_on) != (
            axis.kind,
            axis.size,
            axis.always_on,
        ):
            raise ValueError(
                f"modules sharing axis {name!r} disagree: {previous} vs {axis}; shared axes need "
                "the same kind, size and always_on"
            )
    return found


def full_block_mask(axis: Axis, orderable_mask: torch.Tensor) -> torch.Tensor:
    """Pad a mask over the orderable blocks with ones for the always-on blocks.

    Parameters
    ----------
    axis : Axis
    orderable_mask : Tensor, shape ``(..., axis.orderable)``
        E.g. a Downhill sample.

    Returns
    -------
    Tensor, shape ``(..., axis.size)``
    """
    if orderable_mask.shape[-1] != axis.orderable:
        raise ValueError(
            f"axis {axis.name!r}: mask has {orderable_mask.shape[-1]} entries, expected "
            f"{axis.orderable} (size {axis.size} minus always_on {axis.always_on})"
        )
    if axis.always_on == 0:
        return orderable_mask
    ones = orderable_mask.new_ones(orderable_mask.shape[:-1] + (axis.always_on,))
    return torch.cat([ones, orderable_mask], dim=-1)


def _check_mask(axis: Axis, mask: Mask) -> Mask:
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        if mask.dim() == 0:
            return axis.check_count(mask)
        if mask.shape != (axis.size,):
            raise ValueError(
                f"axis {axis.name!r}: mask tensor must have shape ({axis.size},), "
                f"got {tuple(mask.shape)}"
            )
        return mask
    return axis.check_count(mask)


def set_masks(module: nn.Module, masks: Mapping[str, Mask], *, strict: bool = True) -> None:
    """Set the masks of a module tree by axis name.

    Parameters
    ----------
    module : nn.Module
    masks : Mapping[str, int | Tensor | None]
        Axis name to mask (see the module docstring). Axes not named keep their current mask.
    strict : bool
        Reject names that are not axes of ``module`` (default).
    """
    known = axes(module)
    if strict:
        unknown = [name for name in masks if name not in known]
        if unknown:
            raise ValueError(f"unknown axis {unknown[0]!r}; known axes: {sorted(known)}")
    checked = {
        name: _check_mask(known[name], mask) for name, mask in masks.items() if name in known
    }
    for name, owner in axis_owners(module):
        if name in checked:
            owner.mask = checked[name]


def get_masks(module: nn.Module) -> dict[str, Mask]:
    """Current mask of every axis (the first owner's, for shared axes)."""
    current: dict[str, Mask] = {}
    for name, owner in axis_owners(module):
        current.setdefault(name, owner.mask)
    return current


@contextlib.contextmanager
def masked(module: nn.Module, masks: Mapping[str, Mask], *, strict: bool = True) -> Iterator[None]:
    """Context manager: set ``masks`` on ``module`` and restore the previous masks on exit."""
    previous = [(owner, owner.mask) for _, owner in axis_owners(module)]
    try:
        set_masks(module, masks, strict=strict)
        yield
    finally:
        for owner, mask in previous:
            owner.mask = mask
