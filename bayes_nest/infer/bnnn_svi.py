r"""A :class:`~bayes_nest.infer.bnnn.BNNN` as a training program: one step of Pyro's SVI.

Every step is the update of ``pyro.infer.SVI(bnnn.model, bnnn.guide, optimizer, loss).step(x,
y)``: the ELBO's ``loss_and_grads`` under a parameter trace, then the Pyro optimizer on the
parameters found, with the training loop's non-finite checks between the gradients and the
update. :func:`~bayes_nest.infer.bnnn_fit.fit` runs it in
:class:`~bayes_nest.infer.training.TrainingLoop`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.util import zero_grads

from .. import metrics
from ..data import as_loader
from . import likelihoods
from .bnnn_elbo import NestedMeanFieldELBO
from .bnnn_optim import ParameterUpdate, step_scheduler
from .training.program import StepResult
from .watchdog import NonFiniteError, Watchdog, restore_rng, snapshot_rng

if TYPE_CHECKING:
    from .bnnn import BNNN
    from .training.loop import TrainingLoop

__all__ = ["BNNNProgram"]


def settings_payload(bnnn: BNNN) -> dict:
    """The BNNN's settings as a checkpoint stores them."""
    settings = dict(bnnn.settings)
    settings["prior_keep_prob"] = dict(settings["prior_keep_prob"])
    return settings


@torch.no_grad()
def _validate(bnnn: BNNN, val: Any, num_samples: int) -> tuple[float, float]:
    if not isinstance(bnnn.likelihood, likelihoods.Categorical):
        return math.nan, math.nan
    probs, labels = [], []
    for batch in as_loader(val, 1024):
        probs.append(bnnn.predict(batch[0], num_samples=num_samples).mean(0))  # on the CPU
        labels.append(batch[1])
    p, y = torch.cat(probs), torch.cat(labels)
    return metrics.nll(p, y), metrics.accuracy(p, y)


def _release_grads(params: set[torch.Tensor]) -> set[torch.Tensor]:
    """Drop the gradients after an update and return the parameters that had one.

    Pyro's ``zero_grads`` replaces every existing gradient by zeros, into which the next
    backward pass accumulates; dropping them instead lets that pass write its gradients
    directly (the same values, without the zero fill and the addition), and
    :func:`_fill_missing_grads` puts back the zeros a parameter the next step does not reach
    would have had.
    """
    released = {p for p in params if p.grad is not None}
    for p in released:
        p.grad = None
    return released


def _fill_missing_grads(released: set[torch.Tensor]) -> None:
    """Zero gradients for the ``released`` parameters the step did not reach, as Pyro's
    ``zero_grads`` would have left them (so the optimizer's update is unchanged)."""
    for p in released:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


