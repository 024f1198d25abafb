r"""FN3 as a training program: one step of the ordered-dropout objective.

One step draws a keep count per axis from the fixed prior of :class:`OrderedDropout`, sets it on
the network (which then computes only the kept blocks) and accumulates the gradient of

.. math:: L(W) = \mathbb E_{c \sim q}\big[\ell(f_{W, c}(x), y)\big],

estimated with one draw per mini-batch (plus the full and/or smallest sub-network under the
sandwich rule, averaged). :class:`~bayes_nest.infer.training.TrainingLoop` runs the steps;
:class:`~bayes_nest.infer.fn3.FN3Trainer` puts the two together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .evaluate import evaluate
from .fn3_history import NonFiniteLossError
from .ordered_dropout import OrderedDropout
from .training.program import StepResult
from .watchdog import Watchdog

if TYPE_CHECKING:
    from .training.loop import TrainingLoop

__all__ = ["FN3Program"]


class FN3Program:
    """The FN3 objective of a nested network, for :class:`~bayes_nest.infer.training.TrainingLoop`.

    Parameters
    ----------
    module : nn.Module
        The nested network.
    sampler : OrderedDropout
        Draws the keep counts of each step.
    optimizer : torch.optim.Optimizer
        Over ``module``'s parameters.
    scheduler : LR scheduler, optional
        Stepped every epoch (``ReduceLROnPlateau`` gets the validation NLL, else the training
        loss) or every step, as ``scheduler_interval`` says.
    scheduler_interval : {"epoch", "step"}
    loss_fn : callable
        ``loss_fn(output, target) -> scalar``.
    distill : bool
        Sub-networks after the first configuration of a step learn from its softmax.
    grad_clip : float, optional
        Clip the global gradient norm to this value before the update.
    watchdog : Watchdog, optional
        Non-finite gradient and state checks.
    """

    kind = "fn3"
    name = "FN3"
    history_columns = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
    supports_amp = True

    def __init__(
        self,
        module: nn.Module,
        sampler: OrderedDropout,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        distill: bool = False,
        grad_clip: float | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.module = module
        self.sampler = sampler
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.loss_fn = loss_fn
        self.distill = bool(distill)
        self.grad_clip = grad_clip
        self.watchdog = watchdog
        self.precision = None
        self._configs: list[dict[str, int]] = []
        self._bad_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ a step

    def bind(self, loop: TrainingLoop, dataset_size: int | None) -> None:
        self.precision = loop.precision

    def begin_epoch(self, epoch: int) -> None:
        self.module.train()

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """The step's sub-networks' losses and their averaged gradients; the result carries the
        loss and correct predictions of the sampled sub-network (the second configuration
        under the sandwich rule ``"full"``/``"both"``)."""
        precision = self.precision
        configs = self.sampler.step_configs()
        self._configs = configs
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 / len(configs)
        sampled = 1 if self.sampler.sandwich in ("full", "both") else 0
        loss_value, correct = math.nan, 0
        teacher = None
        for i, counts in enumerate(configs):
            self.sampler.apply(counts)
            with precision.autocast():
                out = self.module(x)
                if teacher is None:
                    loss = self.loss_fn(out, y)
                else:
                    loss = -(teacher * torch.log_softmax(out.float(), dim=-1)).sum(-1).mean()
            if self.distill and teacher is None:
                teacher = torch.softmax(out.detach().float(), dim=-1)
            value = float(loss.detach())
            if not math.isfinite(value):
                self._bad_counts = counts
                return StepResult(value, finite=False)
            precision.backward(loss * scale if scale != 1.0 else loss)
            if i == sampled:
                loss_value = value
                if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
                    correct = int((out.detach().argmax(-1) == y).sum())
        return StepResult(loss_value, float(correct))

    def step_choices(self) -> torch.Tensor:
        """The keep counts of the last step, flattened."""
        return torch.tensor(
            [float(c) for counts in self._configs for c in counts.values()], dtype=torch.float64
        )

    def non_finite(
        self, *, step: int, epoch: int, value: float, x: torch.Tensor | None, y: torch.Tensor | None
    ) -> NonFiniteLossError:
        where = None
        if x is not None and self.watchdog is not None:  # the bad configuration is still set
            module = self.module
            where = self.watchdog.locate(inputs=x, forward=lambda: module(x))
        self.optimizer.zero_grad(set_to_none=True)
        counts = self._bad_counts if x is not None else {}
        return NonFiniteLossError(step, epoch, value, counts, "", where)

    def _clip(self) -> None:
        nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)

    def update(self) -> None:
        self.precision.step(self.optimizer, None if self.grad_clip is None else self._clip)
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    # ------------------------------------------------------------------ epochs

    def end_epoch(
        self, *, epoch: int, loss: float, accuracy: float, seconds: float, val: Any
    ) -> dict[str, Any]:
        """Score the full network on ``val``, step a per-epoch scheduler, return the row."""
        self.sampler.clear()
        scores = evaluate(self.module, val, {}) if val is not None else None
        self.module.train()
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(scores["nll"] if scores else loss)
            else:
                self.scheduler.step()
        return {
            "epoch": epoch,
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": scores["nll"] if scores else math.nan,
            "val_accuracy": scores["accuracy"] if scores else math.nan,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": seconds,
        }

    def check_state(self, *, step: int, epoch: int) -> None:
        if self.watchdog is not None:  # never replace a good file by a bad state
            self.watchdog.check_state(step=step, epoch=epoch, optimizer=self.optimizer)

    def finish(self) -> None:
        self.sampler.clear()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("checkpoint and trainer disagree on whether a scheduler is used")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
