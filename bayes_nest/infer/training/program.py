"""What the training loop trains: the :class:`TrainingProgram` protocol and a step's result.

A program owns the model, its loss and its optimizer (FN3:
:class:`~bayes_nest.infer.fn3_objective.FN3Program`; BNNN: :class:`~bayes_nest.infer.bnnn_svi.BNNNProgram`);
:class:`~bayes_nest.infer.training.TrainingLoop` owns everything around the steps (epochs, data
order, the progress bar, validation scheduling, the history, checkpoints and exact resume, the
non-finite checks, mixed precision and data parallelism). The same program runs in one process
and in every process of a data-parallel job: its loss code does not know the world size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from ..watchdog import NonFiniteError, Watchdog
    from .loop import TrainingLoop

__all__ = ["StepResult", "TrainingProgram"]


class StepResult(NamedTuple):
    """What one step's gradients came with.

    Attributes
    ----------
    loss : float
        The step's loss on this process's examples (the value the history averages).
    correct : float
        Correct predictions among them (0 where the program does not count them).
    finite : bool
        False when the loss was NaN or infinite; the gradients are then not to be used.
    """

    loss: float
    correct: float = 0.0
    finite: bool = True


@runtime_checkable
class TrainingProgram(Protocol):
    """The interface :class:`~bayes_nest.infer.training.TrainingLoop` trains through.

    Attributes
    ----------
    kind : str
        Checkpoint kind (``"fn3"``, ``"bnnn"``): a checkpoint of another kind is refused.
    name : str
        Label of the progress bar.
    module : nn.Module
        Holds every trained parameter and buffer (buffers are synchronised across processes).
    watchdog : Watchdog or None
        Non-finite gradient and state checks (None: off).
    history_columns : tuple of str
        The columns of the program's :class:`~bayes_nest.infer.training.History`.
    supports_amp : bool
        Whether the loss may run under mixed precision.
    """

    kind: str
    name: str
    module: nn.Module
    watchdog: Watchdog | None
    history_columns: tuple[str, ...]
    supports_amp: bool

    def bind(self, loop: TrainingLoop, dataset_size: int | None) -> None:
        """Called when a fit starts: the loop (its precision and context) and the number of
        training examples (None when unknown)."""

    def begin_epoch(self, epoch: int) -> None:
        """Before the steps of epoch ``epoch`` (0-based)."""

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Compute the loss on a batch and accumulate its gradients (none on a non-finite loss,
        which is returned at once with ``finite=False``)."""

    def step_choices(self) -> torch.Tensor | None:
        """The random choices of the last step that every process must share (e.g. keep
        counts), as a 1-D tensor, or None."""

    def non_finite(
        self, *, step: int, epoch: int, value: float, x: torch.Tensor | None, y: torch.Tensor | None
    ) -> NonFiniteError:
        """The error for a non-finite loss; with ``x`` and ``y`` (the process that saw it) it
        names where the value first appears; the gradients are discarded."""

    def update(self) -> None:
        """Apply the accumulated gradients (optimizer step, per-step schedules)."""

    def end_epoch(
        self, *, epoch: int, loss: float, accuracy: float, seconds: float, val: Any
    ) -> Mapping[str, Any]:
        """After epoch ``epoch`` (now complete, 1-based): validate on ``val`` (may be None),
        step per-epoch schedules and return the history row."""

    def check_state(self, *, step: int, epoch: int) -> None:
        """Raise a non-finite error rather than let a checkpoint hold a bad state."""

    def finish(self) -> None:
        """When a fit ends, normally or not."""

    def state_dict(self) -> dict[str, Any]:
        """The program's part of a checkpoint."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (raise ``ValueError`` naming what does not fit)."""