class BNNNProgram:
    """Stochastic variational inference of a BNNN, for the training loop.

    Parameters
    ----------
    bnnn : BNNN
        Model, guide and likelihood (its ``dataset_size`` is set to the training set's size
        when a fit starts, so a mini-batch's log-likelihood is scaled to the full data).
    elbo : pyro.infer.ELBO
        The loss.
    optim : ParameterUpdate
        The Pyro optimizer's update of the BNNN's parameters.
    val_samples : int
        Posterior draws of the validation score.
    """

    kind = "bnnn"
    name = "BNNN"
    history_columns = (
        "epoch",
        "loss",
        "weight_kl",
        "temperature",
        "val_loss",
        "val_accuracy",
        "seconds",
    )
    supports_amp = False

    def __init__(
        self, bnnn: BNNN, elbo: ELBO, optim: ParameterUpdate, *, val_samples: int = 4
    ) -> None:
        self.bnnn = self.module = bnnn
        self.elbo = elbo
        self.optim = optim
        self.val_samples = val_samples
        self.watchdog: Watchdog | None = Watchdog(bnnn)
        self._fast = isinstance(elbo, NestedMeanFieldELBO) and elbo.takes_fast_path(
            bnnn.model, bnnn.guide
        )
        self._fixed_params: set[torch.Tensor] | None = None  # the fast path's, found once
        self._params: set[torch.Tensor] = set()
        self._released: set[torch.Tensor] = set()  # parameters whose gradients were dropped
        self._draws: Any = None
        self._size = 1
        self._temperature = math.nan
        self._was_training = bnnn.net.training

    # ------------------------------------------------------------------ a step

    def bind(self, loop: TrainingLoop, dataset_size: int | None) -> None:
        if dataset_size is None and loop.train_loader is not None:
            dataset_size = sum(len(batch[1]) for batch in loop.train_loader)
        if dataset_size is None:  # a step outside fit: the likelihood keeps its scaling
            return
        self._size = int(dataset_size)
        if hasattr(self.bnnn.likelihood, "dataset_size"):
            self.bnnn.likelihood.dataset_size = self._size

    def begin_epoch(self, epoch: int) -> None:
        self._temperature = float(next(iter(self.bnnn.set_epoch(epoch).values())))
        self.bnnn.net.train()

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """``pyro.infer.SVI.step`` up to the update: the ELBO's loss and gradients."""
        model, guide, elbo = self.bnnn.model, self.bnnn.guide, self.elbo
        self._draws = snapshot_rng(x.device)  # the site search of a bad step replays them
        with pyro.validation_enabled(False):
            if self._fixed_params is None:
                with poutine.trace(param_only=True) as capture:
                    value = elbo.loss_and_grads(model, guide, x, y)
                params = {s["value"].unconstrained() for s in capture.trace.nodes.values()}
                if self._fast:  # it registers the same parameters at every step
                    self._fixed_params = params
            else:
                value = elbo.loss_and_grads(model, guide, x, y)
                params = self._fixed_params
        self._params = params
        _fill_missing_grads(self._released)
        return StepResult(value, finite=math.isfinite(value))

    def step_choices(self) -> None:
        return None  # every choice is drawn from the random state the loop checks

    def non_finite(
        self, *, step: int, epoch: int, value: float, x: torch.Tensor | None, y: torch.Tensor | None
    ) -> NonFiniteError:
        zero_grads(self._params)
        where = None
        if x is not None and self.watchdog is not None:
            restore_rng(self._draws)
            program = (self.bnnn.model, self.bnnn.guide, (x, y), {})
            where = self.watchdog.locate(inputs=x, pyro_program=program)
        return NonFiniteError("ELBO loss", step=step, epoch=epoch, where=where, value=value)

    def update(self) -> None:
        self.optim(self._params)
        self._released = _release_grads(self._params)

    # ------------------------------------------------------------------ epochs

    def end_epoch(
        self, *, epoch: int, loss: float, accuracy: float, seconds: float, val: Any
    ) -> dict[str, Any]:
        """Step the optimizer's scheduler, score ``val`` and return the row; ``loss`` is the
        negative ELBO per training example."""
        bnnn = self.bnnn
        epoch_loss = loss / self._size
        step_scheduler(self.optim.optim, epoch_loss)
        val_nll, val_accuracy = math.nan, math.nan
        if val is not None:
            val_nll, val_accuracy = _validate(bnnn, val, self.val_samples)
        with torch.no_grad():
            normal = bnnn.model.weight_prior is None
            weight_kl = float(bnnn.weight_kl()) if normal else math.nan
        return {
            "epoch": epoch,
            "loss": epoch_loss,
            "weight_kl": weight_kl,
            "temperature": self._temperature,
            "val_loss": val_nll,
            "val_accuracy": val_accuracy,
            "seconds": seconds,
        }

    def check_state(self, *, step: int, epoch: int) -> None:
        if self.watchdog is not None:
            self.watchdog.check_state(step=step, epoch=epoch)

    def finish(self) -> None:
        _fill_missing_grads(self._released)  # zeros, as SVI leaves them
        self._released = set()
        self.bnnn.net.train(self._was_training)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "state_dict": self.bnnn.state_dict(),
            "optimizer": self.optim.get_state(),
            "settings": settings_payload(self.bnnn),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        bnnn = self.bnnn
        if state["settings"] != settings_payload(bnnn):
            raise ValueError(
                f"the checkpoint was written by a BNNN with settings {state['settings']}, "
                f"not {settings_payload(bnnn)}"
            )
        try:
            bnnn.load_state_dict(state["state_dict"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"it does not fit this BNNN (a different network): {error}") from error
        self.optim.set_state(state["optimizer"])
