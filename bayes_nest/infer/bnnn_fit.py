r"""Training a :class:`~bayes_nest.infer.bnnn.BNNN` by stochastic variational inference.

Every step draws one mask per axis from the guide, replays it into the model and takes an
optimizer step on the ELBO's differentiable loss: ``TraceMeanField_ELBO`` with the registered
closed-form keep-count KL (``loss="mean_field"``, the default), or ``Trace_ELBO``
(``loss="trace"``). The mean-field loss is evaluated by
:func:`~bayes_nest.infer.bnnn_loss.mean_field_loss`, which computes exactly
``TraceMeanField_ELBO``'s terms from the same random draws (value and gradients, tested) without
tracing the two programs at every step; ``Trace_ELBO`` runs through Pyro with argument
validation switched off (``pyro.validation_enabled(False)``). The optimizer is built from a Pyro
optimizer's constructor and arguments (default ``pyro.optim.Adam({"lr": 1e-3})``) as one torch
optimizer over all of the BNNN's parameters: the same update as ``pyro.infer.SVI`` with that
optimizer, with state that checkpoints cleanly and without the global parameter store (so
``module_local_params=True`` works too).
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
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import metrics
from ..data import as_loader
from .bnnn_loss import mean_field_loss
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
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
        optimizer = pyro.optim.Adam({"lr": 1e-3})
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
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
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
    probs, labels = [], []
    for batch in as_loader(val, 1024):
        probs.append(bnnn.predict(batch[0], num_samples=num_samples).mean(0))  # on the CPU
        labels.append(batch[1])
    p, y = torch.cat(probs), torch.cat(labels)
    return metrics.nll(p, y), metrics.accuracy(p, y)


def fit(
    bnnn,
    train: Any,
    *,
    epochs: int,
    optimizer: Any = None,
    loss: str = "mean_field",
    num_particles: int = 1,
    batch_size: int = 128,
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
        Training data; the ELBO's likelihood is scaled to its size (``len(loader.dataset)``).
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    optimizer : pyro.optim.PyroOptim or callable, optional
        Default ``pyro.optim.Adam({"lr": 1e-3})``; or a factory ``params -> torch optimizer``.
        Kept on the BNNN, so a second ``fit`` call continues with the same optimizer state.
    loss : {"mean_field", "trace"}
        ``TraceMeanField_ELBO`` (closed-form keep-count KL, default; computed directly by
        :func:`~bayes_nest.infer.bnnn_loss.mean_field_loss`) or ``Trace_ELBO`` (through Pyro).
    num_particles : int
        Samples per ELBO estimate.
    batch_size : int
        Batch size when ``train`` is a pair.
    val : DataLoader or (x, y) pair, optional
        Scored after every epoch (posterior predictive over sub-networks, ``val_samples`` draws).
    progress : bool
        tqdm progress bar showing the running ELBO per example.
    seed : int, optional
        Seeds torch (hence Pyro) and the shuffling of pair data.
    checkpoint_path : path, optional
        Written after every epoch (weights, VOUs, optimizer, random and data-order state).
    resume : bool
        Continue from ``checkpoint_path`` when it exists; the continued run is identical to an
        uninterrupted one.

    Returns
    -------
    BNNNHistory
        Also stored as ``bnnn.history``.
    """
    _check_args(epochs, loss, num_particles, resume, checkpoint_path, seed=seed)
    if seed is not None:
        pyro.set_rng_seed(seed)
    loader_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()))
    loader = as_loader(train, batch_size, shuffle=True, seed=loader_seed)
    bnnn.model.dataset_size = _dataset_size(loader)
    if loss == "mean_field":

        def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return mean_field_loss(bnnn, x, y, num_particles=num_particles)

    else:
        elbo = Trace_ELBO(num_particles=num_particles)

        def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return elbo.differentiable_loss(bnnn.model, bnnn.guide, x, y)

    if getattr(bnnn, "_optimizer", None) is None or optimizer is not None:
        bnnn._optimizer = _make_optimizer(optimizer, bnnn.parameters())
    opt = bnnn._optimizer
    history = bnnn.history if isinstance(bnnn.history, BNNNHistory) else BNNNHistory()

    if resume and Path(checkpoint_path).exists():
        state = load_checkpoint(checkpoint_path, kind=CHECKPOINT_KIND)
        if state["settings"] != _settings_payload(bnnn):
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} was written by a BNNN with settings "
                f"{state['settings']}, not {_settings_payload(bnnn)}"
            )
        try:
            bnnn.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} does not fit this BNNN (a different "
                f"network or optimizer): {error}"
            ) from error
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
    try:
        while bnnn.epoch < epochs:
            temperature = next(iter(bnnn.set_epoch(bnnn.epoch).values()))
            net.train()
            loss_sum, steps = 0.0, 0
            start = time.perf_counter()
            with pyro.validation_enabled(False):
                for batch in loader:
                    x, y = batch[0].to(device), batch[1].to(device)
                    opt.zero_grad(set_to_none=True)
                    draws = snapshot_rng(device)
                    value = step_loss(x, y)
                    if not torch.isfinite(value):
                        restore_rng(draws)  # the site search replays this step's draws
                        where = watchdog.locate(
                            inputs=x, pyro_program=(bnnn.model, bnnn.guide, (x, y), {})
                        )
                        raise NonFiniteError(
                            "ELBO loss",
                            step=step,
                            epoch=bnnn.epoch,
                            where=where,
                            value=float(value.detach()),
                        )
                    value.backward()
                    watchdog.check_gradients(step=step, epoch=bnnn.epoch)
                    opt.step()
                    step += 1
                    loss_sum += float(value.detach())
                    steps += 1
                    if progress:
                        bar.update(1)
                        bar.set_postfix(
                            elbo=f"{-loss_sum / steps / bnnn.model.dataset_size:.4f}",
                            refresh=False,
                        )
            seconds = time.perf_counter() - start
            bnnn.epoch += 1
            val_nll, val_acc = (math.nan, math.nan)
            if val is not None:
                val_nll, val_acc = _validate(bnnn, val, val_samples)
            history.epoch.append(bnnn.epoch)
            history.loss.append(loss_sum / max(steps, 1) / bnnn.model.dataset_size)
            with torch.no_grad():
                history.weight_kl.append(float(bnnn.weight_kl()))
            history.temperature.append(float(temperature))
            history.val_nll.append(val_nll)
            history.val_accuracy.append(val_acc)
            history.seconds.append(seconds)
            if checkpoint_path is not None:
                payload = {
                    "state_dict": bnnn.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": rng_state(),
                    "loader_generators": [g.get_state() for g in _generators(loader)],
                    "epoch": bnnn.epoch,
                    "history": history.as_dict(),
                    "settings": _settings_payload(bnnn),
                }
                watchdog.check_state(step=step, epoch=bnnn.epoch, optimizer=opt)
                save_checkpoint(checkpoint_path, payload, kind=CHECKPOINT_KIND)
    except NonFiniteError as e:
        kept = checkpoint_path is not None and Path(checkpoint_path).exists()
        note = f"Last good checkpoint: {str(checkpoint_path)!r}." if kept else ""
        raise e.with_note(note or "No checkpoint was written.") from None
    finally:
        bar.close()
        net.train(was_training)
    return history
