r"""Training a :class:`~bayes_nest.infer.bnnn.BNNN` by stochastic variational inference.

:func:`fit` is a thin wrapper over Pyro's SVI: every step is the update of
``pyro.infer.SVI(bnnn.model, bnnn.guide, optimizer, loss).step(x, y)`` (the ELBO's
``loss_and_grads`` under a parameter trace, then the Pyro optimizer on the parameters found),
with a non-finite check of the loss and the gradients before the update
(:class:`~bayes_nest.infer.bnnn_svi.BNNNProgram`, run by
:class:`~bayes_nest.infer.training.TrainingLoop`). ``loss`` is any ELBO
instance (default :class:`~bayes_nest.infer.bnnn_elbo.NestedMeanFieldELBO`, the trace-free
``TraceMeanField_ELBO``; ``Trace_ELBO()``, ``TraceGraph_ELBO()``, ... work too) and
``optimizer`` any ``pyro.optim`` optimizer, including the learning-rate schedulers
(``pyro.optim.ExponentialLR``, ...), stepped once per epoch. The likelihood's ``dataset_size`` is
set to the training set's size, so a mini-batch's log-likelihood is scaled to the full data.
"""

from __future__ import annotations

import os
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.infer import ELBO, Trace_ELBO

from .bnnn_elbo import NestedMeanFieldELBO
from .bnnn_optim import ParameterUpdate, make_pyro_optim
from .bnnn_svi import BNNNProgram, _fill_missing_grads, _release_grads
from .defaults import BNNN_DEFAULTS
from .distributed import DistContext, agreed_seed
from .training.history import History
from .training.loop import TrainingLoop

__all__ = ["BNNNHistory", "CHECKPOINT_KIND", "_fill_missing_grads", "_release_grads", "fit"]

CHECKPOINT_KIND = BNNNProgram.kind
BNNNHistory = History  # the record of a BNNN run (columns: see fit)
LOSSES = ("mean_field", "trace")


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
    """Validate the training arguments of :func:`fit`."""
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
    ctx: DistContext | None = None,
    check_masks: bool = False,
) -> History:
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
        uninterrupted one (with any number of processes in either).
    ctx : DistContext, optional
        The data-parallel job (:func:`~bayes_nest.infer.distributed.setup`, e.g. under
        ``torchrun``): every process trains on its rows of every global batch of ``batch_size``
        and the result is the one-process result (to floating-point summation order); see
        :class:`~bayes_nest.infer.training.TrainingLoop`. Default: this process alone.
    check_masks : bool
        In a data-parallel job, verify at every step that all processes hold the same random
        state (a debugging aid).

    Returns
    -------
    History
        Columns ``epoch``, ``loss`` (negative ELBO per training example), ``weight_kl``
        (keep-weighted weight KL at the end of the epoch, nats, without ``kl_scale``),
        ``temperature`` (the Downhill temperature of the epoch), ``val_loss`` (also read as
        ``val_nll``: posterior-predictive NLL) and ``val_accuracy`` (NaN without ``val``) and
        ``seconds``; also stored as ``bnnn.history``.
    """
    _check_args(epochs, loss, num_particles, resume, checkpoint_path, seed=seed)
    if ctx is not None and not isinstance(ctx, DistContext):
        raise TypeError(f"ctx must be a DistContext (from setup()), got {type(ctx).__name__}")
    elbo = make_elbo(loss, num_particles)
    if ctx is not None and ctx.distributed:
        seed = agreed_seed(seed, ctx)
    if seed is not None:
        pyro.set_rng_seed(seed)
    loader_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()))
    if ctx is not None:
        bnnn.to(ctx.device)
    if getattr(bnnn, "_optim", None) is None or optimizer is not None:
        bnnn._optim = ParameterUpdate(make_pyro_optim(optimizer), list(bnnn.parameters()))
    bnnn.clear_param_store()  # no stale tensor of another model under this name
    program = BNNNProgram(bnnn, elbo, bnnn._optim, val_samples=val_samples)
    device = next(bnnn.parameters()).device
    loop = TrainingLoop(
        program,
        batch_size=batch_size,
        loader_seed=loader_seed,
        ctx=ctx if ctx is not None else DistContext(device=device),
        progress=progress,
        check_masks=check_masks,
        epoch=bnnn.epoch,
        step=None,
        history=bnnn.history if isinstance(bnnn.history, History) else None,
    )
    try:
        return loop.fit(
            train, epochs=epochs, val=val, checkpoint_path=checkpoint_path, resume=resume
        )
    finally:
        bnnn.history, bnnn.epoch = loop.history, loop.epoch
