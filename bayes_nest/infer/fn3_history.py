"""The error of an FN3 run's non-finite loss, :class:`NonFiniteLossError`, and (re-exported)
the :class:`~bayes_nest.infer.training.History` every training run records.

Both are importable from :mod:`bayes_nest.infer.fn3` (and :mod:`bayes_nest.infer`) too.
"""

from __future__ import annotations

from collections.abc import Mapping

from .training.history import History
from .watchdog import NonFiniteError

__all__ = ["History", "NonFiniteLossError"]


class NonFiniteLossError(NonFiniteError):
    """The training loss became NaN or infinite; training stopped before that step's update.

    Attributes
    ----------
    step : int
        Global optimizer step (0-based) at which the loss was non-finite.
    epoch : int
        Epoch (0-based) of that step.
    loss : float
    config : dict[str, int]
        Keep counts of the sub-network that produced it.
    where : str or None
        Where the non-finite value first appears (input batch, parameter or layer), see
        :class:`~bayes_nest.infer.watchdog.Watchdog`.
    """

    def __init__(
        self,
        step: int,
        epoch: int,
        loss: float,
        config: Mapping[str, int],
        note: str,
        where: str | None = None,
    ):
        self.step, self.epoch, self.loss, self.config = step, epoch, loss, dict(config)
        self.quantity, self.value, self.where, self.note = "loss", loss, where, note
        FloatingPointError.__init__(self, self._message())

    def _message(self) -> str:
        at = f"; first non-finite at {self.where}" if self.where else ""
        sub = f" for sub-network {self.config}" if self.config else ""
        return (
            f"non-finite training loss {self.loss} at step {self.step} (epoch {self.epoch})"
            f"{sub}{at}; the weights are those before this step. {self.note}"
        ).rstrip()
