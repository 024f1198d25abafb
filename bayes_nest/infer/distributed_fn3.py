r"""Data-parallel FN3 training: :class:`~bayes_nest.infer.FN3Trainer` under ``torchrun``.

Each rank runs the same step as the one-process trainer on its shard of the global batch
(:func:`~bayes_nest.infer.distributed.shard_loader`):

1. every rank draws the same keep counts (same sampler seed) and slices the same sub-network;
2. forward and backward on the local shard of :math:`G / W` examples, the loss being the shard
   mean :math:`\bar\ell_r`;
3. :class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients, so the update is
   :math:`\nabla \frac1W \sum_r \bar\ell_r = \nabla \frac1G \sum_{n \in \text{batch}} \ell_n`,
   the gradient of the global batch's mean loss (equal shard sizes);
4. the losses are summed over ranks *after* the backward pass and checked there, so a
   non-finite loss on any rank stops every rank before the optimizer step (checking before
   backward would leave the other ranks waiting in the gradient all-reduce forever).

With the sandwich rule, the extra sub-networks' backward passes run under ``no_sync`` and only
the last one all-reduces the accumulated gradients. Rank 0 writes checkpoints while the others
wait at a barrier; every rank reads the checkpoint to resume (use a file system all nodes see).
Batch-norm statistics are per rank during a step (as in plain DDP; DDP copies rank 0's buffers at
every forward) and rank 0's are copied to all ranks at the end of every epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .defaults import FN3_DEFAULTS
from .distributed import (
    DistContext,
    agreed_seed,
    broadcast_buffers,
    check_amp,
    distributed_sampler,
    set_epoch,
    setup,
    shard_loader,
    wrap_ddp,
)
from .fn3 import FN3Trainer, History, NonFiniteLossError

__all__ = ["DistributedFN3Trainer", "fit_fn3_distributed"]


class _SyncAtEnd:
    """Iterate a loader, then run ``on_end`` (once the epoch's batches are exhausted)."""

    def __init__(self, loader: DataLoader, on_end: Callable[[], None]) -> None:
        self.loader, self.on_end = loader, on_end

    def __iter__(self) -> Iterator[Any]:
        yield from self.loader
        self.on_end()

    def __len__(self) -> int:
        return len(self.loader)


def _grad_scaler() -> Any:
    """A CUDA gradient scaler (``torch.amp.GradScaler`` from torch 2.3, before in torch.cuda.amp)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


class DistributedFN3Trainer(FN3Trainer):
    """FN3 training on every process of a data-parallel job.

    Takes the arguments of :class:`~bayes_nest.infer.FN3Trainer`, with these differences:

    Parameters
    ----------
    module : nn.Module
        The nested network (unwrapped); it is moved to ``ctx.device`` and wrapped in
        :class:`~torch.nn.parallel.DistributedDataParallel` when the job has several processes.
        ``trainer.module`` stays the unwrapped network (clean ``state_dict`` keys).
    ctx : DistContext, optional
        From :func:`~bayes_nest.infer.distributed.setup`; default: ``setup()`` is called (which
        joins the job described by ``torchrun``'s environment, or describes a one-process job).
    batch_size : int
        *Global* batch size :math:`G` (all ranks together), divisible by the world size; a
        ``DataLoader`` passed to :meth:`fit` contributes its own batch size as :math:`G`.
    device : torch.device or str, optional
        Must be ``ctx.device`` if given (the process group decides the device).
    seed : int, optional
        Seeds the mask sampler, the data permutation and torch; the same on every rank
        (rank 0 draws one and sends it when ``None``).
    progress : bool
        Progress bar on rank 0 only.
    amp : bool or {"float16", "bfloat16"}
        Automatic mixed precision (``torch.autocast``) on CUDA; float16 uses a
        :class:`torch.amp.GradScaler` (saved in checkpoints). A :class:`ValueError` on CPU.
    find_unused_parameters : bool, optional
        Passed to DDP; ``None`` decides from the axes
        (:func:`~bayes_nest.infer.distributed.needs_unused_parameter_search`: needed when depth
        or path axes skip blocks).
    check_masks : bool
        All-gather the keep counts of every step and raise :class:`RuntimeError` if the ranks
        disagree (a debugging aid; costs one small collective per step).

    Notes
    -----
    The result does not depend on the number of processes: the global batches (see
    :func:`~bayes_nest.infer.distributed.shard_loader`), the keep counts and the averaged
    gradients are those of a one-process run of this trainer (up to floating-point summation
    order, and except for batch-norm statistics, which each rank computes on its shard).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        ctx: DistContext | None = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        keep_prob: float | Mapping[str, float] = FN3_DEFAULTS["keep_prob"],
        distribution: str | Mapping[str, str] = FN3_DEFAULTS["distribution"],
        sandwich: str | None = FN3_DEFAULTS["sandwich"],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        batch_size: int = FN3_DEFAULTS["batch_size"],
        device: torch.device | str | None = None,
        seed: int | None = None,
        progress: bool = True,
        grad_clip: float | None = None,
        amp: bool | str = False,
        find_unused_parameters: bool | None = None,
        check_masks: bool = False,
        **kwargs: Any,
    ) -> None:
        if ctx is None:
            ctx = setup()
        if not isinstance(ctx, DistContext):
            raise TypeError(f"ctx must be a DistContext (from setup()), got {type(ctx).__name__}")
        if device is not None and torch.device(device) != ctx.device:
            raise ValueError(
                f"device={str(device)!r} differs from the process's device {str(ctx.device)!r}; "
                "choose the device in setup(device=...)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size % ctx.world_size:
            raise ValueError(
                f"batch_size {batch_size} (the global batch) is not divisible by the number of "
                f"processes {ctx.world_size}"
            )
        self.amp_dtype = check_amp(amp, ctx.device)
        self.ctx = ctx
        super().__init__(
            module,
            optimizer=optimizer,
            scheduler=scheduler,
            scheduler_interval=scheduler_interval,
            keep_prob=keep_prob,
            distribution=distribution,
            sandwich=sandwich,
            loss_fn=loss_fn,
            batch_size=batch_size,
            device=ctx.device,
            seed=agreed_seed(seed, ctx),
            progress=progress and ctx.is_main,
            grad_clip=grad_clip,
            **kwargs,
        )
        self.scaler = _grad_scaler() if self.amp_dtype == torch.float16 else None
        self.check_masks = bool(check_masks)
        self.ddp = wrap_ddp(self.module, ctx, find_unused_parameters=find_unused_parameters)

    # ------------------------------------------------------------------ one step

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One optimizer step on this rank's shard of a global batch.

        Returns
        -------
        loss : float
            Mean loss of the sampled sub-network over the global batch.
        correct : float
            Its correct predictions over the global batch divided by the world size, so that
            dividing by this rank's example count gives the global accuracy (shards are equal).

        Raises
        ------
        NonFiniteLossError
            On every rank, before the update, when the loss is not finite on any rank.
        """
        configs = self.sampler.step_configs()
        if self.check_masks:
            flat = [count for counts in configs for count in counts.values()]
            self.ctx.assert_same(torch.tensor(flat), "keep counts of this step")
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 / len(configs)
        sampled = 0 if self.sampler.sandwich not in ("full", "both") else 1
        distill = getattr(self, "distill", False)
        # [loss of the sampled network, its correct predictions, non-finite losses]
        stats = torch.zeros(3, dtype=torch.float64, device=self.device)
        teacher = None
        last = len(configs) - 1
        for i, counts in enumerate(configs):
            self.sampler.apply(counts)
            accumulate = i < last and self.ddp is not self.module
            with self.ddp.no_sync() if accumulate else contextlib.nullcontext():
                with self._autocast():
                    out = self.ddp(x)
                    if teacher is None:
                        loss = self.loss_fn(out, y)
                    else:
                        loss = -(teacher * torch.log_softmax(out.float(), -1)).sum(-1).mean()
                if distill and teacher is None:
                    teacher = torch.softmax(out.detach().float(), dim=-1)
                value = loss.detach().to(torch.float64)
                stats[2] += (~torch.isfinite(value)).to(torch.float64)
                if i == sampled:
                    stats[0] = value
                    if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
                        stats[1] = (out.detach().argmax(-1) == y).sum()
                scaled = loss * scale if scale != 1.0 else loss
                (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        self.ctx.all_reduce_sum(stats)
        world = self.ctx.world_size
        loss_value, correct, bad = stats.tolist()
        loss_value /= world
        if bad > 0 or not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(self.step, self.epoch, loss_value, configs[sampled], "")
        if self.scaler is not None:
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.step += 1
        return loss_value, correct / world

    # ------------------------------------------------------------------ data and epochs

    def _loader(self, train: Any) -> DataLoader:
        return shard_loader(train, self.batch_size, self.ctx, seed=self._loader_seed)

    def _run_epoch(self, loader: DataLoader, val: Any, bar: tqdm) -> None:
        set_epoch(loader, self.epoch)
        # Rank 0's batch-norm statistics everywhere before validation, so all ranks score
        # (and schedule) alike.
        super()._run_epoch(
            _SyncAtEnd(loader, lambda: broadcast_buffers(self.module, self.ctx)), val, bar
        )

    # ------------------------------------------------------------------ state

    def state_dict(self, loader: DataLoader | None = None) -> dict[str, Any]:
        """The one-process trainer's state plus the gradient scaler and the world size."""
        state = super().state_dict(loader)
        state["grad_scaler"] = None if self.scaler is None else self.scaler.state_dict()
        state["world_size"] = self.ctx.world_size
        state["loader_seed"] = self._loader_seed
        return state

    def load_state_dict(self, state: Mapping[str, Any], loader: DataLoader | None = None) -> None:
        """Restore a state; works across world sizes (the data order does not depend on it)."""
        super().load_state_dict(state, loader)
        if "loader_seed" in state:  # the data order of the saved run
            self._loader_seed = int(state["loader_seed"])
            if loader is not None:
                distributed_sampler(loader).seed = self._loader_seed
        saved = state.get("grad_scaler")
        if self.scaler is not None and saved is not None:
            self.scaler.load_state_dict(saved)

    def _save_checkpoint(self, path: str | os.PathLike, loader: DataLoader) -> None:
        """Rank 0 writes; every rank waits until the file is complete."""
        if self.ctx.is_main:
            super()._save_checkpoint(path, loader)
        self.ctx.barrier()

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
        """Train until ``epochs`` epochs are complete; see :meth:`FN3Trainer.fit`.

        Raises
        ------
        RuntimeError
            With ``resume=True``, when the checkpoint exists on some ranks only (the ranks
            must share a file system, or every node needs a copy).
        """
        if resume and checkpoint_path is not None:
            found = os.path.exists(checkpoint_path)
            seen = self.ctx.all_gather_object(found)
            if len(set(seen)) > 1:
                raise RuntimeError(
                    f"checkpoint {str(checkpoint_path)!r} exists on ranks "
                    f"{[r for r, f in enumerate(seen) if f]} only: resuming needs it on every "
                    "rank (a shared file system, or a copy on every node)"
                )
        return super().fit(
            train,
            epochs=epochs,
            val=val,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )


def fit_fn3_distributed(
    module: nn.Module,
    train: Any,
    *,
    epochs: int,
    ctx: DistContext | None = None,
    val: Any = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    **kwargs: Any,
) -> History:
    """Train ``module`` with ordered dropout on every rank of a data-parallel job.

    ``kwargs`` are :class:`DistributedFN3Trainer`'s arguments (``batch_size`` is the global
    batch); ``train``, ``epochs``, ``val`` and the checkpoint arguments are those of
    :meth:`~bayes_nest.infer.FN3Trainer.fit`. Call it on every rank (e.g. in a script started by
    ``torchrun``); every rank returns the same :class:`~bayes_nest.infer.History`.

    Examples
    --------
    >>> from bayes_nest.infer.distributed import distributed
    >>> with distributed() as ctx:  # doctest: +SKIP
    ...     history = fit_fn3_distributed(net, data.train, epochs=10, ctx=ctx, seed=0)  # torchrun
    """
    trainer = DistributedFN3Trainer(module, ctx=ctx, **kwargs)
    return trainer.fit(
        train,
        epochs=epochs,
        val=val,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
