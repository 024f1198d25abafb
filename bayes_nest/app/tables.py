"""Text tables of results: aligned for the terminal (`format_table`) and Markdown
(`markdown_table`), with the labels of scores and sub-networks they show.

Examples
--------
>>> from bayes_nest.app.tables import format_table
>>> print(format_table([{"model": "FN3", "macs": 1234.0, "accuracy": 0.9}]))
model   MACs  accuracy
-----  -----  --------
FN3    1,234    0.9000
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..defaults import SCORE_LABELS
from ..nn import axes

__all__ = ["COLUMNS", "config_summary", "format_table", "markdown_table", "score_label"]

COLUMNS = (
    ("model", "model", "{}"),
    ("budget", "budget", "{}"),
    ("config", "sub-network", "{}"),
    ("macs", "MACs", "{:,.0f}"),
    ("params", "params", "{:,.0f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("nll", "NLL", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("ood_auroc", "OOD AUROC", "{:.4f}"),
    ("ged", "GED", "{:.4f}"),
    ("hungarian_iou", "Hungarian IoU", "{:.4f}"),
    ("pixel_ece", "pixel ECE", "{:.4f}"),
    ("pixel_nll", "pixel NLL", "{:.4f}"),
)
"""Known columns: key in a row, header, format."""


def score_label(score: str) -> str:
    """How tables and figures label score ``score`` (a name of
    `bayes_nest.defaults.SCORES`; other text is shown as it is)."""
    return SCORE_LABELS.get(score, score)


def config_summary(module: nn.Module, config: Mapping[str, int] | None) -> str:
    """A compact description of a sub-network: ``"hidden.0=6/16 hidden.1=4/16"`` (kept blocks
    over total per axis; ``"full"`` when every axis is whole)."""
    known = axes(module)
    config = {} if config is None else dict(config)
    counts = {name: int(config.get(name, axis.size)) for name, axis in known.items()}
    if all(counts[n] == a.size for n, a in known.items()):
        return "full"
    return " ".join(f"{n}={counts[n]}/{a.size}" for n, a in known.items())


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt == "{}" and isinstance(value, float):
        fmt = "{:.4f}"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> tuple:
    known = {key: (title, fmt) for key, title, fmt in COLUMNS}
    if columns is None:
        present = {k for row in rows for k in row}
        columns = [key for key, _, _ in COLUMNS if key in present]
    titles = [known.get(c, (c, "{}"))[0] for c in columns]
    cells = [[_cell(row.get(c), known.get(c, (c, "{}"))[1]) for c in columns] for row in rows]
    return titles, cells


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of results as an aligned text table (numbers right-aligned).

    Parameters
    ----------
    rows : sequence of mappings
        Keys of `COLUMNS` (others are shown with their key as header).
    columns : sequence of str, optional
        Keys to show, in order; default: every known column present in some row.
    """
    titles, cells = _rows(rows, columns)
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]
    numeric = [all(_numeric(r[i]) for r in cells) for i in range(len(titles))]

    def line(items: Sequence[str]) -> str:
        parts = [
            s.rjust(w) if num else s.ljust(w)
            for s, w, num in zip(items, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(titles), rule] + [line(r) for r in cells])


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of results as a Markdown (GitHub) table."""
    titles, cells = _rows(rows, columns)
    numeric = [all(_numeric(r[i]) for r in cells) for i in range(len(titles))]
    align = ["---:" if num else "---" for num in numeric]
    out = ["| " + " | ".join(titles) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    if text == "-":
        return True
    try:
        float(text.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False
