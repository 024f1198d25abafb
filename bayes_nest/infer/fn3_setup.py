"""How an FN3 trainer builds its optimizer and scheduler."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .defaults import FN3_DEFAULTS


def _make_optimizer(optimizer: Any, module: nn.Module) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(module.parameters(), lr=FN3_DEFAULTS["lr"])
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        made = optimizer(module.parameters())
        if not isinstance(made, torch.optim.Optimizer):
            raise TypeError(f"optimizer factory returned {type(made).__name__}, not an Optimizer")
        return made
    raise TypeError(
        "optimizer must be None, a torch.optim.Optimizer or a callable params -> Optimizer, "
        f"got {type(optimizer).__name__}"
    )


def _make_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    if scheduler is None:
        return None
    if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
        if getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise ValueError("scheduler is attached to a different optimizer than the trainer's")
        return scheduler
    if callable(scheduler):
        made = scheduler(optimizer)
        if not hasattr(made, "step"):
            raise TypeError(f"scheduler factory returned {type(made).__name__}, not a scheduler")
        return made
    raise TypeError(
        "scheduler must be None, an LR scheduler or a callable optimizer -> scheduler, "
        f"got {type(scheduler).__name__}"
    )
