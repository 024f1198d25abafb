"""Built-in datasets (offline), user data and loaders, and out-of-distribution helpers.

Every dataset is returned as a :class:`DataBundle`: train, validation and test splits drawn by a
seeded, stratified split, inputs standardized with statistics of the training split only, and
metadata (``name``, ``num_classes``, ``input_shape``). Two datasets are built in and need no
network: scikit-learn's handwritten ``"digits"`` (1797 images of 8×8 pixels, 10 classes) and
``"mnist1d"`` (5000 one-dimensional signals of length 40, 10 classes, generated from the templates
of the ``mnist1d`` package). Users bring arrays (:func:`from_arrays`), ``.npz``/``.csv`` files
(:func:`load_file`) or their own ``DataLoader`` (:func:`as_loader`).

Segmentation with several annotators per image has its own bundle
(:class:`SegmentationBundle`): a built-in procedural lesion set whose annotator distribution is
known (:func:`load_segmentation`), user arrays (:func:`segmentation_from_arrays`) and ``.npz``
files (:func:`load_segmentation_file`).
"""

from ..defaults import SPLIT_DEFAULTS
from .builtin import DATASETS, load_dataset
from .bundle import DataBundle, Loaders, Split, from_arrays
from .files import load_file
from .loading import as_loader, loaders
from .ood import CORRUPTIONS, HeldOut, corrupt, held_out_classes
from .segmentation import LesionTruth, make_lesions
from .segmentation_bundle import (
    SEGMENTATION_DATASETS,
    RandomAnnotatorDataset,
    SegmentationBundle,
    SegmentationSplit,
    load_segmentation,
    load_segmentation_file,
    segmentation_from_arrays,
)

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "DataBundle",
    "HeldOut",
    "LesionTruth",
    "Loaders",
    "RandomAnnotatorDataset",
    "SEGMENTATION_DATASETS",
    "SPLIT_DEFAULTS",
    "SegmentationBundle",
    "SegmentationSplit",
    "Split",
    "as_loader",
    "corrupt",
    "from_arrays",
    "held_out_classes",
    "load_dataset",
    "load_file",
    "load_segmentation",
    "load_segmentation_file",
    "loaders",
    "make_lesions",
    "segmentation_from_arrays",
]
