r"""The one training loop of FN3 and BNNN, in one process or in every process of a data-parallel
job.

A :class:`TrainingLoop` drives a :class:`~bayes_nest.infer.training.TrainingProgram` through
epochs of mini-batch steps. One step:

1. the program computes its loss on the batch and accumulates gradients;
2. in a job of :math:`W` processes, the step's statistics are summed over processes (one small
   all-reduce) and every process weights its gradients by its share :math:`n_r / n` of the global
   batch before they are summed (one all-reduce per dtype), so the update is the one of the
   global batch's mean loss;
3. a non-finite loss on any process stops every process before the update (with where the
   value first appears, on the process that saw it); so does a non-finite gradient;
4. the program applies the update.

Data order. ``(x, y)`` pairs and datasets are shuffled by a generator seeded with the loop's
seed (:func:`~bayes_nest.data.as_loader`), the same on every process; each global batch is
split by rows, process :math:`r` taking rows :math:`r, r + W, r + 2W, \dots`, and random noise
drawn per example (the local reparameterization of Bayesian layers) is drawn for the global
batch and split the same way (:func:`~bayes_nest.nn.bayesian_ops.example_shard`). So one and
:math:`W` processes see the same global batches and the same random numbers: their results agree
to floating-point summation order, and a checkpoint of either resumes in the other. A
:class:`~torch.utils.data.DataLoader` is used as it is in one process; in a multi-process job
its dataset is split by a :class:`~torch.utils.data.DistributedSampler`
(:func:`~bayes_nest.infer.distributed.shard_loader`), whose order differs from the
one-process order. Batch-norm statistics are per process during an epoch; process 0's are copied
to all at its end.

A fit starts from process 0's parameters and buffers on every process (copied, as
:class:`~torch.nn.parallel.DistributedDataParallel` does). Checkpoints are written by process 0 only, atomically, after the state was checked finite;
every process validates (the processes stay in step, random streams included).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ...data import as_loader
from ...nn.bayesian_ops import example_shard
from ..checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..distributed import (
    DistContext,
    broadcast_buffers,
    broadcast_state,
    distributed_sampler,
    set_epoch,
    shard_loader,
)
from ..watchdog import NonFiniteError
from .history import History
from .precision import Precision
from .program import TrainingProgram

__all__ = ["TrainingLoop"]


def _check_positive_int(value: Any, name: str, *, zero: bool = False) -> None:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "non-negative" if zero else "positive"
        raise ValueError(f"{name} must be a {kind} int, got {value!r}")


class TrainingLoop:
    """Epochs of steps of a training program, with checkpoints, exact resume and checks.

    Parameters
    ----------
    program : TrainingProgram
        What is trained (model, loss, optimizer).
    batch_size : int
        Global batch size (all processes together) when data come as ``(x, y)`` pairs or a
        dataset; a ``DataLoader`` brings its own.
    loader_seed : int
        Seed of the data order (the same on every process).
    ctx : DistContext, optional
        The data-parallel job (:func:`~bayes_nest.infer.distributed.setup`); default: this
        process alone.
    amp : bool or {"float16", "bfloat16"}
        Mixed precision (CUDA only), see :class:`~bayes_nest.infer.training.Precision`.
    progress : bool
        A tqdm progress bar (on process 0).
    check_masks : bool
        Verify at every step that all processes share the random state and the program's random
        choices (one small all-gather per step; a debugging aid).
    epoch, step : int
        Where the run stands (a loop continuing an earlier run); ``step=None``: ``epoch`` times
        the steps of an epoch.
    history : History, optional
        The record to continue.
    """

    def __init__(
        self,
        program: TrainingProgram,
        *,
        batch_size: int,
        loader_seed: int,
        ctx: DistContext | None = None,
        amp: bool | str = False,
        progress: bool = True,
        check_masks: bool = False,
        epoch: int = 0,
        step: int | None = 0,
        history: History | None = None,
    ) -> None:
        _check_positive_int(batch_size, "batch_size")
        if ctx is None:
            ctx = DistContext(device=_device_of(program.module))
        if not isinstance(ctx, DistContext):
            raise TypeError(f"ctx must be a DistContext (from setup()), got {type(ctx).__name__}")
        self.program = program
        self.ctx = ctx
        self.device = ctx.device
        self.batch_size = batch_size
        self.loader_seed = int(loader_seed)
        self.precision = Precision(amp, self.device)
        if self.precision.enabled and not program.supports_amp:
            raise ValueError(f"{program.name} training does not support mixed precision (amp)")
        self.progress = bool(progress) and ctx.is_main
        self.check_masks = bool(check_masks)
        self.epoch = int(epoch)
        self.step = None if step is None else int(step)
        self.history = history if history is not None else History(program.history_columns)
        self._split_rows = False
        self._multi = ctx.distributed
        self.train_loader: DataLoader | None = None
        self._bound = False

    # ------------------------------------------------------------------ data

    def loader(self, train: Any) -> DataLoader:
        """The training batches of this process: the global batches in one process (or, for
        pairs and datasets, every process, which then keeps its rows of each)."""
        if self._multi and isinstance(train, DataLoader):
            self._split_rows = False
            return shard_loader(train, self.batch_size, self.ctx, seed=self.loader_seed)
        loader = as_loader(train, self.batch_size, shuffle=True, seed=self.loader_seed)
        self._split_rows = self._multi
        if self._split_rows:
            self._check_split(loader)
        return loader

    def _check_split(self, loader: DataLoader) -> None:
        world = self.ctx.world_size
        if self.batch_size < world:
            raise ValueError(
                f"batch_size {self.batch_size} (the global batch) is smaller than the number of "
                f"processes {world}: every process needs examples of every batch"
            )
        n = len(loader.dataset)
        last = n % self.batch_size
        if 0 < last < world:
            raise ValueError(
                f"the last batch of an epoch holds {last} of {n} examples, fewer than the "
                f"{world} processes: choose a batch size that leaves 0 or at least {world}"
            )

    # ------------------------------------------------------------------ one step

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One update on a batch (this process's rows of it in a multi-process job); returns the
        loss and the number of correct predictions over the whole (global) batch.

        Raises
        ------
        NonFiniteError
            On every process, before the update, when the loss is not finite on any of them or
            a gradient is not finite.
        """
        if not self._bound:  # a step outside fit: the program learns the loop, not the data size
            self.program.bind(self, None)
            self._bound = True
        loss, correct, _ = self._step(x, y)
        return loss, correct

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, int]:
        program, ctx = self.program, self.ctx
        if self.check_masks and self._multi:
            ctx.assert_same(torch.get_rng_state().double(), "random states before this step")
        result = program.loss_and_grads(x, y)
        if self.check_masks and self._multi:
            choices = program.step_choices()
            if choices is not None:
                ctx.assert_same(choices, "random choices of this step")
        count = len(y)
        if self._multi:
            world = ctx.world_size
            stats = torch.zeros(3 + world, dtype=torch.float64, device=self.device)
            if result.finite:
                stats[0], stats[1] = result.loss * count, result.correct
            else:
                stats[3 + ctx.rank] = 1.0
            stats[2] = count
            loss_sum, correct, total, *bad = ctx.all_reduce_sum(stats).tolist()
            if any(bad):
                here = bool(bad[ctx.rank])
                error = program.non_finite(
                    step=self.step,
                    epoch=self.epoch,
                    value=result.loss if here else math.nan,
                    x=x if here else None,
                    y=y if here else None,
                )
                ranks = [r for r, b in enumerate(bad) if b]
                raise error.on_ranks(ranks)
            self._sum_gradients(count / total)
            loss, count = loss_sum / total, int(total)
        else:
            if not result.finite:
                error = program.non_finite(
                    step=self.step, epoch=self.epoch, value=result.loss, x=x, y=y
                )
                raise error
            loss, correct = result.loss, result.correct
        watchdog = program.watchdog
        if watchdog is not None and self.precision.scaler is None:  # the scaler skips overflows
            watchdog.check_gradients(step=self.step, epoch=self.epoch)
        program.update()
        self.step += 1
        return loss, correct, count

    def _sum_gradients(self, share: float) -> None:
        """Weight this process's gradients by its share of the global batch and sum them over
        processes, one all-reduce per dtype."""
        buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for p in self.program.module.parameters():
            if p.grad is not None:
                buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
        for grads in buckets.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            flat.mul_(share)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    # ------------------------------------------------------------------ epochs

    def _run_epoch(self, loader: DataLoader, val: Any, bar: tqdm) -> None:
        program, device = self.program, self.device
        program.begin_epoch(self.epoch)
        if self._multi and not self._split_rows:
            set_epoch(loader, self.epoch)
        rank, world = self.ctx.rank, self.ctx.world_size
        loss_sum, correct, seen, steps = 0.0, 0.0, 0, 0
        start = time.perf_counter()
        for batch in loader:
            x, y = batch[0], batch[1]
            if self._split_rows:
                with example_shard(rank, world, len(y)):
                    loss, n_correct, count = self._step(
                        x[rank::world].to(device), y[rank::world].to(device)
                    )
            else:
                loss, n_correct, count = self._step(x.to(device), y.to(device))
            loss_sum += loss
            correct += n_correct
            seen += count
            steps += 1
            bar.update(1)
        seconds = time.perf_counter() - start
        broadcast_buffers(program.module, self.ctx)  # process 0's batch-norm statistics
        self.epoch += 1
        row = program.end_epoch(
            epoch=self.epoch,
            loss=loss_sum / max(steps, 1),
            accuracy=correct / max(seen, 1),
            seconds=seconds,
            val=val,
        )
        self.history.append(**row)
        postfix = {
            name: f"{row[name]:.3f}"
            for name in ("loss", "accuracy", "val_accuracy")
            if isinstance(row.get(name), float) and math.isfinite(row[name])
        }
        bar.set_postfix(postfix, refresh=False)

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
            Training data (pairs and datasets are shuffled with the loop's seed every epoch).
        epochs : int
            Total number of epochs (a resumed run continues up to this number).
        val : DataLoader or (x, y) pair, optional
            Scored by the program after every epoch.
        checkpoint_path : path, optional
            Where process 0 writes a checkpoint every ``checkpoint_every`` epochs and after the
            last one.
        resume : bool
            Continue from ``checkpoint_path`` if it exists (exactly the run an uninterrupted one
            would have been, whatever the number of processes of either); start afresh if not.

        Raises
        ------
        NonFiniteError
            At the first non-finite loss or gradient (before that update), or before a
            checkpoint of a non-finite state would be written; its note names the last good
            checkpoint.
        CheckpointError, ValueError
            The checkpoint does not fit this program, or exists on some processes only.
        """
        _check_positive_int(epochs, "epochs", zero=True)
        _check_positive_int(checkpoint_every, "checkpoint_every")
        if resume and checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path")
        loader = self.train_loader = self.loader(train)
        if self.step is None:
            self.step = self.epoch * len(loader) if hasattr(loader, "__len__") else 0
        try:
            dataset_size = len(loader.dataset)
        except TypeError:
            dataset_size = None
        self.program.bind(self, dataset_size)
        self._bound = True
        if resume:
            self._resume(checkpoint_path, loader)
        broadcast_state(self.program.module, self.ctx)  # process 0's weights everywhere
        try:
            total = len(loader)
        except TypeError:
            total = None
        bar = tqdm(
            total=None if total is None else epochs * total,
            initial=0 if total is None else min(self.epoch, epochs) * total,
            disable=not self.progress,
            desc=self.program.name,
            unit="step",
        )
        try:
            while self.epoch < epochs:
                self._run_epoch(loader, val, bar)
                last = self.epoch == epochs
                if checkpoint_path is not None and (last or self.epoch % checkpoint_every == 0):
                    self._save(checkpoint_path, loader)
        except NonFiniteError as e:
            kept = checkpoint_path is not None and Path(checkpoint_path).exists()
            note = f"Last good checkpoint: {str(checkpoint_path)!r}." if kept else ""
            raise e.with_note(note or "No checkpoint was written.") from None
        finally:
            self.program.finish()
            bar.close()
        return self.history

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, loader: DataLoader | None = None) -> dict[str, Any]:
        """The program's state and the loop's (random and data-order state, counters,
        history, gradient scaler): everything that determines the rest of the run."""
        return {
            **self.program.state_dict(),
            "rng": rng_state(),
            "loader_generators": [g.get_state() for g in _generators(loader)] if loader else [],
            "loader_seed": self.loader_seed,
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history.as_dict(),
            "grad_scaler": self.precision.state_dict(),
            "world_size": self.ctx.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any], loader: DataLoader | None = None) -> None:
        """Restore :meth:`state_dict` (from a run with any number of processes)."""
        self.program.load_state_dict(state)
        set_rng_state(state["rng"])
        if loader is not None:
            gens, saved = _generators(loader), list(state.get("loader_generators", []))
            if len(gens) != len(saved):
                raise ValueError(
                    f"the training loader has {len(gens)} generators but the checkpoint "
                    f"holds {len(saved)}: resume with the same kind of training data"
                )
            for g, s in zip(gens, saved, strict=True):
                g.set_state(torch.as_tensor(s, dtype=torch.uint8))
            if "loader_seed" in state and self._multi and not self._split_rows:
                self.loader_seed = int(state["loader_seed"])  # the saved run's data order
                distributed_sampler(loader).seed = self.loader_seed
        self.epoch = int(state["epoch"])
        per_epoch = len(loader) if loader is not None and hasattr(loader, "__len__") else 0
        self.step = int(state.get("step", self.epoch * per_epoch))
        self.history = History.from_dict(state["history"])
        self.precision.load_state_dict(state.get("grad_scaler"))

    def _resume(self, path: str | os.PathLike, loader: DataLoader) -> None:
        found = os.path.exists(path)
        seen = self.ctx.all_gather_object(found)
        if len(set(seen)) > 1:
            raise CheckpointError(
                f"checkpoint {str(path)!r} exists on processes "
                f"{[r for r, f in enumerate(seen) if f]} only: resuming needs it on every "
                "process (a shared file system, or a copy on every node)"
            )
        if not found:
            warnings.warn(f"no checkpoint at {str(path)!r}; training from the start", stacklevel=4)
            return
        state = load_checkpoint(path, kind=self.program.kind)
        try:
            self.load_state_dict(state, loader)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            msg = " ".join(str(e if not isinstance(e, KeyError) else f"no {e}").split())
            raise CheckpointError(
                f"{path} does not fit this training run (another network, optimizer, settings "
                f"or data?): {msg[:400]}"
            ) from e

    def _save(self, path: str | os.PathLike, loader: DataLoader) -> None:
        """Check the state (every process: they hold the same) and let process 0 write it."""
        self.program.check_state(step=self.step, epoch=self.epoch)
        if self.ctx.is_main:
            save_checkpoint(path, self.state_dict(loader), kind=self.program.kind)
        self.ctx.barrier()


def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The torch generators that decide a loader's order (deduplicated)."""
    found: dict[int, torch.Generator] = {}
    candidates = [loader, loader.sampler, getattr(loader, "batch_sampler", None)]
    candidates += [getattr(c, "sampler", None) for c in candidates[1:]]
    for obj in candidates:
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator):
            found.setdefault(id(g), g)
    return list(found.values())


def _device_of(module: torch.nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")
