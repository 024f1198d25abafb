"""Data bundles: validated, split and standardized arrays (:func:`from_arrays`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
)

from ..defaults import SPLIT_DEFAULTS

_STANDARDIZE = ("feature", "global", None)
_MIN_STD = 1e-8


class Split(NamedTuple):
    """One split of a dataset: inputs ``x`` of shape ``(N, *input_shape)`` (float32) and labels
    ``y`` of shape ``(N,)`` (int64). A plain tuple, so ``x, y = bundle.train`` works."""

    x: torch.Tensor
    y: torch.Tensor


class Loaders(NamedTuple):
    """Train, validation and test ``DataLoader`` objects returned by :func:`loaders`."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


@dataclass(frozen=True, repr=False)
class DataBundle:
    """A classification dataset split into train, validation and test parts.

    Inputs are standardized as ``(x_raw - mean) / std`` with ``mean`` and ``std`` computed on
    the training split only (per feature, or one scalar for ``standardize="global"``; features
    that are constant in the training split keep ``std = 1``).

    Attributes
    ----------
    name : str
    train, val, test : Split
    num_classes : int
        Labels are integers in ``[0, num_classes)``.
    input_shape : tuple of int
        Shape of one example, e.g. ``(64,)`` or ``(1, 8, 8)``.
    mean, std : torch.Tensor
        Standardization statistics, broadcastable to ``input_shape``.
    standardize : str or None
        ``"feature"``, ``"global"`` or ``None``.
    seed : int
        Seed of the split.
    class_names : tuple of str
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    mean: torch.Tensor
    std: torch.Tensor
    standardize: str | None
    seed: int
    class_names: tuple[str, ...]

    @property
    def splits(self) -> dict[str, Split]:
        """The three splits by name."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def num_features(self) -> int:
        """Number of input values per example, ``prod(input_shape)``."""
        return int(np.prod(self.input_shape))

    def transform(self, x: Any) -> torch.Tensor:
        """Standardize raw inputs of shape ``(N, *input_shape)`` with the training statistics."""
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x has example shape {tuple(x.shape[1:])}, expected input_shape {self.input_shape}"
            )
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(s.y)}" for k, s in self.splits.items())
        return (
            f"DataBundle(name={self.name!r}, {sizes}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, standardize={self.standardize!r}, seed={self.seed})"
        )


# ----------------------------------------------------------------------------- validation


def _to_numpy(a: Any, arg: str) -> np.ndarray:
    if torch.is_tensor(a):
        return a.detach().cpu().numpy()
    out = np.asarray(a)
    if out.dtype == object or not (np.issubdtype(out.dtype, np.number) or out.dtype == bool):
        raise TypeError(f"{arg} must be a numeric array or tensor, got dtype {out.dtype}")
    return out


