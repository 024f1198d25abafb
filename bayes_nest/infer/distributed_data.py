"""Data of data-parallel training: a user ``DataLoader`` sharded over processes.

See :mod:`bayes_nest.infer.distributed` for the data order this produces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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

__all__ = ["distributed_sampler", "set_epoch", "shard_loader"]


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
