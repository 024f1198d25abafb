r"""Data-parallel training on PyTorch's own distributed engine (``torch.distributed``).

Every process (*rank*) holds a full copy of the nested network and runs the one training loop
(:class:`~bayes_nest.infer.training.TrainingLoop`) on its rows of each global mini-batch; the
gradients are summed over processes, so the update is the one of the global batch. Processes
are started by ``torchrun``, which sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them, joins the process group
(``gloo`` on CPU, ``nccl`` on CUDA) and returns a :class:`DistContext` that
:class:`~bayes_nest.infer.FN3Trainer` and :meth:`~bayes_nest.infer.BNNN.fit` take as ``ctx``.

Data order and randomness are those of one process (see the training loop): every process reads
the same seeded global batches and keeps its rows, per-example noise is drawn for the global
batch and split alike, and every other random draw (keep counts, the guide's Downhill draws)
comes from generators seeded identically on all ranks (:func:`agreed_seed` broadcasts rank 0's
seed when none is given); ``check_masks=True`` verifies it with an all-gather every step. A
user ``DataLoader`` is split by :func:`shard_loader` instead (in
:mod:`bayes_nest.infer.distributed_data`, re-exported here).

This module holds the process-group plumbing: the context, setup and teardown, seeds, copies of
rank 0's state and the mixed-precision check.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .distributed_data import (
    distributed_sampler,
    set_epoch,
    shard_loader,
)

__all__ = [
    "BACKENDS",
    "DistContext",
    "agreed_seed",
    "broadcast_buffers",
    "broadcast_state",
    "check_amp",
    "distributed",
    "distributed_sampler",
    "set_epoch",
    "setup",
    "shard_loader",
    "teardown",
]

BACKENDS = ("gloo", "nccl")
_SKIPPING_KINDS = ("depth", "paths")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly one-process) data-parallel job.

    Attributes
    ----------
    rank : int
        Global rank, ``0 <= rank < world_size``.
    world_size : int
        Number of processes in the job (1 when not run under ``torchrun``).
    local_rank : int
        Rank on this machine; selects the GPU ``cuda:<local_rank>``.
    device : torch.device
        Device this process trains on.
    backend : str or None
        ``"gloo"`` or ``"nccl"``; ``None`` without a process group.
    initialized_here : bool
        Whether :func:`setup` created the process group (then :func:`teardown` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, reports and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process and a live process group: collectives are needed."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        """Wait until every rank reaches this point (no-op in a one-process job)."""
        if not self.distributed:
            return
        if self.backend == "nccl" and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (on this process's device) and return it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=src, device=self._object_device())
        return holder[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (picklable objects)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def assert_same(self, values: torch.Tensor, what: str) -> None:
        """Raise :class:`RuntimeError` on every rank unless ``values`` agree on all ranks.

        Parameters
        ----------
        values : Tensor
            1-D integer or float tensor, same shape on every rank.
        what : str
            What the values are, for the error message.
        """
        if not self.distributed:
            return
        local = values.detach().reshape(-1).to(self.device, torch.float64)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        differing = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
        if differing:
            raise RuntimeError(
                f"{what} differ between ranks: rank 0 has {gathered[0].tolist()}, rank "
                f"{differing[0]} has {gathered[differing[0]].tolist()}"
            )

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def _resolve_device(device: torch.device | str | None, local_rank: int) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must name a torch device, got {device!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(
    backend: str | None = None,
    *,
    device: torch.device | str | None = None,
    timeout: datetime.timedelta | None = None,
) -> DistContext:
    """Join the data-parallel job described by ``torchrun``'s environment variables.

    Without ``torchrun`` (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) no process group is created and
    the context describes a one-process job, so the same script runs with and without it.

    Parameters
    ----------
    backend : {"gloo", "nccl"}, optional
        Default: ``"nccl"`` when this process trains on CUDA, else ``"gloo"``.
    device : torch.device or str, optional
        Default: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU. ``"cuda"`` without
        an index also means ``cuda:<LOCAL_RANK>``; the process's current CUDA device is set to it.
    timeout : datetime.timedelta, optional
        How long collectives wait for a missing rank before failing (PyTorch's default if None).

    Returns
    -------
    DistContext

    Raises
    ------
    ValueError
        Malformed environment, ``nccl`` with a CPU device, CUDA requested but absent, or a
        multi-process environment without ``MASTER_ADDR``/``MASTER_PORT``.

    Examples
    --------
    Under ``torchrun --nproc-per-node 2 script.py``, on the first process:

    >>> ctx = setup()              # doctest: +SKIP
    >>> ctx.rank, ctx.world_size   # doctest: +SKIP
    (0, 2)
    >>> teardown(ctx)              # doctest: +SKIP
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if timeout is not None and not isinstance(timeout, datetime.timedelta):
        raise TypeError(f"timeout must be a datetime.timedelta or None, got {timeout!r}")
    already = dist.is_available() and dist.is_initialized()
    if already:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
    else:
        world_size = max(_env_int("WORLD_SIZE", 1), 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
        if rank >= world_size:
            raise ValueError(f"RANK={rank} is not below WORLD_SIZE={world_size}")
    dev = _resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if already:
        backend = str(dist.get_backend())
        return DistContext(rank, world_size, local_rank, dev, backend, initialized_here=False)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError(f"backend 'nccl' needs a CUDA device, got device {str(dev)!r}")
    if world_size == 1:
        return DistContext(0, 1, local_rank, dev, None, initialized_here=False)
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed support")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {' and '.join(missing)} is not set: start the job "
            "with torchrun (e.g. `torchrun --nproc-per-node 2 script.py`)"
        )
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world_size}
    if timeout is not None:
        kwargs["timeout"] = timeout
    dist.init_process_group(init_method="env://", **kwargs)
    return DistContext(rank, world_size, local_rank, dev, backend, initialized_here=True)


