"""Pyro optimizers for :func:`~bayes_nest.infer.bnnn_fit.fit`: the update of ``SVI.step``.

* :func:`make_pyro_optim` -- a ``PyroOptim`` from what ``fit`` accepts;
* :class:`ParameterUpdate` -- ``optim(params)`` on the parameters SVI found (elementwise torch
  optimizers applied as one instance over all parameters, the same update);
* :func:`step_scheduler` -- one step of a Pyro LR scheduler at the end of an epoch.
"""

from __future__ import annotations

import inspect
from typing import Any

import pyro
import pyro.optim
import torch

from .defaults import BNNN_DEFAULTS

__all__ = ["ELEMENTWISE", "ParameterUpdate", "make_pyro_optim", "step_scheduler"]


def make_pyro_optim(optimizer: Any) -> pyro.optim.PyroOptim:
    """``optimizer`` as a Pyro optimizer: a ``PyroOptim`` as is (default
    ``pyro.optim.Adam({"lr": BNNN_DEFAULTS["lr"]})``), a factory ``params -> torch optimizer``
    wrapped."""
    if optimizer is None:
        return pyro.optim.Adam({"lr": BNNN_DEFAULTS["lr"]})
    if isinstance(optimizer, pyro.optim.PyroOptim):
        return optimizer
    if callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        return pyro.optim.PyroOptim(optimizer, {})
    raise TypeError(
        "optimizer must be a pyro.optim optimizer (e.g. pyro.optim.Adam({'lr': 1e-3})) or a "
        f"callable params -> torch.optim.Optimizer, got {type(optimizer).__name__}"
    )


#: Torch optimizers whose update of an element reads only that element's gradient and state:
#: one instance over all parameters updates exactly as one instance per parameter.
ELEMENTWISE = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.Adagrad,
    torch.optim.RMSprop,
    torch.optim.SGD,
)


class ParameterUpdate:
    """The optimizer step of ``SVI.step``: ``optim(params)`` on the parameters SVI found.

    A plain ``PyroOptim`` of an elementwise torch optimizer (:data:`ELEMENTWISE`, a dict of
    arguments, no gradient clipping) keeps one torch optimizer per parameter; here it is applied
    as one torch optimizer over the same parameters with the same arguments, the same update in
    one call. Unless the arguments choose an implementation (``foreach`` or ``fused``), that
    optimizer is torch's fused kernel where the optimizer and device have one (Adam, AdamW,
    SGD, Adagrad on CPU and CUDA; the same update up to floating-point rounding, in one kernel
    launch instead of a dozen per parameter), else the multi-tensor (``foreach``) one. Any
    other Pyro optimizer (LR schedulers included) is called as SVI calls it.
    """

    def __init__(self, optim: pyro.optim.PyroOptim, order: list[torch.Tensor]) -> None:
        self.optim = optim
        constructor = optim.pt_optim_constructor
        self.fusable = (
            type(optim) is pyro.optim.PyroOptim
            and isinstance(constructor, type)
            and issubclass(constructor, ELEMENTWISE)
            and isinstance(optim.pt_optim_args, dict)
            and not optim.pt_clip_args
        )
        self.order = {id(p): i for i, p in enumerate(order)}
        self.fused: torch.optim.Optimizer | None = None
        self._pending: dict | None = None

    def __call__(self, params: set[torch.Tensor]) -> None:
        if not self.fusable:
            self.optim(params)
            return
        if self.fused is None:
            ordered = sorted(params, key=lambda p: self.order.get(id(p), len(self.order)))
            self.fused = _one_optimizer(
                self.optim.pt_optim_constructor, ordered, self.optim.pt_optim_args
            )
            if self._pending is not None:
                self.fused.load_state_dict(self._pending)
                self._pending = None
        self.fused.step()

    def get_state(self) -> dict:
        if not self.fusable:
            return {"pyro": self.optim.get_state()}
        return {"fused": None if self.fused is None else self.fused.state_dict()}

    def set_state(self, state: dict) -> None:
        if "pyro" in state and not self.fusable:
            self.optim.set_state(state["pyro"])
        elif "fused" in state and self.fusable:
            self._pending = state["fused"]
            if self.fused is not None:
                self.fused.load_state_dict(self._pending)
                self._pending = None
        else:
            raise ValueError("the checkpoint's optimizer state is of a different optimizer")


def _one_optimizer(
    constructor: type[torch.optim.Optimizer], params: list[torch.Tensor], args: dict
) -> torch.optim.Optimizer:
    """``constructor(params, **args)``, with ``fused=True`` (else ``foreach=True``) added when
    ``args`` choose neither and the constructor accepts it for these parameters."""
    if "fused" in args or "foreach" in args:
        return constructor(params, **args)
    accepted = inspect.signature(constructor).parameters
    for choice in ("fused", "foreach"):
        if choice in accepted:
            try:
                return constructor(params, **args, **{choice: True})
            except (RuntimeError, ValueError, TypeError):  # not for this device or dtype
                continue
    return constructor(params, **args)


def step_scheduler(optim: pyro.optim.PyroOptim, epoch_loss: float) -> None:
    """Step a Pyro LR scheduler once (an epoch ended); other optimizers are left alone."""
    if not isinstance(optim, pyro.optim.PyroLRScheduler):
        return
    if optim.pt_scheduler_constructor is torch.optim.lr_scheduler.ReduceLROnPlateau:
        optim.step(epoch_loss)
    else:
        optim.step()
