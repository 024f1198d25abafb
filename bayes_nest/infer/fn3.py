r"""FN3 training: point-estimate weights trained on the ordered-dropout objective.

:class:`FN3Trainer` puts together the FN3 objective (:class:`~bayes_nest.infer.fn3_objective.FN3Program`:
one keep count per axis drawn from the fixed prior of :class:`OrderedDropout` per mini-batch,
plus the full and/or smallest sub-network under the sandwich rule) and the one training loop
(:class:`~bayes_nest.infer.training.TrainingLoop`): seeded, with atomic checkpoints holding
everything that determines the rest of the run and exact resume from them (whatever the number
of processes of either run), mixed precision on CUDA, data parallelism given a
:class:`~bayes_nest.infer.distributed.DistContext`, and a stop with :class:`NonFiniteLossError`
at the first non-finite loss, before the bad step changes the weights or the last checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..nn.nest import check_narrowing
from .defaults import FN3_DEFAULTS
from .distributed import DistContext, agreed_seed
from .evaluate import _module_device
from .fn3_history import History, NonFiniteLossError
from .fn3_objective import FN3Program
from .fn3_setup import _make_optimizer, _make_scheduler
from .ordered_dropout import OrderedDropout
from .training.loop import TrainingLoop
from .watchdog import Watchdog

__all__ = ["FN3Trainer", "History", "NonFiniteLossError", "fit_fn3"]

CHECKPOINT_KIND = FN3Program.kind


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
        Batch size when data come as ``(x, y)`` pairs or a dataset (loaders are used as they
        are); in a data-parallel job the *global* batch of all processes together.
    device : torch.device or str, optional
        Device to train on (the module is moved there); default: where the module is, or
        ``ctx.device``.
    seed : int, optional
        Seeds torch's global generator (when the trainer is created), the sampler and the
        shuffling of ``(x, y)`` training data: the same seed and initial weights give identical
        weights. ``None`` draws the sampler and shuffling seeds from torch's global generator
        (on process 0, sent to all, in a data-parallel job).
    coupling : {None, "kind", "all"}
        Draw the keep counts of axes of one kind (or of all axes) from one shared uniform
        number; see :class:`~bayes_nest.infer.OrderedDropout`.
    distill : bool
        In-place distillation: the sub-networks after the first configuration of a step learn
        from the first one's softmax (detached) instead of the labels; needs
        ``sandwich="full"`` or ``"both"`` (the full network is the teacher).
    progress : bool
        Show a tqdm progress bar with the running loss and accuracy (on process 0).
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    ctx : DistContext, optional
        The data-parallel job (:func:`~bayes_nest.infer.distributed.setup`, e.g. under
        ``torchrun``): every process runs this trainer on its rows of every global batch and the
        result is the one-process result (to floating-point summation order). Default: this
        process alone.
    amp : bool or {"float16", "bfloat16"}
        Automatic mixed precision on CUDA (float16 with gradient scaling); a ``ValueError``
        elsewhere. See :class:`~bayes_nest.infer.training.Precision`.
    check_masks : bool
        In a data-parallel job, verify at every step that all processes drew the same keep
        counts and hold the same random state (a debugging aid).

    Notes
    -----
    ``trainer.watchdog`` (a :class:`~bayes_nest.infer.watchdog.Watchdog`) stops training with
    a :class:`~bayes_nest.infer.watchdog.NonFiniteError` at the first non-finite loss or
    gradient (before the optimizer step) and refuses to write a checkpoint of a non-finite
    state, naming the step and the input, parameter or layer where the value first appears.
    Set it to ``None`` to switch the checks off. ``trainer.loop`` is the
    :class:`~bayes_nest.infer.training.TrainingLoop` and ``trainer.program`` the
    :class:`~bayes_nest.infer.fn3_objective.FN3Program` it trains.
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
        ctx: DistContext | None = None,
        amp: bool | str = False,
        check_masks: bool = False,
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
        if ctx is not None and not isinstance(ctx, DistContext):
            raise TypeError(f"ctx must be a DistContext (from setup()), got {type(ctx).__name__}")
        if ctx is not None and device is not None and torch.device(device) != ctx.device:
            raise ValueError(
                f"device={str(device)!r} differs from the process's device {str(ctx.device)!r}; "
                "choose the device in setup(device=...)"
            )
        if distill and sandwich not in ("full", "both"):
            raise ValueError(
                f"distill=True needs the full network in every step (sandwich 'full' or 'both'), "
                f"got sandwich={sandwich!r}"
            )
        if ctx is not None:
            device = ctx.device
        self.device = torch.device(device) if device is not None else _module_device(module)
        self.module = module.to(self.device)
        if ctx is not None and ctx.distributed:
            seed = agreed_seed(seed, ctx)
        if seed is not None:
            torch.manual_seed(seed)
        self.seed = seed
        sampler = OrderedDropout(
            module, keep_prob, distribution, sandwich=sandwich, coupling=coupling, seed=seed
        )
        check_narrowing(module)  # a plain layer after a width layer: a clear error, not a crash
        optimizer = _make_optimizer(optimizer, module)
        self.program = FN3Program(
            module,
            sampler,
            optimizer,
            scheduler=_make_scheduler(scheduler, optimizer),
            scheduler_interval=scheduler_interval,
            loss_fn=F.cross_entropy if loss_fn is None else loss_fn,
            distill=distill,
            grad_clip=None if grad_clip is None else float(grad_clip),
            watchdog=Watchdog(module),
        )
        loader_seed = (
            seed if seed is not None else int(torch.randint(0, 2**62, (), dtype=torch.int64))
        )
        self.loop = TrainingLoop(
            self.program,
            batch_size=batch_size,
            loader_seed=loader_seed,
            ctx=ctx if ctx is not None else DistContext(device=self.device),
            amp=amp,
            progress=progress,
            check_masks=check_masks,
        )

    # ------------------------------------------------------------------ views

    @property
    def ctx(self) -> DistContext:
        """The data-parallel job (one process by default)."""
        return self.loop.ctx

    @property
    def sampler(self) -> OrderedDropout:
        return self.program.sampler

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.program.optimizer

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer) -> None:
        self.program.optimizer = _make_optimizer(value, self.module)

    @property
    def scheduler(self) -> Any:
        return self.program.scheduler

    @property
    def watchdog(self) -> Watchdog | None:
        return self.program.watchdog

    @watchdog.setter
    def watchdog(self, value: Watchdog | None) -> None:
        self.program.watchdog = value

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.loop.epoch

    @property
    def step(self) -> int:
        """Completed optimizer steps."""
        return self.loop.step

    @step.setter
    def step(self, value: int) -> None:
        self.loop.step = int(value)

    @property
    def history(self) -> History:
        return self.loop.history

    @property
    def batch_size(self) -> int:
        return self.loop.batch_size

    # ------------------------------------------------------------------ steps and state

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One optimizer step on a batch; returns (loss, number of correct predictions) of the
        sampled sub-network. Raises :class:`NonFiniteLossError` before updating on a bad loss."""
        return self.loop.train_step(x, y)

    def state_dict(self, loader: DataLoader | None = None) -> dict[str, Any]:
        """Everything that determines the rest of a run, for :func:`save_checkpoint`."""
        return self.loop.state_dict(loader)

    def load_state_dict(self, state: Mapping[str, Any], loader: DataLoader | None = None) -> None:
        """Restore a state from :meth:`state_dict` (e.g. read by :func:`load_checkpoint`)."""
        self.loop.load_state_dict(state, loader)

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
        train : DataLoader, Dataset or (x, y) pair
            Training data; pairs and datasets are shuffled with the trainer's seed every epoch.
        epochs : int
            Total number of epochs (a resumed run continues up to this number).
        val : DataLoader or (x, y) pair, optional
            Validation data; the full network is scored after every epoch.
        checkpoint_path : path, optional
            Where to write a checkpoint every ``checkpoint_every`` epochs and after the last
            (process 0 writes, atomically).
        resume : bool
            Continue from ``checkpoint_path`` if it exists (identical weights to an uninterrupted
            run with the same settings, with any number of processes); start afresh if it does
            not.
        """
        return self.loop.fit(
            train,
            epochs=epochs,
            val=val,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )


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
    ctx: DistContext | None = None,
    amp: bool | str = False,
    check_masks: bool = False,
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
        ctx=ctx,
        amp=amp,
        check_masks=check_masks,
    )
    return trainer.fit(
        train,
        epochs=epochs,
        val=val,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
