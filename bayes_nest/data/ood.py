"""Out-of-distribution helpers: held-out classes and corrupted inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .bundle import (
    DataBundle,
    Split,
    _finalize,
    _to_numpy,
)

CORRUPTIONS = ("gaussian_noise", "uniform_noise", "shuffle_pixels", "invert")


class HeldOut(NamedTuple):
    """Result of :func:`held_out_classes`."""

    in_distribution: DataBundle
    ood: DataBundle
    class_map: dict[int, int]


def held_out_classes(bundle: DataBundle, classes: Sequence[int]) -> HeldOut:
    """Split a bundle into in-distribution classes and held-out (OOD) classes.

    ``in_distribution`` keeps the other classes, relabelled ``0..K'-1`` in increasing order of
    their original label (``class_map[original] = new``), and is re-standardized with the
    statistics of its own training split, so nothing of the held-out classes leaks into it.
    ``ood`` holds the held-out examples of each split, standardized the same way, with their
    original labels and ``num_classes`` of the original bundle.
    """
    held = sorted({int(c) for c in ([classes] if isinstance(classes, int) else classes)})
    if not held or any(not 0 <= c < bundle.num_classes for c in held):
        raise ValueError(f"classes must be labels in [0, {bundle.num_classes}), got {classes!r}")
    kept = [c for c in range(bundle.num_classes) if c not in held]
    if len(kept) < 2:
        raise ValueError(f"holding out {held} leaves {len(kept)} class; at least 2 must remain")
    class_map = {c: i for i, c in enumerate(kept)}
    lookup = torch.full((bundle.num_classes,), -1, dtype=torch.int64)
    lookup[kept] = torch.arange(len(kept))
    raw_in, raw_out = {}, {}
    for key, (x, y) in bundle.splits.items():
        x = (x.double() * bundle.std.double() + bundle.mean.double()).numpy()
        is_out = torch.isin(y, torch.tensor(held)).numpy()
        raw_in[key] = (x[~is_out], lookup[y[~is_out]].numpy())
        raw_out[key] = (x[is_out], y[is_out].numpy())
    names = [bundle.class_names[c] for c in kept]
    in_dist = _finalize(bundle.name, raw_in, len(kept), bundle.standardize, bundle.seed, names)
    mean, std = in_dist.mean.double().numpy(), in_dist.std.double().numpy()
    ood_splits = {
        k: Split(torch.as_tensor((x - mean) / std, dtype=torch.float32), torch.as_tensor(y))
        for k, (x, y) in raw_out.items()
    }
    ood = DataBundle(
        name=f"{bundle.name}-ood",
        **ood_splits,
        num_classes=bundle.num_classes,
        input_shape=bundle.input_shape,
        mean=in_dist.mean,
        std=in_dist.std,
        standardize=bundle.standardize,
        seed=bundle.seed,
        class_names=bundle.class_names,
    )
    return HeldOut(in_dist, ood, class_map)


def corrupt(x: Any, kind: str, severity: float = 1.0, *, seed: int = 0) -> Any:
    """Corrupt or replace inputs to make shifted or out-of-distribution data.

    Parameters
    ----------
    x : tensor or array of shape (N, *input_shape)
    kind : {"gaussian_noise", "uniform_noise", "shuffle_pixels", "invert"}
        * ``"gaussian_noise"``/``"uniform_noise"``: ``mu + sqrt(1 - s^2) (x - mu) + s sigma eps``
          with per-feature mean ``mu`` and std ``sigma`` of ``x`` over the batch (N >= 2) and
          ``eps`` standard normal, or uniform on ``[-sqrt(3), sqrt(3)]`` (unit variance). The
          per-feature mean and variance are preserved; ``s = 1`` gives pure noise inputs.
        * ``"shuffle_pixels"``: in each example, a random ``round(s F)`` of the ``F`` positions
          are permuted among themselves (``s = 1``: a full random permutation per example).
        * ``"invert"``: ``x + s (max + min - 2 x)`` with the example's own min and max
          (``s = 1``: the example reflected within its range, like a photographic negative).
    severity : float in [0, 1]
        ``s`` above; 0 returns ``x`` unchanged.
    seed : int
        Seed of a private ``torch.Generator``; global random state is untouched.

    Returns
    -------
    Same type (tensor or numpy array), shape and dtype as ``x``.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption kind {kind!r}; choose one of {CORRUPTIONS}")
    if isinstance(severity, bool) or not isinstance(severity, (int, float)):
        raise TypeError(f"severity must be a number in [0, 1], got {severity!r}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity!r}")
    is_tensor = torch.is_tensor(x)
    t = x if is_tensor else torch.as_tensor(_to_numpy(x, "x"))
    if t.ndim < 2 or not t.is_floating_point():
        raise ValueError(f"x must be a float array of shape (N, *input_shape), got {t.shape}")
    g = torch.Generator().manual_seed(seed)
    flat = t.detach().double().reshape(len(t), -1)
    s = float(severity)
    if kind in ("gaussian_noise", "uniform_noise"):
        if len(flat) < 2:
            raise ValueError(f"{kind} needs a batch of N >= 2 examples for its statistics")
        mu, sigma = flat.mean(0), flat.std(0, unbiased=False)
        if kind == "gaussian_noise":
            eps = torch.randn(flat.shape, generator=g, dtype=torch.float64)
        else:
            eps = (torch.rand(flat.shape, generator=g, dtype=torch.float64) * 2 - 1) * 3**0.5
        out = mu + (1 - s**2) ** 0.5 * (flat - mu) + s * sigma * eps
    elif kind == "shuffle_pixels":
        out = flat.clone()
        count = round(s * flat.shape[1])
        for i in range(len(flat)):
            where = torch.randperm(flat.shape[1], generator=g)[:count]
            out[i, where] = flat[i, where[torch.randperm(count, generator=g)]]
    else:
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        out = flat + s * (hi + lo - 2 * flat)
    out = out.reshape(t.shape).to(t.dtype)
    return out if is_tensor else out.numpy()