def _check_inputs(x: Any, arg: str = "x") -> np.ndarray:
    x = _to_numpy(x, arg)
    if x.ndim < 2:
        raise ValueError(f"{arg} must have shape (N, *input_shape) with ndim >= 2, got {x.shape}")
    if np.iscomplexobj(x):
        raise TypeError(f"{arg} must be real-valued, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    bad_nan, bad_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if bad_nan or bad_inf:
        first = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
        raise ValueError(
            f"{arg} contains {bad_nan} NaN and {bad_inf} infinite values (first in example "
            f"{first}); remove or impute them first"
        )
    return x


def _check_labels(y: Any, arg: str = "y", num_classes: int | None = None) -> np.ndarray:
    y = _to_numpy(y, arg)
    if y.ndim != 1:
        raise ValueError(f"{arg} must have shape (N,), got {y.shape}")
    if np.issubdtype(y.dtype, np.floating) or np.iscomplexobj(y):
        finite = np.isfinite(y)
        if not finite.all():
            raise ValueError(f"{arg} contains {int((~finite).sum())} NaN or infinite labels")
        frac = y != np.round(y.real)
        if frac.any():
            raise ValueError(
                f"{arg} contains {int(frac.sum())} non-integer labels (e.g. {y[frac][0]}); labels "
                "must be integer class indices"
            )
        huge = np.abs(y.real) >= 2**62  # would overflow the cast to int64
        if huge.any():
            raise ValueError(
                f"{arg} contains {int(huge.sum())} labels too large to be class indices "
                f"(e.g. {y[huge][0]})"
            )
    if y.dtype.kind == "u" and (y > 2**62).any():  # would wrap around in the cast to int64
        huge = y > 2**62
        raise ValueError(
            f"{arg} contains {int(huge.sum())} labels out of range for class indices "
            f"(e.g. {y[huge][0]})"
        )
    y = y.real.astype(np.int64)
    if (y < 0).any():
        raise ValueError(
            f"{arg} contains {int((y < 0).sum())} negative labels (e.g. {y[y < 0][0]}); labels "
            "must be class indices in [0, num_classes)"
        )
    if num_classes is not None and (y >= num_classes).any():
        bad = y >= num_classes
        raise ValueError(
            f"{arg} contains {int(bad.sum())} unknown labels outside [0, {num_classes}) "
            f"(e.g. {y[bad][0]}) for num_classes={num_classes}"
        )
    return y


def _check_fraction(value: float, arg: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{arg} must be a number in [0, 1), got {value!r}")
    return float(value)


def _split_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(y))`` into (train, val, test) indices.

    Stratified: every example gets the key ``(rank + 1/2) / n_c`` from a random rank inside its
    class of size ``n_c``; the ``round(N f_test)`` smallest keys form the test split, the next
    ``round(N f_val)`` the validation split. Each class then has ``n_c f ± 1`` examples per split.
    """
    n = len(y)
    rng = np.random.default_rng(seed)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_test - n_val < 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training "
            f"examples out of {n}"
        )
    if stratify:
        key = np.empty(n)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            key[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + 0.5) / len(idx)
        order = np.lexsort((rng.random(n), key))
    else:
        order = rng.permutation(n)
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return rng.permutation(train), val, test


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_statistics(mean: np.ndarray, std: np.ndarray) -> None:
    """The standardization statistics must be finite in float32, in which they are stored."""
    for name, stat in (("mean", mean), ("std", std)):
        stat = np.asarray(stat)
        bad = ~np.isfinite(stat) | (np.abs(stat) > _FLOAT32_MAX)
        if bad.any():
            where = np.unravel_index(int(np.flatnonzero(bad.reshape(-1))[0]), stat.shape)
            at = f" of feature {where if len(where) > 1 else int(where[0])}" if where else ""
            raise ValueError(
                f"the training inputs have a {name}{at} of {float(stat[where]):g}, beyond the "
                f"float32 range (|value| <= {_FLOAT32_MAX:.3g}) the model computes in; rescale "
                "the inputs (e.g. divide by a power of ten, or take logarithms)"
            )


def _check_float32(scaled: torch.Tensor, x: np.ndarray, key: str, standardize: Any) -> None:
    """Inputs finite in float64 must stay finite in float32 after standardization."""
    bad = ~torch.isfinite(scaled)
    if bad.any():
        first = int(bad.reshape(len(scaled), -1).any(dim=1).nonzero()[0, 0])
        big = float(np.abs(x[first]).max())
        how = "standardized" if standardize else "raw"
        raise ValueError(
            f"the {key} inputs hold values too large for float32 once {how} (e.g. "
            f"{big:g} in example {first}; |value| <= {_FLOAT32_MAX:.3g}); rescale the inputs"
        )


def _finalize(
    name: str,
    raw: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    standardize: str | None,
    seed: int,
    class_names: Sequence[str] | None,
) -> DataBundle:
    if standardize not in _STANDARDIZE:
        raise ValueError(f"standardize must be one of {_STANDARDIZE}, got {standardize!r}")
    x_train = raw["train"][0]
    input_shape = tuple(int(s) for s in x_train.shape[1:])
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        if standardize == "feature":
            mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        elif standardize == "global":
            mean, std = np.asarray(x_train.mean()), np.asarray(x_train.std())
        else:
            mean, std = np.asarray(0.0), np.asarray(1.0)
        std = np.where(std < _MIN_STD, 1.0, std)
    _check_statistics(mean, std)
    splits = {}
    for key, (x, y) in raw.items():
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = torch.as_tensor((x - mean) / std, dtype=torch.float32)
        _check_float32(scaled, x, key, standardize)
        splits[key] = Split(scaled, torch.as_tensor(y, dtype=torch.int64))
    names = tuple(str(c) for c in (class_names if class_names is not None else range(num_classes)))
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries for num_classes={num_classes}")
    return DataBundle(
        name=name,
        **splits,
        num_classes=int(num_classes),
        input_shape=input_shape,
        mean=torch.as_tensor(mean, dtype=torch.float32),
        std=torch.as_tensor(std, dtype=torch.float32),
        standardize=standardize,
        seed=seed,
        class_names=names,
    )


# ----------------------------------------------------------------------------- user data


def from_arrays(
    x: Any,
    y: Any,
    *,
    num_classes: int | None = None,
    name: str = "custom",
    seed: int = SPLIT_DEFAULTS["seed"],
    val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
    test_fraction: float = SPLIT_DEFAULTS["test_fraction"],
    stratify: bool = True,
    standardize: str | None = "feature",
    val: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    class_names: Sequence[str] | None = None,
    require_all_classes: bool = True,
) -> DataBundle:
    """Build a :class:`DataBundle` from user arrays (numpy or torch).

    Parameters
    ----------
    x : array of shape (N, *input_shape)
        Finite numeric inputs.
    y : array of shape (N,)
        Integer class labels in ``[0, num_classes)``.
    num_classes : int, optional
        Number of classes K; inferred as ``max(y) + 1`` when omitted.
    seed : int
        Seed of the split.
    val_fraction, test_fraction : float
        Fractions of the N examples put in the validation and test splits (ignored for a split
        given explicitly through ``val``/``test``).
    stratify : bool
        Keep class proportions equal across splits (up to one example per class).
    standardize : {"feature", "global", None}
        Per-feature or single-scalar standardization with training statistics, or none.
    val, test : (x, y) tuple, optional
        Predefined validation/test data instead of a split of ``x``.
    require_all_classes : bool
        Require a training example of every class (set ``False`` for data that are only
        evaluated, which may lack some of the ``num_classes`` classes).

    Raises
    ------
    ValueError
        Mismatched shapes, NaN/inf inputs, non-integer, negative or unknown labels, a class
        with no training example, or fractions leaving no training data.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    arrays = {"": (x, y)}
    for key, pair in (("val", val), ("test", test)):
        if pair is not None:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"{key} must be an (x, y) pair, got {type(pair).__name__}")
            arrays[key] = pair
    checked = {}
    for key, (xs, ys) in arrays.items():
        tag = f"{key}[0]" if key else "x"
        xs = _check_inputs(xs, tag)
        ys = _check_labels(ys, f"{key}[1]" if key else "y", num_classes)
        if len(xs) != len(ys):
            raise ValueError(f"{tag} has {len(xs)} examples but its labels have {len(ys)}")
        if key and xs.shape[1:] != checked[""][0].shape[1:]:
            raise ValueError(
                f"{tag} has example shape {xs.shape[1:]}, x has {checked[''][0].shape[1:]}"
            )
        checked[key] = (xs, ys)
    if num_classes is None:
        num_classes = max(int(ys.max()) + 1 if len(ys) else 0 for _, ys in checked.values())
        if num_classes < 2:
            raise ValueError(f"y must contain at least 2 classes, found {num_classes}")
        examples = sum(len(ys) for _, ys in checked.values())
        if num_classes > examples:  # e.g. a stray label 10**9: no per-class arrays that large
            raise ValueError(
                f"the largest label is {num_classes - 1} but there are only {examples} examples; "
                "labels must be class indices 0..K-1 (relabel them, e.g. with "
                "numpy.unique(y, return_inverse=True), or pass num_classes)"
            )
    xs, ys = checked[""]
    vf = 0.0 if val is not None else _check_fraction(val_fraction, "val_fraction")
    tf = 0.0 if test is not None else _check_fraction(test_fraction, "test_fraction")
    train_idx, val_idx, test_idx = _split_indices(ys, vf, tf, seed, stratify)
    raw = {"train": (xs[train_idx], ys[train_idx])}
    raw["val"] = checked["val"] if val is not None else (xs[val_idx], ys[val_idx])
    raw["test"] = checked["test"] if test is not None else (xs[test_idx], ys[test_idx])
    counts = np.bincount(raw["train"][1], minlength=num_classes)
    if require_all_classes and (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        total = int((ys == c).sum())
        fix = (
            "labels must be class indices 0..K-1 with an example of every class (relabel them)"
            if total == 0
            else "provide more examples of it, or smaller validation/test fractions"
        )
        msg = f"class {c} has no example in the training split ({total} in y); {fix}"
        if stratify:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=2)
    return _finalize(name, raw, num_classes, standardize, seed, class_names)
