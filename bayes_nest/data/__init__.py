"""Built-in datasets (offline), user data and loaders, and out-of-distribution helpers.

Every dataset is returned as a :class:`DataBundle`: train, validation and test splits drawn by a
seeded, stratified split, inputs standardized with statistics of the training split only, and
metadata (``name``, ``num_classes``, ``input_shape``). Two datasets are built in and need no
network: scikit-learn's handwritten ``"digits"`` (1797 images of 8×8 pixels, 10 classes) and
``"mnist1d"`` (5000 one-dimensional signals of length 40, 10 classes, generated from the templates
of the ``mnist1d`` package). Users bring arrays (:func:`from_arrays`), ``.npz``/``.csv`` files
(:func:`load_file`) or their own ``DataLoader`` (:func:`as_loader`).
"""

from .builtin import DATASETS, load_dataset
from .bundle import DataBundle, Loaders, Split, from_arrays
from .files import load_file
from .loading import as_loader, loaders
from .ood import CORRUPTIONS, HeldOut, corrupt, held_out_classes

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
