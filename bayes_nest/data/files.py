"""Reading user data from ``.npz`` and ``.csv`` files (:func:`load_file`)."""

from __future__ import annotations

import csv
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .._files import require_file
from .bundle import DataBundle, from_arrays


def _read_csv(path: Path, label_column: int | str, header: bool | None, delimiter: str):
    with path.open(newline="", encoding="utf-8-sig") as f:  # a leading BOM is not data
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
    label_column: int | str | None = None,
    header: bool | None = None,
    delimiter: str = ",",
    **kwargs: Any,
) -> DataBundle:
    """Load a ``.npz`` or ``.csv`` file into a :class:`DataBundle` (via :func:`from_arrays`).

    ``.npz``: arrays ``x_key`` (N, *input_shape) and ``y_key`` (N,); if the file also holds
    ``{x_key}_val``/``{y_key}_val`` or ``{x_key}_test``/``{y_key}_test``, those are used as the
    validation/test split (a half pair, ``x_val`` without ``y_val``, is an error).
    ``.csv`` (UTF-8, with or without a byte-order mark): one example per row, all columns
    numeric; the label is ``label_column`` (index, or header name; default ``None``: the last
    column); a header row is detected when ``header`` is None (first row not all numeric).
    ``label_column`` is an error for ``.npz`` files, whose labels are the array ``y_key``.
    Other keyword arguments go to :func:`from_arrays`.
    """
    path = Path(require_file(path, "data file"))
    name = kwargs.pop("name", path.stem)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if label_column is not None:
            raise ValueError(
                f"label_column={label_column!r} applies to CSV files only; the labels of {path} "
                f"are its array {y_key!r}"
            )
        if not zipfile.is_zipfile(path):  # else np.load would try it as a pickle
            raise ValueError(f"{path} is not a .npz file (not a zip archive of arrays)")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in (x_key, y_key) if k not in f.files]
                if missing:
                    raise ValueError(f"{path} has no array {missing[0]!r}; it holds {f.files}")
                arrays = {k: f[k] for k in f.files}
        except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:  # empty, cut, damaged
            msg = " ".join(str(e).split()) or type(e).__name__
            raise ValueError(f"{path} is not a readable .npz file ({msg})") from None
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise
            raise ValueError(
                f"{path} holds object arrays, which are never unpickled; save numeric arrays"
            ) from None
        for part in ("val", "test"):
            xk, yk = f"{x_key}_{part}", f"{y_key}_{part}"
            if (xk in arrays) != (yk in arrays):
                have, lack = (xk, yk) if xk in arrays else (yk, xk)
                raise ValueError(
                    f"{path} holds {have!r} but no {lack!r}: a {part} split needs both arrays"
                )
            if xk in arrays:
                kwargs.setdefault(part, (arrays[xk], arrays[yk]))
        x, y = arrays[x_key], arrays[y_key]
    elif suffix == ".csv":
        try:
            column = -1 if label_column is None else label_column
            x, y = _read_csv(path, column, header, delimiter)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not a text file ({e.reason} at byte {e.start})") from None
    else:
        raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use .npz or .csv")
    try:
        return from_arrays(x, y, name=name, **kwargs)
    except (ValueError, TypeError) as e:  # name the file the bad arrays came from
        error = TypeError if isinstance(e, TypeError) else ValueError
        raise error(f"{path}: {e}") from None
