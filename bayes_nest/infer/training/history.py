"""The per-epoch record of a training run: one :class:`History` for every training program."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["History"]

# Older names of columns, read as the current ones (a BNNN's validation NLL was "val_nll").
ALIASES = {"val_nll": "val_loss"}


class History:
    """Per-epoch training record: named columns of equal length, one entry per epoch.

    Every program trained by :class:`~bayes_nest.infer.training.TrainingLoop` writes ``epoch``
    (completed epochs after the entry: 1, 2, ...), ``loss`` (the mean training loss over the
    epoch's steps), ``val_loss`` and ``val_accuracy`` (NaN without validation data) and
    ``seconds`` (wall time of the epoch's training steps, validation excluded). Each program adds
    its own columns: FN3 ``accuracy`` (of the sampled sub-networks) and ``lr``; a BNNN
    ``weight_kl`` and ``temperature``. A column is read as an attribute (``history.loss``);
    ``val_nll`` is another name of ``val_loss``.

    Parameters
    ----------
    columns : iterable of str, optional
        Names of the (empty) columns to start with.
    **data : list
        Columns with their values (all of the same length).

    Examples
    --------
    >>> h = History(["epoch", "loss"])
    >>> h.append(epoch=1, loss=0.5)
    >>> h.loss, len(h)
    ([0.5], 1)
    """

    def __init__(self, columns: Iterable[str] = (), **data: Iterable[Any]) -> None:
        self._columns: dict[str, list] = {str(name): [] for name in columns}
        for name, values in data.items():
            self._columns[ALIASES.get(name, name)] = list(values)
        lengths = {len(v) for v in self._columns.values()}
        if len(lengths) > 1:
            sizes = {name: len(v) for name, v in self._columns.items()}
            raise ValueError(f"history columns differ in length: {sizes}")

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in the order they were created."""
        return tuple(self._columns)

    def append(self, **row: Any) -> None:
        """Add one epoch's entry; a column missing from ``row`` gets NaN, a new column is
        created (earlier epochs NaN)."""
        n = len(self)
        for name in row:
            key = ALIASES.get(name, name)
            if key not in self._columns:
                self._columns[key] = [math.nan] * n
        for name, values in self._columns.items():
            values.append(row.get(name, math.nan))
        for alias, name in ALIASES.items():
            if alias in row and name in row:
                raise ValueError(f"history row gives both {name!r} and its other name {alias!r}")
            if alias in row:
                self._columns[name][-1] = row[alias]

    def __getattr__(self, name: str) -> list:
        if name.startswith("_"):
            raise AttributeError(name)
        columns = self.__dict__.get("_columns", {})
        key = ALIASES.get(name, name)
        if key in columns:
            return columns[key]
        raise AttributeError(f"history has no column {name!r}; it has {list(columns)}")

    def as_dict(self) -> dict[str, list]:
        """Plain ``dict`` of lists (checkpoint- and JSON-friendly)."""
        return {name: list(values) for name, values in self._columns.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[Any]]) -> History:
        """The history of :meth:`as_dict` (older column names are read as the current ones)."""
        return cls(**{str(k): list(v) for k, v in data.items()})

    def __len__(self) -> int:
        return len(next(iter(self._columns.values()), []))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The entries, one dict per epoch."""
        for i in range(len(self)):
            yield {name: values[i] for name, values in self._columns.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"History(epochs={len(self)}, columns={list(self._columns)})"
