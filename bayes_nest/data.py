"""Built-in datasets (offline), user data and loaders, and out-of-distribution helpers.

Every dataset is returned as a :class:`DataBundle`: train, validation and test splits drawn by a
seeded, stratified split, inputs standardized with statistics of the training split only, and
metadata (``name``, ``num_classes``, ``input_shape``). Two datasets are built in and need no
network: scikit-learn's handwritten ``"digits"`` (1797 images of 8×8 pixels, 10 classes) and
``"mnist1d"`` (5000 one-dimensional signals of length 40, 10 classes, generated from the templates
of the ``mnist1d`` package). Users bring arrays (:func:`from_arrays`), ``.npz``/``.csv`` files
(:func:`load_file`) or their own ``DataLoader`` (:func:`as_loader`).
"""

from __future__ import annotations

import csv
import functools
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)
from torch.utils.data import Dataset as TorchDataset

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "DataBundle",
    "HeldOut",
    "Loaders",
    "Split",
    "as_loader",
    "corrupt",
    "from_arrays",
    "held_out_classes",
    "load_dataset",
    "load_file",
    "loaders",
]

DATASETS = ("digits", "mnist1d")
CORRUPTIONS = ("gaussian_noise", "uniform_noise", "shuffle_pixels", "invert")
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
    if standardize == "feature":
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    elif standardize == "global":
        mean, std = np.asarray(x_train.mean()), np.asarray(x_train.std())
    else:
        mean, std = np.asarray(0.0), np.asarray(1.0)
    std = np.where(std < _MIN_STD, 1.0, std)
    splits = {
        key: Split(
            torch.as_tensor((x - mean) / std, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.int64),
        )
        for key, (x, y) in raw.items()
    }
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
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    stratify: bool = True,
    standardize: str | None = "feature",
    val: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    class_names: Sequence[str] | None = None,
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
    xs, ys = checked[""]
    vf = 0.0 if val is not None else _check_fraction(val_fraction, "val_fraction")
    tf = 0.0 if test is not None else _check_fraction(test_fraction, "test_fraction")
    train_idx, val_idx, test_idx = _split_indices(ys, vf, tf, seed, stratify)
    raw = {"train": (xs[train_idx], ys[train_idx])}
    raw["val"] = checked["val"] if val is not None else (xs[val_idx], ys[val_idx])
    raw["test"] = checked["test"] if test is not None else (xs[test_idx], ys[test_idx])
    counts = np.bincount(raw["train"][1], minlength=num_classes)
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        msg = (
            f"class {c} has no example in the training split ({int((ys == c).sum())} in y); "
            "provide more data, lower val_fraction/test_fraction, or pass num_classes"
        )
        if stratify:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=2)
    return _finalize(name, raw, num_classes, standardize, seed, class_names)


def _read_csv(path: Path, label_column: int | str, header: bool | None, delimiter: str):
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path} contains no data rows")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    if header is None:
        header = not all(numeric(c) for c in rows[0])
    names = [c.strip() for c in rows[0]] if header else None
    body = rows[1:] if header else rows
    width = len(rows[0])
    if width < 2:
        raise ValueError(f"{path} needs at least one feature column and a label column")
    if isinstance(label_column, str):
        if names is None or label_column not in names:
            raise ValueError(f"label_column {label_column!r} is not a column of {path}: {names}")
        label_column = names.index(label_column)
    if not -width <= label_column < width:
        raise ValueError(f"label_column={label_column} is out of range for {width} columns")
    label_column %= width
    values = np.empty((len(body), width))
    for i, row in enumerate(body):
        line = i + 1 + int(header)
        if len(row) != width:
            raise ValueError(f"{path} line {line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                what = "label" if j == label_column else "value"
                raise ValueError(
                    f"{path} line {line}, column {j + 1}: non-numeric {what} {cell!r}"
                ) from None
    if not len(body):
        raise ValueError(f"{path} contains a header but no data rows")
    return np.delete(values, label_column, axis=1), values[:, label_column]


def load_file(
    path: str | Path,
    *,
    x_key: str = "x",
    y_key: str = "y",
    label_column: int | str = -1,
    header: bool | None = None,
    delimiter: str = ",",
    **kwargs: Any,
) -> DataBundle:
    """Load a ``.npz`` or ``.csv`` file into a :class:`DataBundle` (via :func:`from_arrays`).

    ``.npz``: arrays ``x_key`` (N, *input_shape) and ``y_key`` (N,); if the file also holds
    ``{x_key}_val``/``{y_key}_val`` or ``{x_key}_test``/``{y_key}_test``, those are used as the
    validation/test split. ``.csv``: one example per row, all columns numeric; the label is
    ``label_column`` (index, or header name; default last); a header row is detected when
    ``header`` is None (first row not all numeric). Other keyword arguments go to
    :func:`from_arrays`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    name = kwargs.pop("name", path.stem)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in (x_key, y_key) if k not in f.files]
            if missing:
                raise ValueError(f"{path} has no array {missing[0]!r}; it holds {f.files}")
            arrays = {k: f[k] for k in f.files}
        for part in ("val", "test"):
            xk, yk = f"{x_key}_{part}", f"{y_key}_{part}"
            if xk in arrays and yk in arrays:
                kwargs.setdefault(part, (arrays[xk], arrays[yk]))
        x, y = arrays[x_key], arrays[y_key]
    elif suffix == ".csv":
        x, y = _read_csv(path, label_column, header, delimiter)
    else:
        raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use .npz or .csv")
    return from_arrays(x, y, name=name, **kwargs)


# ----------------------------------------------------------------------------- built-in data


@functools.lru_cache(maxsize=1)
def _mnist1d_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
            "load_dataset('mnist1d') needs the mnist1d package: pip install 'bayes_nest[data]'"
        ) from e
    # make_dataset reseeds the global `random` and numpy generators: restore them afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        d = make_dataset(get_dataset_args())  # the canonical MNIST-1D examples (its seed 42)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    x, y = np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "load_dataset('digits') needs scikit-learn: pip install 'bayes_nest[data]'"
        ) from e
    d = load_digits()
    return d.data, d.target


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    flat: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    standardize: str | None = "feature",
) -> DataBundle:
    """Load a built-in dataset, offline.

    Parameters
    ----------
    name : {"digits", "mnist1d"}
        ``"digits"``: scikit-learn's handwritten digits, 1797 examples, input shape ``(64,)``
        (``flat=True``) or ``(1, 8, 8)``. ``"mnist1d"``: the 5000 canonical MNIST-1D signals,
        input shape ``(40,)`` or ``(1, 40)``. Both have 10 classes.
    seed : int
        Seed of the stratified split (the examples themselves are fixed).
    flat : bool
        Flat feature vectors for MLPs, or a leading channel axis for conv nets.
    val_fraction, test_fraction, standardize
        As in :func:`from_arrays`.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key == "digits":
        x, y = _digits_raw()
        shape = (64,) if flat else (1, 8, 8)
    elif key == "mnist1d":
        x, y = _mnist1d_raw()
        shape = (40,) if flat else (1, 40)
    else:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets are {DATASETS}")
    return from_arrays(
        np.asarray(x).reshape(len(x), *shape),
        y,
        num_classes=10,
        name=key,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        standardize=standardize,
    )


# ----------------------------------------------------------------------------- loaders


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
