"""DataLoaders for bundles, splits, array pairs and user loaders."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)
from torch.utils.data import Dataset as TorchDataset

from .bundle import (
    DataBundle,
    Loaders,
    _check_labels,
    _to_numpy,
)


def as_loader(
    data: Any, batch_size: int = 128, *, shuffle: bool = False, seed: int = 0, drop_last=False
) -> DataLoader:
    """Return a ``DataLoader`` for ``data``.

    ``data`` may be a ``DataLoader`` (returned unchanged), a ``torch.utils.data.Dataset``, or an
    ``(x, y)`` pair of tensors or arrays such as a bundle's :class:`Split`. Numpy inputs become
    float32 ``x`` and int64 ``y``; tensors are used as they are. Pairs are served a whole batch
    per indexing operation (several times faster than per-example collation). Shuffling uses a
    ``torch.Generator`` seeded with ``seed``, so the batch order is reproducible.
    """
    if isinstance(data, DataLoader):
        return data
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, DataBundle):
        raise TypeError("as_loader takes one split (e.g. bundle.train); use loaders(bundle)")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if isinstance(data, TorchDataset):
        return DataLoader(
            data, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
        )
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            "data must be a DataLoader, a torch Dataset or an (x, y) pair, "
            f"got {type(data).__name__}"
        )
    x, y = data
    if not torch.is_tensor(x):
        x = torch.as_tensor(_to_numpy(x, "x"), dtype=torch.float32)
    if not torch.is_tensor(y):
        y = torch.as_tensor(_check_labels(y, "y"), dtype=torch.int64)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    dataset = TensorDataset(x, y)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last))


def loaders(
    bundle: DataBundle, batch_size: int = 128, *, seed: int = 0, shuffle_train: bool = True
) -> Loaders:
    """Train/validation/test loaders of a bundle; only the training loader shuffles (seeded)."""
    if not isinstance(bundle, DataBundle):
        raise TypeError(f"bundle must be a DataBundle, got {type(bundle).__name__}")
    return Loaders(
        as_loader(bundle.train, batch_size, shuffle=shuffle_train, seed=seed),
        as_loader(bundle.val, batch_size),
        as_loader(bundle.test, batch_size),
    )


# ----------------------------------------------------------------------------- OOD helpers
