r"""Segmentation datasets with several annotations per image: splits, user data, loaders.

A :class:`SegmentationBundle` holds train, validation and test :class:`SegmentationSplit`\ s of
images ``(N, C, H, W)`` (standardized with training statistics) and binary annotator masks
``(N, A, H, W)``. Build one from the built-in lesion set (:func:`load_segmentation`), from arrays
(:func:`segmentation_from_arrays`) or from an ``.npz`` file with ``images`` and ``masks``
(:func:`load_segmentation_file`). Training on one random annotator per example and step, as is
standard for ambiguous segmentation, is :class:`RandomAnnotatorDataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..defaults import SPLIT_DEFAULTS
from .bundle import _check_fraction, _split_indices
from .segmentation import LesionTruth, check_segmentation_arrays, make_lesions

__all__ = [
    "SEGMENTATION_DATASETS",
    "RandomAnnotatorDataset",
    "SegmentationBundle",
    "SegmentationSplit",
    "load_segmentation",
    "load_segmentation_file",
    "segmentation_from_arrays",
]

SEGMENTATION_DATASETS = ("lesions",)
_STANDARDIZE = ("channel", None)


class SegmentationSplit(NamedTuple):
    """One split: images ``x`` ``(N, C, H, W)`` float32 and annotator ``masks`` ``(N, A, H, W)``
    float32 in {0, 1}. A plain tuple, so ``x, masks = bundle.train`` works."""

    x: torch.Tensor
    masks: torch.Tensor


@dataclass(frozen=True, repr=False)
class SegmentationBundle:
    """An ambiguous-segmentation dataset split into train, validation and test parts.

    Attributes
    ----------
    name : str
    train, val, test : SegmentationSplit
    input_shape : tuple of int
        ``(C, H, W)`` of one image.
    num_annotators : int
        Annotations per image ``A``.
    mean, std : torch.Tensor, shape ``(C, 1, 1)``
        Per-channel standardization statistics of the training images.
    seed : int
        Seed of the split (and of the generator for built-in data).
    truth : dict of str to LesionTruth, optional
        The true annotator distribution of each split (built-in data only).
    """

    name: str
    train: SegmentationSplit
    val: SegmentationSplit
    test: SegmentationSplit
    input_shape: tuple[int, ...]
    num_annotators: int
    mean: torch.Tensor
    std: torch.Tensor
    seed: int
    truth: dict[str, LesionTruth] | None = None

    @property
    def splits(self) -> dict[str, SegmentationSplit]:
        """The three splits by name."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(s.x)}" for k, s in self.splits.items())
        return (
            f"SegmentationBundle(name={self.name!r}, {sizes}, input_shape={self.input_shape}, "
            f"num_annotators={self.num_annotators}, seed={self.seed})"
        )


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def segmentation_from_arrays(
    images: Any,
    masks: Any,
    *,
    name: str = "custom",
    seed: int = SPLIT_DEFAULTS["seed"],
    val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
    test_fraction: float = SPLIT_DEFAULTS["test_fraction"],
    standardize: str | None = "channel",
    truth: LesionTruth | None = None,
) -> SegmentationBundle:
    """Build a :class:`SegmentationBundle` from user arrays (numpy or torch).

    Parameters
    ----------
    images : array, shape ``(N, C, H, W)``
        Finite numeric images.
    masks : array, shape ``(N, A, H, W)``
        Binary annotations (0/1 or bool), ``A >= 1`` per image.
    seed : int
        Seed of the random split.
    val_fraction, test_fraction : float
        Fractions of the images put in the validation and test splits.
    standardize : {"channel", None}
        Subtract the training images' per-channel mean and divide by their standard deviation.
    truth : LesionTruth, optional
        The annotator distribution of the ``N`` images, split along with them.

    Raises
    ------
    ValueError
        Wrong shapes, NaN/inf pixels, non-binary masks, or fractions leaving no training image.
    """
    seed = _check_seed(seed)
    x, m = check_segmentation_arrays(images, masks)
    if standardize not in _STANDARDIZE:
        raise ValueError(f"standardize must be one of {_STANDARDIZE}, got {standardize!r}")
    if truth is not None and len(truth) != len(x):
        raise ValueError(f"truth describes {len(truth)} images but there are {len(x)}")
    vf = _check_fraction(val_fraction, "val_fraction")
    tf = _check_fraction(test_fraction, "test_fraction")
    indices = dict(
        zip(("train", "val", "test"), _split_indices(m, vf, tf, seed, False), strict=True)
    )
    train_x = x[indices["train"]]
    if standardize == "channel":
        mean = train_x.mean(axis=(0, 2, 3), keepdims=True)[0]
        std = train_x.std(axis=(0, 2, 3), keepdims=True)[0]
        std = np.where(std < 1e-8, 1.0, std)
    else:
        mean, std = np.zeros((x.shape[1], 1, 1)), np.ones((x.shape[1], 1, 1))
    splits = {
        key: SegmentationSplit(
            torch.as_tensor((x[idx] - mean) / std, dtype=torch.float32),
            torch.as_tensor(m[idx], dtype=torch.float32),
        )
        for key, idx in indices.items()
    }
    return SegmentationBundle(
        name=name,
        **splits,
        input_shape=tuple(int(s) for s in x.shape[1:]),
        num_annotators=int(m.shape[1]),
        mean=torch.as_tensor(mean, dtype=torch.float32),
        std=torch.as_tensor(std, dtype=torch.float32),
        seed=seed,
        truth=None if truth is None else {k: truth[idx] for k, idx in indices.items()},
    )


