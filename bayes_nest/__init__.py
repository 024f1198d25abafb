"""bayes_nest: fully nested neural networks with learned orderings (FN3 and Bayesian nested networks).

One import is enough for the main job::

    import bayes_nest as bn

    data = bn.load_dataset("digits")
    model = bn.fit(bn.ModelSpec("mlp", {"hidden": [64, 64], "groups": 8}), data, "bnnn")
    front = bn.search_front(model, data.val)
    config = bn.best_config(front, "25%", model)
    scores = bn.evaluate_config(model, data.test, config)
    bn.export_subnet(model, config, "small.pt")

The application names (`ModelSpec`, `fit`, `load_model`, `search_front`, ...) come from
`bayes_nest.app`; `load_dataset` from `bayes_nest.data`; the library's sub-packages (``bn.nn``,
``bn.models``, ``bn.infer``, ``bn.subnet``, ``bn.search``, ``bn.metrics``, ...) are attributes
too. Everything is imported on first use, so ``import bayes_nest`` itself stays cheap (the
command line starts without importing torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_FROM_APP = (
    "Analysis",
    "ModelSpec",
    "TrainedModel",
    "analyse",
    "best_config",
    "build_model",
    "data_for",
    "evaluate_config",
    "export_subnet",
    "fit",
    "format_table",
    "load_data",
    "load_model",
    "make_score",
    "read_front",
    "run_demo",
    "search_front",
    "write_report",
)
_FROM_DATA = ("DataBundle", "load_dataset")
_SUBPACKAGES = (
    "analysis",
    "app",
    "cli",
    "data",
    "defaults",
    "distributions",
    "infer",
    "metrics",
    "models",
    "nn",
    "plots",
    "search",
    "subnet",
    "testing",
)

__all__ = ["__version__", *_FROM_APP, *_FROM_DATA]

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and editors
    from .app import (  # noqa: F401
        Analysis,
        ModelSpec,
        TrainedModel,
        analyse,
        best_config,
        build_model,
        data_for,
        evaluate_config,
        export_subnet,
        fit,
        format_table,
        load_data,
        load_model,
        make_score,
        read_front,
        run_demo,
        search_front,
        write_report,
    )
    from .data import DataBundle, load_dataset  # noqa: F401


def __getattr__(name: str) -> Any:
    """Import the application names and sub-packages on first access (PEP 562)."""
    if name in _FROM_APP:
        value = getattr(importlib.import_module(".app", __name__), name)
    elif name in _FROM_DATA:
        value = getattr(importlib.import_module(".data", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
