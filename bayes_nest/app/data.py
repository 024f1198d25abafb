"""Data for the main job: built-in sets or user files, and data in a trained model's terms.

`load_data` reads a built-in dataset or a user file; `data_for` reads data for a trained model,
in that model's splits, class count and standardization, and rejects data it cannot take
(other input shapes, unknown labels, NaNs).

Examples
--------
>>> import bayes_nest as bn
>>> data = bn.load_data("digits", flat=True)
>>> data.input_shape, data.num_classes
((64,), 10)
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import torch

from .._files import require_file
from ..data import (
    DATASETS,
    SEGMENTATION_DATASETS,
    DataBundle,
    Split,
    load_dataset,
    load_file,
)
from ..defaults import SPLIT_DEFAULTS
from .model_file import TrainedModel

__all__ = ["apply_standardization", "data_for", "load_data"]


def apply_standardization(bundle: DataBundle, mean: torch.Tensor, std: torch.Tensor) -> DataBundle:
    """Re-express a bundle loaded with ``standardize=None`` in a trained model's standardization
    ``(x - mean) / std`` (the statistics of the model's own training split)."""
    splits = {}
    for key, split in bundle.splits.items():
        scaled = ((split.x.double() - mean.double()) / std.double()).float()
        bad = ~torch.isfinite(scaled).flatten(1).all(dim=1)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"the {key} inputs hold values too large for float32 once standardized with "
                f"the model's statistics (e.g. {float(split.x[first].abs().max()):g} in "
                f"example {first}); the data are far outside the range the model was trained on"
            )
        splits[key] = Split(scaled, split.y)
    return dataclasses.replace(bundle, **splits, mean=mean, std=std, standardize="model")


def load_data(
    source: str | os.PathLike,
    *,
    flat: bool = True,
    seed: int = SPLIT_DEFAULTS["seed"],
    val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
    test_fraction: float = SPLIT_DEFAULTS["test_fraction"],
    standardize: str | None = "feature",
    label_column: int | str | None = None,
    num_classes: int | None = None,
    stratify: bool = True,
    require_all_classes: bool = True,
) -> DataBundle:
    """A built-in dataset by name (``"digits"``, ``"mnist1d"``) or a ``.npz``/``.csv`` file.

    A name that is also an existing file is read as the file. ``flat`` selects flat vectors or
    images for built-in sets; the other arguments go to `load_dataset`
    or `load_file` (``label_column`` for CSV files only; ``require_all_classes=False``
    accepts files without examples of some class, e.g. for evaluation).

    Raises
    ------
    FileNotFoundError
        For a path that does not exist (a folder or a device is named as such).
    ValueError
        For unreadable files and bad contents (see `from_arrays`).
    """
    text = os.fspath(source)
    split = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if text.lower() in SEGMENTATION_DATASETS and not os.path.exists(text):
        raise ValueError(
            f"{text!r} is a segmentation dataset; train a segmentation model on it "
            "(--task segmentation, model 'unet')"
        )
    if text.lower() in DATASETS and not os.path.exists(text):
        if label_column is not None:
            raise ValueError(
                f"label_column={label_column!r} applies to CSV files only, not to the built-in "
                f"dataset {text!r}"
            )
        bundle = load_dataset(text, flat=flat, standardize=standardize, **split)
        if num_classes is not None and num_classes != bundle.num_classes:
            raise ValueError(
                f"{text} has {bundle.num_classes} classes, the model expects {num_classes}"
            )
        return bundle
    if not os.path.exists(text):
        raise FileNotFoundError(
            f"data file {text!r} does not exist (built-in datasets: {', '.join(DATASETS)})"
        )
    require_file(text, "data file")
    from .segmentation import holds_segmentation_arrays

    if holds_segmentation_arrays(text):
        raise ValueError(
            f"{text!r} holds segmentation data (images and masks, no x/y); train a "
            "segmentation model on it (--task segmentation, model 'unet')"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class missing from a small evaluation file
        return load_file(
            text,
            label_column=label_column,
            standardize=standardize,
            num_classes=num_classes,
            stratify=stratify,
            require_all_classes=require_all_classes,
            **split,
        )


def data_for(
    model: TrainedModel, source: str | os.PathLike, *, whole: bool = False, **kwargs: Any
) -> DataBundle:
    """Load data for a trained model: the splits it was trained with (same split seed and
    fractions, from `TrainedModel.data`), its class count, and its standardization.

    Parameters
    ----------
    model : TrainedModel
    source : str or path
        As in `load_data`.
    whole : bool
        Put every example of the file into the test split (new data the model has not seen),
        including predefined ``x_val``/``x_test`` arrays of a ``.npz`` file.
    **kwargs
        Override the stored loading options (e.g. ``label_column`` of a CSV file); a file need
        not hold examples of every class the model knows.

    Raises
    ------
    ValueError
        For inputs of another shape than the model's, labels it does not know, NaNs.

    A segmentation model gets a `bayes_nest.data.SegmentationBundle` (see
    `bayes_nest.app.segmentation.segmentation_data_for`).
    """
    if model.task == "segmentation":
        from .segmentation import segmentation_data_for

        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} do not apply to segmentation data")
        return segmentation_data_for(model, source, whole=whole)
    stored = {**SPLIT_DEFAULTS, "label_column": None}
    opts = {k: model.data.get(k, default) for k, default in stored.items()}
    if not os.fspath(source).lower().endswith(".csv"):
        opts["label_column"] = None  # the stored default of a model trained on a CSV file
    opts.update(kwargs)
    if whole:
        opts.update(val_fraction=0.0, test_fraction=0.0, stratify=False)
    bundle = load_data(
        source,
        flat=model.spec.flat,
        standardize=None,
        num_classes=model.num_classes,
        require_all_classes=False,
        **opts,
    )
    if tuple(bundle.input_shape) != tuple(model.input_shape):
        raise ValueError(
            f"{os.fspath(source)} has examples of shape {tuple(bundle.input_shape)}, but the "
            f"model was trained on examples of shape {tuple(model.input_shape)}"
        )
    bundle = apply_standardization(bundle, model.mean, model.std)
    if whole:
        parts = [s for s in (bundle.train, bundle.val, bundle.test) if len(s.y)]
        every = Split(torch.cat([s.x for s in parts]), torch.cat([s.y for s in parts]))
        bundle = dataclasses.replace(bundle, test=every)
    return bundle
