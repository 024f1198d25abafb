"""The exporter registry and the context every exporter receives.

:func:`register_exporter` maps a module type to ``exporter(module, ctx) -> nn.Module`` (looked
up along the class hierarchy); :class:`ExportContext` is the state one
:func:`~bayes_nest.subnet.export` call shares between its exporters: the traced input shapes,
per-block scales and the dispatch to the child exporters. The built-in exporters
(``bayes_nest.subnet._exporters``) and :func:`~bayes_nest.subnet.export` both build on this
module, which imports neither.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..nn.axis import NestedModule, axis_owners
from ._graphs import symbolic_trace
from ._trace import Call

__all__ = ["ExportContext", "ExportError", "Exporter", "register_exporter"]


class ExportError(TypeError):
    """A module or config that :func:`export` cannot turn into a plain network."""


Exporter = Callable[[nn.Module, "ExportContext"], nn.Module]
_EXPORTERS: dict[type, Exporter] = {}


def register_exporter(cls: type, exporter: Exporter) -> None:
    """Register ``exporter(module, ctx) -> nn.Module`` for modules of type ``cls`` (and subclasses).

    The exporter runs while the source model computes the chosen sub-network (its masks are
    set), and may use ``ctx.export(child)`` for children, ``ctx.calls(module)`` for the traced
    shapes, ``ctx.unit_scale(owner)`` for per-unit scales and ``ctx.parameter(t)`` /
    ``ctx.buffer(t)`` to copy tensors.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    _EXPORTERS[cls] = exporter


def _find_exporter(module: nn.Module) -> Exporter | None:
    for cls in type(module).__mro__:
        if cls in _EXPORTERS:
            return _EXPORTERS[cls]
    return None


def _is_ours(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "bayes_nest"


class ExportContext:
    """State shared by the exporters of one :func:`export` call."""

    def __init__(self, root: nn.Module, calls: list[Call], scales: Mapping[str, torch.Tensor]):
        self.root = root
        self._calls: dict[int, list[Call]] = {}
        for call in calls:
            self._calls.setdefault(id(call.module), []).append(call)
        self._axis_of = {id(owner): name for name, owner in axis_owners(root)}
        self._paths = {id(m): p for p, m in root.named_modules(remove_duplicate=False)}
        self.scales = dict(scales)

    def path(self, module: nn.Module) -> str:
        """Path of ``module`` in the source model (for messages)."""
        return self._paths.get(id(module), type(module).__name__) or "<root>"

    def calls(self, module: nn.Module) -> list[Call]:
        """Traced calls of ``module``; an error if it never ran in the sub-network."""
        found = self._calls.get(id(module))
        if not found:
            raise ExportError(
                f"module {self.path(module)!r} ({type(module).__name__}) did not run in the "
                "traced forward pass, so its input shape is unknown; export cannot size it"
            )
        shapes = {c.input_shape for c in found}
        if len(shapes) > 1:
            raise ExportError(
                f"module {self.path(module)!r} is called with inputs of different shapes "
                f"{sorted(shapes)}; a static export needs one shape per module"
            )
        return found

    def axis_name(self, owner: NestedModule) -> str:
        return self._axis_of[id(owner)]

    def block_scale(self, owner: NestedModule) -> torch.Tensor | None:
        """Scales of the *kept* blocks of ``owner``'s axis (``None`` when none were given)."""
        scale = self.scales.get(self.axis_name(owner))
        return None if scale is None else scale[: owner.kept_blocks()]

    def unit_scale(self, owner: NestedModule) -> torch.Tensor | None:
        """Per-unit scale of a width owner's kept units (block scales repeated)."""
        scale = self.block_scale(owner)
        return None if scale is None else scale.repeat_interleave(owner.axis_block_size)

    @staticmethod
    def parameter(tensor: torch.Tensor, like: nn.Parameter | None = None) -> nn.Parameter:
        requires_grad = True if like is None else like.requires_grad
        return nn.Parameter(tensor.detach().clone(), requires_grad=requires_grad)

    @staticmethod
    def buffer(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.detach().clone()

    def export(self, module: nn.Module) -> nn.Module:
        """Export one module (dispatching on its type)."""
        exporter = _find_exporter(module)
        if exporter is not None:
            return exporter(module, self)
        if isinstance(module, NestedModule):
            raise ExportError(
                f"export does not know layer type {type(module).__name__} (at "
                f"{self.path(module)!r}); register one with register_exporter"
            )
        if not _needs_export(module):
            return copy.deepcopy(module)
        return self._container(module)

    def _container(self, module: nn.Module) -> nn.Module:
        memo: dict[int, Any] = {}
        for child in module.children():
            memo[id(child)] = self.export(child)
        new = copy.deepcopy(module, memo)
        if not _is_ours(new):
            return new
        try:
            return symbolic_trace(new)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise ExportError(
                f"export could not turn {type(module).__name__} (at {self.path(module)!r}) into "
                f"plain torch modules ({type(err).__name__}: {err}); register an exporter for it"
            ) from err


def _needs_export(module: nn.Module) -> bool:
    return any(
        isinstance(m, NestedModule) or _is_ours(m) or _find_exporter(m) is not None
        for m in module.modules()
    )
