"""Deprecated location, kept for one release: text tables and report folders now live in
`bayes_nest.app.tables`, `bayes_nest.app.report` and (`Analysis`) `bayes_nest.app.budgets`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.budgets import Analysis
from .app.report import (
    _replace_dir,  # noqa: F401  (private; its tests import it from here)
    keep_count_interval,
    keep_figure,
    pareto_figure,
    reliability_figure,
    render_markdown,
    write_report,
)
from .app.tables import COLUMNS, config_summary, format_table, markdown_table, score_label

__all__ = [
    "Analysis",
    "COLUMNS",
    "config_summary",
    "format_table",
    "keep_count_interval",
    "keep_figure",
    "markdown_table",
    "pareto_figure",
    "reliability_figure",
    "render_markdown",
    "score_label",
    "write_report",
]
