"""Records of an FN3 run: the per-epoch :class:`History` and :class:`NonFiniteLossError`.

Both are importable from :mod:`bayes_nest.infer.fn3` (and :mod:`bayes_nest.infer`) too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

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
        at = f"; first non-finite at {where}" if where else ""
        FloatingPointError.__init__(
            self,
            f"non-finite training loss {loss} at step {step} (epoch {epoch}) for sub-network "
            f"{self.config}{at}; the weights are those before this step. {note}",
        )

    def with_note(self, note: str) -> NonFiniteLossError:
        return NonFiniteLossError(self.step, self.epoch, self.loss, self.config, note, self.where)


@dataclass
class History:
    """Per-epoch training record.

    Attributes
    ----------
    epoch : list[int]
        Number of completed epochs after each entry (1, 2, ...).
    loss, accuracy : list[float]
        Mean training loss and accuracy of the sampled sub-networks over the epoch.
    val_loss, val_accuracy : list[float]
        NLL and accuracy of the full network on the validation data (NaN without ``val``).
    lr : list[float]
        Learning rate of the first parameter group at the end of the epoch.
    seconds : list[float]
        Wall time of the epoch's training steps (validation excluded).
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """Plain ``dict`` of lists (checkpoint- and JSON-friendly)."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable]) -> History:
        return cls(**{f.name: list(data.get(f.name, [])) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.epoch)