def teardown(ctx: DistContext | None = None) -> None:
    """Leave the job: destroy the process group if :func:`setup` created it.

    With ``ctx=None`` the current process group, if any, is destroyed.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if ctx is None or ctx.initialized_here:
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(
    backend: str | None = None, *, device: torch.device | str | None = None
) -> Iterator[DistContext]:
    """Context manager around :func:`setup` and :func:`teardown`.

    Examples
    --------
    >>> from bayes_nest.infer import FN3Trainer
    >>> with distributed() as ctx:  # doctest: +SKIP
    ...     trainer = FN3Trainer(net, ctx=ctx, seed=0)  # under torchrun
    ...     trainer.fit(data.train, epochs=10)
    """
    ctx = setup(backend, device=device)
    try:
        yield ctx
    finally:
        teardown(ctx)


def agreed_seed(seed: int | None, ctx: DistContext) -> int:
    """``seed`` if given, else a random seed drawn on rank 0 and sent to every rank."""
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        return seed
    drawn = int(torch.randint(0, 2**62, (), dtype=torch.int64)) if ctx.is_main else None
    return int(ctx.broadcast_object(drawn))


def broadcast_state(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (as DDP does when it wraps a model):
    every process then starts from the same weights, whatever each initialised."""
    if not ctx.distributed:
        return
    for tensor in (*module.parameters(), *module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (e.g. batch-norm running statistics) to every rank."""
    if not ctx.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


# ----------------------------------------------------------------------------- precision


def check_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """Validate an ``amp`` option and return the autocast dtype (``None``: full precision).

    ``True`` or ``"float16"``: float16 autocast with gradient scaling; ``"bfloat16"``: bfloat16
    autocast (no scaling needed). Mixed precision is offered on CUDA only.
    """
    if amp is False or amp is None:
        return None
    choices = {True: torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if isinstance(amp, bool) or isinstance(amp, str):
        dtype = choices.get(amp)
    else:
        dtype = None
    if dtype is None:
        raise ValueError(f"amp must be False, True, 'float16' or 'bfloat16', got {amp!r}")
    if device.type != "cuda":
        raise ValueError(
            f"amp={amp!r} needs a CUDA device, but training runs on {str(device)!r}; "
            "mixed precision is only offered on CUDA (train on CPU with amp=False)"
        )
    return dtype
