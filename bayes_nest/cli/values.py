"""Value types of ``bayes-nest`` options: each checks one command-line or config-file value
and raises `argparse.ArgumentTypeError` naming it."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

from .._files import require_file

__all__ = [
    "TRAINING_MAX",
    "budget",
    "budget_list",
    "choice",
    "column",
    "fraction",
    "int_list",
    "integer",
    "nonneg_float",
    "nonneg_int",
    "number",
    "ood_kind",
    "positive_float",
    "positive_int",
    "probability",
    "subnet",
    "training_number",
    "unit_interval",
]


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


def integer(value: Any) -> int:
    """An int (a string of digits from the command line, or an int from a config file)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        _fail(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        _fail(f"expected an integer, got {value!r}")


def positive_int(value: Any) -> int:
    n = integer(value)
    return n if n >= 1 else _fail(f"expected a positive integer, got {value!r}")


def nonneg_int(value: Any) -> int:
    n = integer(value)
    return n if n >= 0 else _fail(f"expected an integer >= 0, got {value!r}")


def number(value: Any) -> float:
    if isinstance(value, bool):
        _fail(f"expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        _fail(f"expected a number, got {value!r}")
    return x if math.isfinite(x) else _fail(f"expected a finite number, got {value!r}")


def positive_float(value: Any) -> float:
    x = number(value)
    return x if x > 0 else _fail(f"expected a positive number, got {value!r}")


def nonneg_float(value: Any) -> float:
    x = number(value)
    return x if x >= 0 else _fail(f"expected a number >= 0, got {value!r}")


TRAINING_MAX = 1e30
"""Largest training-option value accepted: training computes in float32 (max 3.4e38), and an
optimizer scales its learning rate further (Adam divides it by 1 - beta1 = 0.1)."""


def training_number(kind: Callable[[Any], float]) -> Callable[[Any], float]:
    """``kind`` (e.g. `positive_float`), at most `TRAINING_MAX`."""

    def check(value: Any) -> float:
        x = kind(value)
        if x > TRAINING_MAX:
            _fail(
                f"expected a number at most {TRAINING_MAX:g} (training computes in float32), "
                f"got {value!r}"
            )
        return x

    check.__name__ = kind.__name__
    return check


def probability(value: Any) -> float:
    x = number(value)
    return x if 0 < x < 1 else _fail(f"expected a probability in (0, 1), got {value!r}")


def unit_interval(value: Any) -> float:
    x = number(value)
    return x if 0 <= x <= 1 else _fail(f"expected a number in [0, 1], got {value!r}")


def fraction(value: Any) -> float:
    x = number(value)
    return x if 0 <= x < 1 else _fail(f"expected a fraction in [0, 1), got {value!r}")


def int_list(value: Any) -> list[int]:
    """``"128,128"``, ``128`` or ``[128, 128]`` -> ``[128, 128]``."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    items = [i.strip() if isinstance(i, str) else i for i in items]
    if not items or any(i == "" for i in items):
        _fail(f"expected comma-separated positive integers, got {value!r}")
    return [positive_int(i) for i in items]


def column(value: Any) -> int | str:
    """A CSV label column: an index (negative counts from the end) or a header name."""
    try:
        return integer(value)
    except argparse.ArgumentTypeError:
        return str(value)


def choice(*options: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        for o in options:
            if value == o or (o is None and str(value).lower() == "none"):
                return o
        _fail(f"expected one of {', '.join(str(o).lower() for o in options)}, got {value!r}")

    check.__name__ = "choice"
    return check


def ood_kind(value: Any) -> str | None:
    from ..data import CORRUPTIONS  # imported when used: the command starts without torch

    return choice(*CORRUPTIONS, None)(value)


def budget(value: Any) -> float | str:
    """A budget in cost units (``20000``, ``2e4``) or a share of the full network (``"25%"``)."""
    text = str(value).strip()
    if text.endswith("%"):
        share = number(text[:-1])
        if not 0 < share <= 100:
            _fail(f"expected a share in (0%, 100%], got {value!r}")
        return f"{share:g}%"
    return positive_float(text)


def budget_list(value: Any) -> list[float | str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    if not items or any(str(i).strip() == "" for i in items):
        _fail(f"expected comma-separated budgets, got {value!r}")
    return [budget(i) for i in items]


def subnet(value: Any) -> dict[str, int]:
    """A sub-network: ``"hidden.0=4,hidden.1=8"``, a JSON object, or a ``.json`` file path."""
    text = str(value).strip()
    if text.endswith(".json") and not text.startswith("{"):
        try:
            require_file(text, "sub-network file")
        except (OSError, ValueError) as e:
            _fail(str(e))
        with open(text) as f:
            text = f.read().strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as e:
            _fail(f"sub-network is not valid JSON: {e}")
        if not isinstance(parsed, dict):
            _fail("sub-network JSON must be an object axis -> count")
        items = list(parsed.items())
    else:
        items = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, count = part.partition("=")
            if not sep or not name.strip():
                _fail(f"expected AXIS=COUNT pairs such as hidden.0=4, got {part!r}")
            items.append((name.strip(), count.strip()))
    if not items:
        _fail("empty sub-network; give AXIS=COUNT pairs such as hidden.0=4")
    return {str(name): nonneg_int(count) for name, count in items}
