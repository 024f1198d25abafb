"""Writing results safely: no existing output is overwritten without ``force``, every file is
written atomically, and sub-networks are exported as standalone model files.

Examples
--------
>>> import bayes_nest as bn
>>> data = bn.load_dataset("digits")
>>> model = bn.fit(bn.ModelSpec("mlp", {"hidden": [32], "groups": 8}), data, epochs=1, progress=False)
>>> written = bn.export_subnet(model, {"hidden.0": 4}, "small.pt")  # small.pt, .pt2, .json
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping

import torch

from .._files import atomic_write, check_not_input, check_writable
from ..data import Split
from .model_file import TrainedModel

__all__ = ["check_output", "export_paths", "export_subnet", "write_atomic"]


# ----------------------------------------------------------------------------- safe output


def check_output(
    path: str | os.PathLike,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Check up front that an output file can be written to ``path``.

    Refuses an existing ``path`` unless ``force``; always refuses a folder where a file is
    expected, a ``path`` that is or contains one of the ``inputs`` (even with ``force``), and a
    place where no file can be created (checked by creating and removing a probe file and any
    missing folders, so a bad path fails before a long computation).

    Raises
    ------
    FileExistsError, IsADirectoryError, ValueError, PermissionError
    """
    text = os.fspath(path)
    check_not_input(text, inputs)
    if os.path.isdir(text):
        raise IsADirectoryError(f"output {text!r} is a folder; give a file path")
    if os.path.lexists(text) and not force:
        raise FileExistsError(f"output {text!r} exists; pass --force to overwrite it")
    check_writable(text)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so
    readers see the old file or the new one, never a partial one. ``exclusive``: fail with
    `FileExistsError` (leaving it untouched) if ``path`` exists by the time the data are
    written, e.g. created by another run since `check_output`."""
    atomic_write(path, data, exclusive=exclusive)


# ----------------------------------------------------------------------------- export


def export_paths(out: str | os.PathLike, onnx: bool = False) -> dict[str, str]:
    """Files `export_subnet` writes for ``out`` (``x.pt``): the pickled module ``x.pt``,
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
    inputs: Iterable[str | os.PathLike | None] = (),
) -> dict[str, str]:
    """Export sub-network ``config`` of ``model`` as standalone files; returns their paths.

    Writes (each atomically, after checking that none exists unless ``force`` and that none is
    one of the ``inputs``, e.g. the model file; without ``force`` a file that appears during
    the export is left untouched and the export fails)

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

    from ..subnet import export, validate_config

    paths = export_paths(out, onnx)
    for path in paths.values():
        check_output(path, force, inputs)
    if onnx:
        try:
            import onnx as _onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ImportError("--onnx needs the onnx and onnxscript packages") from None
    config = validate_config(model.module, config)
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
        "task": model.task,
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
        write_atomic(path, blobs[key], exclusive=not force)
    return paths


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
