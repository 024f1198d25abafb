r"""Training a :class:`~bayes_nest.infer.bnnn.BNNN` by stochastic variational inference.

:func:`fit` is a thin wrapper over Pyro's SVI: every step is the update of
``pyro.infer.SVI(bnnn.model, bnnn.guide, optimizer, loss).step(x, y)`` (the ELBO's
``loss_and_grads`` under a parameter trace, then the Pyro optimizer on the parameters found),
with a non-finite check of the loss and the gradients before the update. ``loss`` is any ELBO
instance (default :class:`~bayes_nest.infer.bnnn_elbo.NestedMeanFieldELBO`, the trace-free
``TraceMeanField_ELBO``; ``Trace_ELBO()``, ``TraceGraph_ELBO()``, ... work too) and
``optimizer`` any ``pyro.optim`` optimizer, including the learning-rate schedulers
(``pyro.optim.ExponentialLR``, ...), stepped once per epoch. The likelihood's ``dataset_size`` is
set to the training set's size, so a mini-batch's log-likelihood is scaled to the full data.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO
from pyro.infer.util import zero_grads
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import metrics
from ..data import as_loader
from . import likelihoods
from .bnnn_elbo import NestedMeanFieldELBO
from .bnnn_optim import ParameterUpdate, make_pyro_optim, step_scheduler
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .defaults import BNNN_DEFAULTS
from .fn3_setup import _generators
from .watchdog import NonFiniteError, Watchdog, restore_rng, snapshot_rng

__all__ = ["BNNNHistory", "fit", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "bnnn"
LOSSES = ("mean_field", "trace")


@dataclass
class BNNNHistory:
    """Per-epoch record of BNNN training.

    Attributes
    ----------
    epoch : list[int]
        Completed epochs after each entry.
    loss : list[float]
        Mean negative ELBO per training example over the epoch's steps.
    weight_kl : list[float]
        Keep-weighted weight KL at the end of the epoch (nats, without ``kl_scale``).
    temperature : list[float]
        Downhill temperature used during the epoch.
    val_nll, val_accuracy : list[float]
        Posterior-predictive NLL and accuracy on the validation data (NaN without ``val``).
    seconds : list[float]
        Wall time of the epoch's training steps.
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    weight_kl: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """Plain dict of lists (checkpoint- and JSON-friendly)."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> BNNNHistory:
        return cls(**{f.name: list(data.get(f.name, [])) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.epoch)


def _make_optimizer(optimizer: Any, params) -> torch.optim.Optimizer:
    if optimizer is None:
        optimizer = pyro.optim.Adam({"lr": BNNN_DEFAULTS["lr"]})
    if isinstance(optimizer, pyro.optim.PyroOptim):
        args = optimizer.pt_optim_args
        if callable(args):
            raise ValueError(
                "per-parameter optimizer arguments (a callable) are not supported by fit; "
                "pass a dict of arguments"
            )
        return optimizer.pt_optim_constructor(params, **args)
    if callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        made = optimizer(params)
        if isinstance(made, torch.optim.Optimizer):
            return made
    raise TypeError(
        "optimizer must be a pyro.optim optimizer (e.g. pyro.optim.Adam({'lr': 1e-3})) or a "
        f"callable params -> torch.optim.Optimizer, got {type(optimizer).__name__}"
    )


def make_elbo(loss: Any, num_particles: int) -> ELBO:
    """The ELBO of ``loss``: an instance as is; None or ``"mean_field"`` the trace-free
    mean-field ELBO, ``"trace"`` ``Trace_ELBO``, each with ``num_particles``."""
    if isinstance(loss, ELBO):
        return loss
    if loss in (None, "mean_field"):
        return NestedMeanFieldELBO(num_particles=num_particles)
    return Trace_ELBO(num_particles=num_particles)


def _check_args(
    epochs: Any,
    loss: Any,
    num_particles: Any,
    resume: bool,
    checkpoint_path: Any,
    *,
    seed: Any = None,
) -> None:
    """Validate the training arguments shared by :func:`fit` and the distributed trainer."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if not (loss is None or isinstance(loss, ELBO) or loss in LOSSES):
        raise ValueError(
            f"loss must be a pyro.infer ELBO instance or one of {LOSSES}, got {loss!r}"
        )
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")


