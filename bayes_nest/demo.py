"""Deprecated location, kept for one release: the demo now lives in `bayes_nest.app.demo`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.demo import BUDGETS, EXPORT_BUDGET, MARKER, RECIPE, SETTINGS, run_demo

__all__ = [
    "BUDGETS",
    "EXPORT_BUDGET",
    "MARKER",
    "RECIPE",
    "SETTINGS",
    "run_demo",
]
