"""Data, evaluation, search and export for trained models (the steps after :mod:`~bayes_nest.pipeline`).

:func:`load_data` reads a built-in dataset or a user file; :func:`data_for` reads data for a
trained model, in that model's splits, class count and standardization, and rejects data it
cannot take (other input shapes, unknown labels, NaNs). :func:`evaluate_config` scores one
sub-network (accuracy, NLL, Brier, ECE, OOD AUROC) the same way for both regimes.

Examples
--------
>>> from bayes_nest.pipeline import load_model
>>> from bayes_nest.workflow import data_for, evaluate_config
>>> model = load_model("digits.ckpt")
>>> data = data_for(model, "digits")
>>> evaluate_config(model, data.test, {"hidden.0": 4, "hidden.1": 4})
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from . import metrics
from .data import DATASETS, DataBundle, Split, corrupt, load_dataset, load_file
from .pipeline import TrainedModel

__all__ = ["apply_standardization", "data_for", "evaluate_config", "load_data"]


def apply_standardization(bundle: DataBundle, mean: torch.Tensor, std: torch.Tensor) -> DataBundle:
    """Re-express a bundle loaded with ``standardize=None`` in a trained model's standardization
    ``(x - mean) / std`` (the statistics of the model's own training split)."""
    splits = {k: Split((s.x - mean) / std, s.y) for k, s in bundle.splits.items()}
    return dataclasses.replace(bundle, **splits, mean=mean, std=std, standardize="model")


# ----------------------------------------------------------------------------- data


def load_data(
    source: str | os.PathLike,
    *,
    flat: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    standardize: str | None = "feature",
    label_column: int | str = -1,
    num_classes: int | None = None,
    stratify: bool = True,
) -> DataBundle:
    """A built-in dataset by name (``"digits"``, ``"mnist1d"``) or a ``.npz``/``.csv`` file.

    A name that is also an existing file is read as the file. ``flat`` selects flat vectors or
    images for built-in sets; the other arguments go to :func:`~bayes_nest.data.load_dataset`
    or :func:`~bayes_nest.data.load_file`.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    ValueError
        For unreadable files and bad contents (see :func:`~bayes_nest.data.from_arrays`).
    """
    text = os.fspath(source)
    split = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if text.lower() in DATASETS and not os.path.isfile(text):
        bundle = load_dataset(text, flat=flat, standardize=standardize, **split)
        if num_classes is not None and num_classes != bundle.num_classes:
            raise ValueError(
                f"{text} has {bundle.num_classes} classes, the model expects {num_classes}"
            )
        return bundle
    if not os.path.isfile(text):
        raise FileNotFoundError(
            f"data file {text!r} does not exist (built-in datasets: {', '.join(DATASETS)})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class missing from a small evaluation file
        return load_file(
            text,
            label_column=label_column,
            standardize=standardize,
            num_classes=num_classes,
            stratify=stratify,
            **split,
        )


def data_for(
    model: TrainedModel, source: str | os.PathLike, *, whole: bool = False, **kwargs: Any
) -> DataBundle:
    """Load data for a trained model: the splits it was trained with (same split seed and
    fractions, from :attr:`TrainedModel.data`), its class count, and its standardization.

    Parameters
    ----------
    model : TrainedModel
    source : str or path
        As in :func:`load_data`.
    whole : bool
        Put every example of the file into the test split (new data the model has not seen).
    **kwargs
        Override the stored loading options (e.g. ``label_column``).

    Raises
    ------
    ValueError
        For inputs of another shape than the model's, labels it does not know, NaNs.
    """
    stored = {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2, "label_column": -1}
    opts = {k: model.data.get(k, default) for k, default in stored.items()}
    opts.update(kwargs)
    if whole:
        opts.update(val_fraction=0.0, test_fraction=0.0, stratify=False)
    bundle = load_data(
        source, flat=model.spec.flat, standardize=None, num_classes=model.num_classes, **opts
    )
    if tuple(bundle.input_shape) != tuple(model.input_shape):
        raise ValueError(
            f"{os.fspath(source)} has examples of shape {tuple(bundle.input_shape)}, but the "
            f"model was trained on examples of shape {tuple(model.input_shape)}"
        )
    bundle = apply_standardization(bundle, model.mean, model.std)
    if whole:
        bundle = dataclasses.replace(bundle, test=bundle.train)
    return bundle


# ----------------------------------------------------------------------------- evaluation


def evaluate_config(
    model: TrainedModel,
    split: Split,
    config: Mapping[str, int] | None = None,
    *,
    ood: str | None = "gaussian_noise",
    num_samples: int | None = None,
    seed: int = 0,
    n_bins: int = 15,
) -> dict[str, float]:
    """Accuracy, NLL, Brier, ECE and (with ``ood``) OOD AUROC of one sub-network on a split.

    OOD inputs are the split's inputs corrupted with :func:`~bayes_nest.data.corrupt` (kind
    ``ood`` at full severity); the OOD score is the predictive entropy of the mean prediction,
    and ``ood_auroc`` separates the split's inputs from their corrupted copies.

    Returns
    -------
    dict
        ``accuracy``, ``nll``, ``brier``, ``ece``, ``ood_auroc`` (NaN without ``ood``), ``n``.
    """
    x = model.check_inputs(split.x, "inputs")
    y = torch.as_tensor(split.y)
    if (y < 0).any() or (y >= model.num_classes).any():
        bad = y[(y < 0) | (y >= model.num_classes)][0]
        raise ValueError(
            f"labels hold class {int(bad)}, unknown to a model of {model.num_classes} classes"
        )
    probs = model.predict(x, config, num_samples=num_samples)
    out = {
        "accuracy": metrics.accuracy(probs, y),
        "nll": metrics.nll(probs, y),
        "brier": metrics.brier_score(probs, y),
        "ece": metrics.expected_calibration_error(probs, y, n_bins=n_bins),
        "ood_auroc": math.nan,
        "n": len(y),
    }
    if ood is not None and len(x) >= 2:
        shifted = corrupt(x, ood, 1.0, seed=seed)
        probs_out = model.predict(shifted, config, num_samples=num_samples)
        out["ood_auroc"] = metrics.ood_auroc(
            metrics.predictive_entropy(probs), metrics.predictive_entropy(probs_out)
        )
    return out


# ----------------------------------------------------------------------------- safe output


def check_output(path: str | os.PathLike, force: bool = False) -> None:
    """Refuse to overwrite an existing ``path`` unless ``force``; refuse a missing parent that
    cannot be created, or a directory where a file is expected."""
    text = os.fspath(path)
    if os.path.isdir(text) and not text.endswith(os.sep):
        if not force:
            raise FileExistsError(f"output {text!r} exists; pass --force to overwrite it")
    elif os.path.exists(text) and not force:
        raise FileExistsError(f"output {text!r} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write output {text!r}: {parent!r} is not a writable folder")


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so
    readers see the old file or the new one, never a partial one."""
    import tempfile

    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- export


def export_paths(out: str | os.PathLike, onnx: bool = False) -> dict[str, str]:
    """Files :func:`export_subnet` writes for ``out`` (``x.pt``): the pickled module ``x.pt``,
    the ``torch.export`` program ``x.pt2``, the description ``x.json`` and with ``onnx``
    ``x.onnx``."""
    base = os.fspath(out)
    stem = base[:-3] if base.endswith(".pt") else base
    paths = {"module": stem + ".pt", "program": stem + ".pt2", "info": stem + ".json"}
    if onnx:
        paths["onnx"] = stem + ".onnx"
    return paths


def export_subnet(
    model: TrainedModel,
    config: Mapping[str, int],
    out: str | os.PathLike,
    *,
    calibration: Split | None = None,
    onnx: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, str]:
    """Export sub-network ``config`` of ``model`` as standalone files; returns their paths.

    Writes (each atomically, after checking that none exists unless ``force``)

    * ``<stem>.pt``: the plain ``nn.Module`` (``torch.load(path, weights_only=False)``);
    * ``<stem>.pt2``: its ``torch.export`` program with a dynamic batch dimension
      (``torch.export.load(path).module()``), which needs no bayes_nest to run;
    * ``<stem>.json``: the config, its MACs and parameters, the input shape, the input
      standardization (``mean``, ``std``: the model takes ``(x - mean) / std``) and class names;
    * ``<stem>.onnx`` with ``onnx=True`` (needs the ``onnx`` and ``onnxscript`` packages).

    A BNNN is exported with its posterior mean weights. ``calibration`` (training inputs)
    recalibrates batch-norm statistics for the sub-network.
    """
    import io
    import json

    from .subnet import export

    paths = export_paths(out, onnx)
    for path in paths.values():
        check_output(path, force)
    if onnx:
        try:
            import onnx as _onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ImportError("--onnx needs the onnx and onnxscript packages") from None
    config = validate_config_of(model, config)
    calib = None if calibration is None else calibration.x
    module = export(
        model.module,
        config,
        input_shape=model.input_shape,
        calibration_data=calib,
        progress=progress,
    )
    example = torch.zeros(2, *model.input_shape)
    dynamic = ({0: torch.export.Dim.DYNAMIC},)
    program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
    blobs = {}
    buffer = io.BytesIO()
    torch.save(module, buffer)
    blobs["module"] = buffer.getvalue()
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    blobs["program"] = buffer.getvalue()
    if onnx:
        blobs["onnx"] = _onnx_bytes(module, example, dynamic)
    info = {
        "config": config,
        "method": model.method,
        "model": model.spec.name,
        "macs": model.cost_model("macs")(config),
        "params": model.cost_model("params")(config),
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "class_names": list(model.class_names),
        "mean": model.mean.reshape(-1).tolist(),
        "std": model.std.reshape(-1).tolist(),
        "files": {k: os.path.basename(v) for k, v in paths.items()},
    }
    blobs["info"] = json.dumps(info, indent=2) + "\n"
    for key, path in paths.items():
        write_atomic(path, blobs[key])
    return paths


def validate_config_of(model: TrainedModel, config: Mapping[str, int]) -> dict[str, int]:
    """``config`` checked against the model's axes, completed with full axes."""
    from .subnet import validate_config

    return validate_config(model.module, config)


def _onnx_bytes(module: torch.nn.Module, example: torch.Tensor, dynamic: tuple) -> bytes:
    import contextlib
    import io
    import logging
    import tempfile

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        tempfile.TemporaryDirectory() as tmp,
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, verbose=False, dynamic_shapes=dynamic
        )
        path = os.path.join(tmp, "model.onnx")
        program.save(path)
        with open(path, "rb") as f:
            return f.read()
