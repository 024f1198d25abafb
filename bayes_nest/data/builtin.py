"""Built-in datasets generated offline: scikit-learn digits and MNIST-1D."""

from __future__ import annotations

import functools
import random

import numpy as np

from ..defaults import SPLIT_DEFAULTS
from .bundle import (
    DataBundle,
    from_arrays,
)

DATASETS = ("digits", "mnist1d")


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
    seed: int = SPLIT_DEFAULTS["seed"],
    flat: bool = True,
    val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
    test_fraction: float = SPLIT_DEFAULTS["test_fraction"],
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