def load_segmentation(
    name: str = "lesions",
    *,
    num_images: int = 1000,
    size: int = 32,
    annotators: int = 4,
    seed: int = SPLIT_DEFAULTS["seed"],
    val_fraction: float = SPLIT_DEFAULTS["val_fraction"],
    test_fraction: float = SPLIT_DEFAULTS["test_fraction"],
) -> SegmentationBundle:
    """The built-in ambiguous lesion-segmentation set, generated offline.

    Parameters
    ----------
    name : {"lesions"}
        See :func:`~bayes_nest.data.segmentation.make_lesions` for how it is generated.
    num_images, size, annotators
        Number of images, their side in pixels, and annotations per image.
    seed : int
        Seed of the generator and of the split.
    val_fraction, test_fraction : float
        As in :func:`segmentation_from_arrays`.

    Examples
    --------
    >>> from bayes_nest.data import load_segmentation
    >>> data = load_segmentation(num_images=100, seed=0)
    >>> data.train.x.shape, data.train.masks.shape
    (torch.Size([70, 1, 32, 32]), torch.Size([70, 4, 32, 32]))
    """
    key = str(name).lower()
    if key not in SEGMENTATION_DATASETS:
        raise ValueError(
            f"unknown segmentation dataset {name!r}; built-in ones are {SEGMENTATION_DATASETS}"
        )
    images, masks, truth = make_lesions(
        num_images, size=size, annotators=annotators, seed=_check_seed(seed)
    )
    return segmentation_from_arrays(
        images,
        masks,
        name=key,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        truth=truth,
    )


def load_segmentation_file(
    path: str | os.PathLike, *, images_key: str = "images", masks_key: str = "masks", **kwargs
) -> SegmentationBundle:
    """Load a user's ``.npz`` with ``images (N, C, H, W)`` and ``masks (N, A, H, W)``.

    Further keyword arguments go to :func:`segmentation_from_arrays` (the name defaults to the
    file's stem).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path!r} is not a readable .npz archive: {err}") from err
    with archive:
        found = sorted(archive.files) if hasattr(archive, "files") else None
        if found is None:
            raise ValueError(f"{path!r} holds a single array; save images and masks with np.savez")
        missing = [k for k in (images_key, masks_key) if k not in found]
        if missing:
            raise ValueError(
                f"{path!r} has no array {missing[0]!r}; it holds {found}. Save images "
                f"(N, C, H, W) as {images_key!r} and masks (N, A, H, W) as {masks_key!r}"
            )
        images, masks = archive[images_key], archive[masks_key]
    kwargs.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return segmentation_from_arrays(images, masks, **kwargs)


class RandomAnnotatorDataset(Dataset):
    """Image and the mask of one annotator drawn uniformly at random at every access.

    The standard way to train on several annotations per image: over the epochs every image
    is seen with all of its annotations, in proportion. Draws come from a ``torch.Generator``
    seeded with ``seed``, so a run with a seeded loader is reproducible.

    Parameters
    ----------
    split : SegmentationSplit or (images, masks) pair
        Images ``(N, C, H, W)`` and masks ``(N, A, H, W)``.
    seed : int
        Seed of the annotator draws.

    Notes
    -----
    Items are ``(image (C, H, W), mask (1, H, W))``, both float32.
    """

    def __init__(self, split: SegmentationSplit | tuple[Any, Any], *, seed: int = 0) -> None:
        if not isinstance(split, tuple | list) or len(split) != 2:
            raise TypeError(f"split must be an (images, masks) pair, got {type(split).__name__}")
        x, m = check_segmentation_arrays(*split)
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.masks = torch.as_tensor(m, dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(_check_seed(seed))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = int(torch.randint(self.masks.shape[1], (), generator=self.generator))
        return self.x[index], self.masks[index, a : a + 1]
