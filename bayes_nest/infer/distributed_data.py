"""Data and randomness of data-parallel training: sharded loaders and shared random streams.

See :mod:`bayes_nest.infer.distributed` for the data order this produces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    TensorDataset,
)

from ..data import as_loader

if TYPE_CHECKING:
    from .distributed import DistContext

__all__ = ["SharedStream", "distributed_sampler", "rank_seed", "set_epoch", "shard_loader"]


# ----------------------------------------------------------------------------- data


def _global_batch(data: Any, default: int) -> int:
    if isinstance(data, DataLoader):
        for holder in (data, data.batch_sampler, data.sampler):
            size = getattr(holder, "batch_size", None)
            if isinstance(size, int) and size > 0:
                return size
    return default


def shard_loader(
    data: Any,
    batch_size: int,
    ctx: DistContext,
    *,
    seed: int,
    drop_last: bool = False,
) -> DataLoader:
    """A loader of this rank's shard of every global mini-batch.

    Parameters
    ----------
    data : DataLoader, Dataset or (x, y) pair
        A loader contributes its map-style dataset, batch size (taken as the *global* batch),
        workers, collate function and pinned memory; its sampler is replaced.
    batch_size : int
        Global batch size :math:`G` when ``data`` is not a loader; must be divisible by the
        world size. Each rank loads :math:`G / W` examples per step.
    ctx : DistContext
    seed : int
        Seed of the permutation (the same on every rank); epoch ``e`` uses ``seed + e``.
    drop_last : bool
        Drop the last, incomplete global batch.

    Returns
    -------
    DataLoader
        Its ``.sampler`` (or ``.sampler.sampler``) is the :class:`DistributedSampler`; call
        :func:`set_epoch` before every epoch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    source = data if isinstance(data, DataLoader) else None
    global_batch = _global_batch(data, batch_size)
    if global_batch % ctx.world_size:
        raise ValueError(
            f"the global batch size {global_batch} is not divisible by the number of processes "
            f"{ctx.world_size}; choose a multiple of {ctx.world_size}"
        )
    local_batch = global_batch // ctx.world_size
    if source is not None:
        dataset = source.dataset
    elif isinstance(data, Dataset):
        dataset = data
    else:
        dataset = as_loader(data, 1).dataset  # checks and converts (x, y) pairs
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "distributed training needs a map-style dataset (with __len__ and __getitem__) to "
            "shard; got an IterableDataset"
        )
    sampler = DistributedSampler(
        dataset,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=True,
        seed=seed,
        drop_last=False,
    )
    if isinstance(dataset, TensorDataset) and source is None:
        # One indexing operation per batch, as bayes_nest.data.as_loader does for pairs.
        batches = BatchSampler(sampler, local_batch, drop_last)
        return DataLoader(dataset, batch_size=None, sampler=batches)
    options: Mapping[str, Any] = {}
    if source is not None:
        options = {
            "num_workers": source.num_workers,
            "collate_fn": source.collate_fn,
            "pin_memory": source.pin_memory,
            "worker_init_fn": source.worker_init_fn,
            "persistent_workers": source.persistent_workers,
        }
    return DataLoader(
        dataset, batch_size=local_batch, sampler=sampler, drop_last=drop_last, **options
    )


def distributed_sampler(loader: DataLoader) -> DistributedSampler:
    """The :class:`DistributedSampler` of a loader made by :func:`shard_loader`."""
    for obj in (loader.sampler, getattr(loader.sampler, "sampler", None)):
        if isinstance(obj, DistributedSampler):
            return obj
    raise TypeError("the loader was not made by shard_loader: it has no DistributedSampler")


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select epoch ``epoch``'s permutation of a :func:`shard_loader` loader."""
    distributed_sampler(loader).set_epoch(int(epoch))


# ----------------------------------------------------------------------------- random streams


class SharedStream:
    """A random-number stream that every rank advances identically.

    Code run inside :meth:`active` draws from this stream instead of the process's own global
    generators (CPU, and the CUDA generator of ``device``); the global state is restored on
    exit. With the same seed and the same sequence of draws, every rank gets the same numbers
    (e.g. the masks of a Pyro guide) while the rest of the program keeps its own stream.

    Parameters
    ----------
    seed : int
    device : torch.device
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.device = torch.device(device)
        self.cpu_state = torch.Generator().manual_seed(seed).get_state()
        self.cuda_state = None
        if self.device.type == "cuda":
            self.cuda_state = torch.Generator(device=self.device).manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draw from this stream inside the ``with`` block."""
        saved_cpu = torch.get_rng_state()
        torch.set_rng_state(self.cpu_state)
        saved_cuda = None
        if self.cuda_state is not None:
            saved_cuda = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        try:
            yield
        finally:
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if saved_cuda is not None:
                self.cuda_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(saved_cuda, self.device)

    def state_dict(self) -> dict[str, Any]:
        """The stream's generator states, for checkpoints."""
        return {"cpu": self.cpu_state, "cuda": self.cuda_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore states from :meth:`state_dict`."""
        self.cpu_state = torch.as_tensor(state["cpu"], dtype=torch.uint8)
        if self.cuda_state is not None and state.get("cuda") is not None:
            self.cuda_state = torch.as_tensor(state["cuda"], dtype=torch.uint8)


def rank_seed(seed: int, *keys: int) -> int:
    """A seed for this rank's own stream, derived from the job's ``seed`` and ``keys`` (e.g.
    epoch and rank) by NumPy's ``SeedSequence``: distinct keys give independent streams."""
    import numpy as np

    entropy = [int(seed) % 2**64, *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
