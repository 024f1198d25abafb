"""Deprecated location, kept for one release: data, evaluation, search and analysis of trained
models now live in `bayes_nest.app.data`, `bayes_nest.app.evaluation`, `bayes_nest.app.front`
and `bayes_nest.app.budgets`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.budgets import analyse
from .app.contexts import recalibrated, seeded
from .app.data import apply_standardization, data_for, load_data
from .app.evaluation import evaluate_config, make_score
from .app.front import best_config, read_front, resolve_budget, search_front
from .defaults import SCORES

__all__ = [
    "SCORES",
    "analyse",
    "apply_standardization",
    "best_config",
    "data_for",
    "evaluate_config",
    "load_data",
    "make_score",
    "read_front",
    "recalibrated",
    "resolve_budget",
    "search_front",
    "seeded",
]
