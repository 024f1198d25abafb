r"""FN3 training: point-estimate weights trained on the ordered-dropout objective.

One step draws a keep count per axis from the fixed prior of :class:`OrderedDropout`, sets it on
the network (which then computes only the kept blocks) and takes an optimizer step on

.. math:: L(W) = \mathbb E_{c \sim q}\big[\ell(f_{W, c}(x), y)\big],

estimated with one draw per mini-batch (plus the full and/or smallest sub-network under the
sandwich rule, averaged). Training is seeded, can write atomic checkpoints holding everything
that determines the rest of the run (weights, optimizer, scheduler, sampler, random and
data-order state) and resume from them exactly, and stops with :class:`NonFiniteLossError` at the
first non-finite loss, before the bad step changes the weights or the last checkpoint.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import as_loader
from ..nn.nest import check_narrowing
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .defaults import FN3_DEFAULTS
from .evaluate import _module_device, evaluate
from .fn3_history import History, NonFiniteLossError
from .fn3_setup import _generators, _make_optimizer, _make_scheduler
from .ordered_dropout import OrderedDropout
from .watchdog import NonFiniteError, Watchdog

__all__ = ["FN3Trainer", "History", "NonFiniteLossError", "fit_fn3"]

CHECKPOINT_KIND = "fn3"


class FN3Trainer:
    """Train a nested network with ordered dropout (FN3).

    Parameters
    ----------
    module : nn.Module
        Nested network returning logits (or whatever ``loss_fn`` takes).
    optimizer : Optimizer or callable, optional
        An optimizer over ``module``'s parameters, or a factory ``params -> Optimizer`` (e.g.
        ``functools.partial(torch.optim.SGD, lr=0.1)``). Default: Adam with learning rate
        ``FN3_DEFAULTS["lr"]`` (3e-3, `bayes_nest.defaults`).
    scheduler : LR scheduler or callable, optional
        A scheduler of that optimizer or a factory ``optimizer -> scheduler``, stepped every
        epoch (``scheduler_interval="epoch"``, ``ReduceLROnPlateau`` gets the validation loss,
        else the training loss) or every optimizer step (``"step"``).
    keep_prob, distribution, sandwich
        Ordered-dropout prior, see :class:`~bayes_nest.infer.OrderedDropout`.
    loss_fn : callable, optional
        ``loss_fn(output, target) -> scalar``; default :func:`torch.nn.functional.cross_entropy`.
    batch_size : int
        Batch size when data come as ``(x, y)`` pairs (loaders are used as they are).
    device : torch.device or str, optional
        Device to train on (the module is moved there); default: where the module is.
    seed : int, optional
        Seeds torch's global generator (when the trainer is created), the sampler and the
        shuffling of ``(x, y)`` training data: the same seed and initial weights give identical
        weights. ``None`` draws the sampler and shuffling seeds from torch's global generator.
    coupling : {None, "kind", "all"}
        Draw the keep counts of axes of one kind (or of all axes) from one shared uniform
        number; see :class:`~bayes_nest.infer.OrderedDropout`.
    distill : bool
        In-place distillation: the sub-networks after the first configuration of a step learn
        from the first one's softmax (detached) instead of the labels; needs
        ``sandwich="full"`` or ``"both"`` (the full network is the teacher).
    progress : bool
        Show a tqdm progress bar with the running loss and accuracy.
    grad_clip : float, optional
        Clip the global gradient norm to this value.

    Notes
    -----
    ``trainer.watchdog`` (a :class:`~bayes_nest.infer.watchdog.Watchdog`) stops training with
    a :class:`~bayes_nest.infer.watchdog.NonFiniteError` at the first non-finite loss or
    gradient (before the optimizer step) and refuses to write a checkpoint of a non-finite
    state, naming the step and the input, parameter or layer where the value first appears.
    Set it to ``None`` to switch the checks off.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        optimizer: Any = None,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        keep_prob: float | Mapping[str, float] = FN3_DEFAULTS["keep_prob"],
        distribution: str | Mapping[str, str] = FN3_DEFAULTS["distribution"],
        sandwich: str | None = FN3_DEFAULTS["sandwich"],
        coupling: str | None = None,
        distill: bool = False,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        batch_size: int = FN3_DEFAULTS["batch_size"],
        device: torch.device | str | None = None,
        seed: int | None = None,
        progress: bool = True,
        grad_clip: float | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        if grad_clip is not None and not (isinstance(grad_clip, int | float) and grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.device = torch.device(device) if device is not None else _module_device(module)
        self.module = module.to(self.device)
        if seed is not None:
            torch.manual_seed(seed)
        self.seed = seed
        self.sampler = OrderedDropout(
            module, keep_prob, distribution, sandwich=sandwich, coupling=coupling, seed=seed
        )
        check_narrowing(module)  # a plain layer after a width layer: a clear error, not a crash
        self.optimizer = _make_optimizer(optimizer, module)
        self.scheduler = _make_scheduler(scheduler, self.optimizer)
        self.scheduler_interval = scheduler_interval
        if distill and sandwich not in ("full", "both"):
            raise ValueError(
                f"distill=True needs the full network in every step (sandwich 'full' or 'both'), "
                f"got sandwich={sandwich!r}"
            )
        self.distill = bool(distill)
        self.loss_fn = F.cross_entropy if loss_fn is None else loss_fn
        self.batch_size = batch_size
        self.progress = progress
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.history = History()
        self.epoch = 0
        self.step = 0
        self.watchdog: Watchdog | None = Watchdog(module)
        self._loader_seed = (
            seed if seed is not None else int(torch.randint(0, 2**62, (), dtype=torch.int64))
        )

    # ------------------------------------------------------------------ one step

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimizer step on a batch; returns (loss, number of correct predictions) of the
        sampled sub-network. Raises :class:`NonFiniteLossError` before updating on a bad loss."""
        configs = self.sampler.step_configs()
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 / len(configs)
        sampled = 0 if self.sampler.sandwich not in ("full", "both") else 1
        loss_value, correct = math.nan, 0
        teacher = None
        for i, counts in enumerate(configs):
            self.sampler.apply(counts)
            out = self.module(x)
            if teacher is None:
                loss = self.loss_fn(out, y)
                if self.distill:
                    teacher = torch.softmax(out.detach(), dim=-1)
            else:
                loss = -(teacher * torch.log_softmax(out, dim=-1)).sum(-1).mean()
            value = float(loss.detach())
            if not math.isfinite(value):
                where = None
                if self.watchdog is not None:
                    where = self.watchdog.locate(inputs=x, forward=lambda: self.module(x))
                raise NonFiniteLossError(self.step, self.epoch, value, counts, "", where)
            (loss * scale if scale != 1.0 else loss).backward()
            if i == sampled:
                loss_value = value
                if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
                    correct = int((out.detach().argmax(-1) == y).sum())
        if self.watchdog is not None:  # before clipping, which would spread a NaN
            self.watchdog.check_gradients(step=self.step, epoch=self.epoch)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.step += 1
        return loss_value, correct

    # ------------------------------------------------------------------ state

    def state_dict(self, loader: DataLoader | None = None) -> dict[str, Any]:
        """Everything that determines the rest of a run, for :func:`save_checkpoint`."""
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "loader_generators": [g.get_state() for g in _generators(loader)] if loader else [],
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history.as_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], loader: DataLoader | None = None) -> None:
        """Restore a state from :meth:`state_dict` (e.g. read by :func:`load_checkpoint`)."""
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("checkpoint and trainer disagree on whether a scheduler is used")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        if loader is not None:
            gens, saved = _generators(loader), state["loader_generators"]
            if len(gens) != len(saved):
                raise ValueError(
                    f"the training loader has {len(gens)} generators but the checkpoint "
                    f"holds {len(saved)}: resume with the same kind of training data"
                )
            for g, s in zip(gens, saved, strict=True):
                g.set_state(torch.as_tensor(s, dtype=torch.uint8))
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.history = History.from_dict(state["history"])

    # ------------------------------------------------------------------ loop

    def _loader(self, train: Any) -> DataLoader:
        return as_loader(train, self.batch_size, shuffle=True, seed=self._loader_seed)

    def fit(
        self,
        train: Any,
        *,
        epochs: int,
        val: Any = None,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
    ) -> History:
        """Train until ``epochs`` epochs are complete and return the :class:`History`.

        Parameters
        ----------
        train : DataLoader or (x, y) pair
            Training data; pairs are shuffled with the trainer's seed every epoch.
        epochs : int
            Total number of epochs (a resumed run continues up to this number).
        val : DataLoader or (x, y) pair, optional
            Validation data; the full network is scored after every epoch.
        checkpoint_path : path, optional
            Where to write a checkpoint every ``checkpoint_every`` epochs and after the last.
        resume : bool
            Continue from ``checkpoint_path`` if it exists (identical weights to an uninterrupted
            run with the same settings); start afresh if it does not.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
            raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
        if resume and checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path")
        loader = self._loader(train)
        if resume and Path(checkpoint_path).exists():
            state = load_checkpoint(checkpoint_path, kind=CHECKPOINT_KIND)
            try:
                self.load_state_dict(state, loader)
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                msg = " ".join(str(e if not isinstance(e, KeyError) else f"no {e}").split())
                raise CheckpointError(
                    f"{checkpoint_path} does not fit this trainer (another network, optimizer "
                    f"or data?): {msg[:300]}"
                ) from e
        elif resume:
            warnings.warn(
                f"no checkpoint at {str(checkpoint_path)!r}; training from the start", stacklevel=2
            )
        try:
            total = len(loader)
        except TypeError:
            total = None
        bar = tqdm(
            total=None if total is None else epochs * total,
            initial=0 if total is None else min(self.epoch, epochs) * total,
            disable=not self.progress,
            desc="FN3",
            unit="step",
        )
        self.module.train()
        try:
            while self.epoch < epochs:
                self._run_epoch(loader, val, bar)
                last = self.epoch == epochs
                if checkpoint_path is not None and (last or self.epoch % checkpoint_every == 0):
                    if self.watchdog is not None:  # never replace a good file by a bad state
                        self.watchdog.check_state(
                            step=self.step, epoch=self.epoch, optimizer=self.optimizer
                        )
                    self._save_checkpoint(checkpoint_path, loader)
        except NonFiniteError as e:
            note = (
                f"Last good checkpoint: {str(checkpoint_path)!r}."
                if checkpoint_path is not None and Path(checkpoint_path).exists()
                else "No checkpoint was written."
            )
            raise e.with_note(note) from None
        finally:
            self.sampler.clear()
            bar.close()
        return self.history

    def _save_checkpoint(self, path: str | os.PathLike, loader: DataLoader) -> None:
        """Write the training state to ``path`` (overridden by distributed training, where only
        one process writes)."""
        save_checkpoint(path, self.state_dict(loader), kind=CHECKPOINT_KIND)

    def _run_epoch(self, loader: DataLoader, val: Any, bar: tqdm) -> None:
        loss_sum, correct, seen, batches = 0.0, 0, 0, 0
        start = time.perf_counter()
        for batch in loader:
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            loss, n_correct = self.train_step(x, y)
            loss_sum += loss
            correct += n_correct
            seen += len(y)
            batches += 1
            bar.update(1)
        seconds = time.perf_counter() - start
        self.sampler.clear()
        self.epoch += 1
        train_loss = loss_sum / max(batches, 1)
        scores = evaluate(self.module, val, {}) if val is not None else None
        self.module.train()
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(scores["nll"] if scores else train_loss)
            else:
                self.scheduler.step()
        h = self.history
        h.epoch.append(self.epoch)
        h.loss.append(train_loss)
        h.accuracy.append(correct / max(seen, 1))
        h.val_loss.append(scores["nll"] if scores else math.nan)
        h.val_accuracy.append(scores["accuracy"] if scores else math.nan)
        h.lr.append(float(self.optimizer.param_groups[0]["lr"]))
        h.seconds.append(seconds)
        postfix = {"loss": f"{train_loss:.3f}", "acc": f"{h.accuracy[-1]:.3f}"}
        if scores:
            postfix["val_acc"] = f"{scores['accuracy']:.3f}"
        bar.set_postfix(postfix, refresh=False)


def fit_fn3(
    module: nn.Module,
    train: Any,
    *,
    epochs: int,
    optimizer: Any = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    keep_prob: float | Mapping[str, float] = FN3_DEFAULTS["keep_prob"],
    distribution: str | Mapping[str, str] = FN3_DEFAULTS["distribution"],
    sandwich: str | None = FN3_DEFAULTS["sandwich"],
    coupling: str | None = None,
    distill: bool = False,
    val: Any = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = FN3_DEFAULTS["batch_size"],
    device: torch.device | str | None = None,
    seed: int | None = None,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    grad_clip: float | None = None,
) -> History:
    """Train ``module`` with ordered dropout for ``epochs`` epochs; see :class:`FN3Trainer`
    (constructor arguments) and :meth:`FN3Trainer.fit` (``train``, ``epochs``, ``val`` and the
    checkpoint arguments).

    Examples
    --------
    >>> from bayes_nest.data import load_dataset
    >>> from bayes_nest.models import MLP
    >>> data = load_dataset("digits")
    >>> net = MLP(64, [128, 128], 10, groups=16)
    >>> history = fit_fn3(net, data.train, epochs=30, val=data.val, seed=0)
    """
    trainer = FN3Trainer(
        module,
        optimizer=optimizer,
        scheduler=scheduler,
        scheduler_interval=scheduler_interval,
        keep_prob=keep_prob,
        distribution=distribution,
        sandwich=sandwich,
        coupling=coupling,
        distill=distill,
        loss_fn=loss_fn,
        batch_size=batch_size,
        device=device,
        seed=seed,
        progress=progress,
        grad_clip=grad_clip,
    )
    return trainer.fit(
        train,
        epochs=epochs,
        val=val,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
