"""Mixed precision for the training loop: autocast and, for float16, gradient scaling."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..distributed import check_amp

__all__ = ["Precision", "grad_scaler"]


def grad_scaler() -> Any:
    """A CUDA gradient scaler (``torch.amp.GradScaler`` from torch 2.3, before in torch.cuda.amp)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # pragma: no cover - older torch


class Precision:
    """The arithmetic of a training step: full precision, or automatic mixed precision.

    Parameters
    ----------
    amp : bool or {"float16", "bfloat16"}
        ``False``: full precision. ``True`` or ``"float16"``: float16 autocast with a
        :class:`torch.amp.GradScaler` (the loss is scaled before the backward pass and the
        gradients unscaled before clipping and the update; steps whose gradients overflow are
        skipped). ``"bfloat16"``: bfloat16 autocast, no scaling. Mixed precision needs CUDA:
        on another device a :class:`ValueError` says so.
    device : torch.device
        Where training runs.
    """

    def __init__(self, amp: bool | str, device: torch.device) -> None:
        self.dtype = check_amp(amp, torch.device(device))
        self.device = torch.device(device)
        self.scaler = grad_scaler() if self.dtype == torch.float16 else None
        self._full = contextlib.nullcontext()  # reusable: no object per step

    @property
    def enabled(self) -> bool:
        """Whether mixed precision is on."""
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass and loss run in."""
        if self.dtype is None:
            return self._full
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, on the scaled loss under float16."""
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip: Callable[[], Any] | None = None) -> None:
        """Clip (``clip()``, on unscaled gradients) and take the optimizer step."""
        if self.scaler is None:
            if clip is not None:
                clip()
            optimizer.step()
            return
        if clip is not None:
            self.scaler.unscale_(optimizer)
            clip()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The gradient scaler's state (None without one)."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the gradient scaler (a state of another precision is ignored)."""
        if self.scaler is not None and state is not None:
            self.scaler.load_state_dict(state)