def _dataset_size(loader: DataLoader) -> int:
    try:
        return len(loader.dataset)
    except TypeError:
        return sum(len(batch[1]) for batch in loader)


def _settings_payload(bnnn) -> dict:
    s = dict(bnnn.settings)
    s["prior_keep_prob"] = dict(s["prior_keep_prob"])
    return s


@torch.no_grad()
def _validate(bnnn, val: Any, num_samples: int) -> tuple[float, float]:
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


def fit(
    bnnn,
    train: Any,
    *,
    epochs: int,
    optimizer: Any = None,
    loss: Any = None,
    num_particles: int = 1,
    batch_size: int = BNNN_DEFAULTS["batch_size"],
    val: Any = None,
    val_samples: int = 4,
    progress: bool = True,
    seed: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
) -> BNNNHistory:
    """Fit a BNNN's posterior by SVI until ``epochs`` epochs are complete.

    Parameters
    ----------
    bnnn : BNNN
    train : DataLoader or (x, y) pair
        Training data; the likelihood's ``dataset_size`` is set to its size.
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    optimizer : pyro.optim.PyroOptim or callable, optional
        Default ``pyro.optim.Adam({"lr": BNNN_DEFAULTS["lr"]})`` (3e-3); LR schedulers
        (``pyro.optim.ExponentialLR``, ...) are stepped once per epoch; a factory ``params -> torch optimizer`` is wrapped in a
        ``PyroOptim``. Kept on the BNNN, so a second ``fit`` call continues with its state.
    loss : pyro.infer.ELBO or {"mean_field", "trace"}, optional
        Any ELBO instance. Default (and ``"mean_field"``):
        :class:`~bayes_nest.infer.bnnn_elbo.NestedMeanFieldELBO`; ``"trace"``: ``Trace_ELBO``.
    num_particles : int
        Samples per ELBO estimate when ``loss`` is None or a name.
    batch_size : int
        Batch size when ``train`` is a pair.
    val : DataLoader or (x, y) pair, optional
        Scored after every epoch (posterior predictive over sub-networks, ``val_samples`` draws;
        Categorical likelihood only, NaN otherwise).
    progress : bool
        tqdm progress bar showing the running ELBO per example.
    seed : int, optional
        Seeds torch (hence Pyro) and the shuffling of pair data.
    checkpoint_path : path, optional
        Written after every epoch (parameters, optimizer, random and data-order state).
    resume : bool
        Continue from ``checkpoint_path`` when it exists; the continued run is identical to an
        uninterrupted one.

    Returns
    -------
    BNNNHistory
        Also stored as ``bnnn.history``.
    """
    _check_args(epochs, loss, num_particles, resume, checkpoint_path, seed=seed)
    elbo = make_elbo(loss, num_particles)
    if seed is not None:
        pyro.set_rng_seed(seed)
    loader_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()))
    loader = as_loader(train, batch_size, shuffle=True, seed=loader_seed)
    size = _dataset_size(loader)
    if hasattr(bnnn.likelihood, "dataset_size"):
        bnnn.likelihood.dataset_size = size
    if getattr(bnnn, "_optim", None) is None or optimizer is not None:
        bnnn._optim = ParameterUpdate(make_pyro_optim(optimizer), list(bnnn.parameters()))
    optim = bnnn._optim
    history = bnnn.history if isinstance(bnnn.history, BNNNHistory) else BNNNHistory()
    bnnn.clear_param_store()  # no stale tensor of another model under this name

    if resume and Path(checkpoint_path).exists():
        state = load_checkpoint(checkpoint_path, kind=CHECKPOINT_KIND)
        if state["settings"] != _settings_payload(bnnn):
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} was written by a BNNN with settings "
                f"{state['settings']}, not {_settings_payload(bnnn)}"
            )
        try:
            bnnn.load_state_dict(state["state_dict"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} does not fit this BNNN (a different "
                f"network): {error}"
            ) from error
        try:
            optim.set_state(state["optimizer"])
        except ValueError as error:
            raise ValueError(f"checkpoint {str(checkpoint_path)!r}: {error}") from error
        set_rng_state(state["rng"])
        for g, s in zip(_generators(loader), state["loader_generators"], strict=False):
            g.set_state(torch.as_tensor(s, dtype=torch.uint8))
        bnnn.epoch = int(state["epoch"])
        history = BNNNHistory.from_dict(state["history"])
    elif resume:
        warnings.warn(
            f"no checkpoint at {str(checkpoint_path)!r}; training from the start", stacklevel=3
        )
    bnnn.history = history

    total = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(
        total=None if total is None else epochs * total,
        initial=0 if total is None else min(bnnn.epoch, epochs) * total,
        disable=not progress,
        desc="BNNN",
        unit="step",
    )
    net = bnnn.net
    device = next(bnnn.parameters()).device
    was_training = net.training
    watchdog = Watchdog(bnnn)  # non-finite loss, gradient or state: stop, name the site
    step = bnnn.epoch * total if total else 0
    model, guide = bnnn.model, bnnn.guide
    fast = isinstance(elbo, NestedMeanFieldELBO) and elbo.takes_fast_path(model, guide)
    fixed_params: set[torch.Tensor] | None = None  # the fast path's, found at its first step
    released: set[torch.Tensor] = set()  # parameters whose gradients were dropped
    try:
        while bnnn.epoch < epochs:
            temperature = next(iter(bnnn.set_epoch(bnnn.epoch).values()))
            net.train()
            loss_sum, steps = 0.0, 0
            start = time.perf_counter()
            with pyro.validation_enabled(False):
                for batch in loader:
                    x, y = batch[0].to(device), batch[1].to(device)
                    draws = snapshot_rng(device)
                    # pyro.infer.SVI.step, with the checks between the gradients and the update
                    if fixed_params is None:
                        with poutine.trace(param_only=True) as capture:
                            value = elbo.loss_and_grads(model, guide, x, y)
                        params = {s["value"].unconstrained() for s in capture.trace.nodes.values()}
                        if fast:  # it registers the same parameters at every step
                            fixed_params = params
                    else:
                        value = elbo.loss_and_grads(model, guide, x, y)
                        params = fixed_params
                    _fill_missing_grads(released)
                    if not math.isfinite(value):
                        zero_grads(params)
                        restore_rng(draws)  # the site search replays this step's draws
                        where = watchdog.locate(inputs=x, pyro_program=(model, guide, (x, y), {}))
                        raise NonFiniteError(
                            "ELBO loss", step=step, epoch=bnnn.epoch, where=where, value=value
                        )
                    watchdog.check_gradients(step=step, epoch=bnnn.epoch)
                    optim(params)
                    released = _release_grads(params)
                    step += 1
                    loss_sum += value
                    steps += 1
                    if progress:
                        bar.update(1)
                        bar.set_postfix(elbo=f"{-loss_sum / steps / size:.4f}", refresh=False)
            seconds = time.perf_counter() - start
            bnnn.epoch += 1
            epoch_loss = loss_sum / max(steps, 1) / size
            step_scheduler(optim.optim, epoch_loss)
            val_nll, val_acc = (math.nan, math.nan)
            if val is not None:
                val_nll, val_acc = _validate(bnnn, val, val_samples)
            history.epoch.append(bnnn.epoch)
            history.loss.append(epoch_loss)
            with torch.no_grad():
                normal = bnnn.model.weight_prior is None
                history.weight_kl.append(float(bnnn.weight_kl()) if normal else math.nan)
            history.temperature.append(float(temperature))
            history.val_nll.append(val_nll)
            history.val_accuracy.append(val_acc)
            history.seconds.append(seconds)
            if checkpoint_path is not None:
                payload = {
                    "state_dict": bnnn.state_dict(),
                    "optimizer": optim.get_state(),
                    "rng": rng_state(),
                    "loader_generators": [g.get_state() for g in _generators(loader)],
                    "epoch": bnnn.epoch,
                    "history": history.as_dict(),
                    "settings": _settings_payload(bnnn),
                }
                watchdog.check_state(step=step, epoch=bnnn.epoch)
                save_checkpoint(checkpoint_path, payload, kind=CHECKPOINT_KIND)
    except NonFiniteError as e:
        kept = checkpoint_path is not None and Path(checkpoint_path).exists()
        note = f"Last good checkpoint: {str(checkpoint_path)!r}." if kept else ""
        raise e.with_note(note or "No checkpoint was written.") from None
    finally:
        _fill_missing_grads(released)  # zeros, as SVI leaves them
        bar.close()
        net.train(was_training)
    return history
