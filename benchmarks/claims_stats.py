r"""Statistics, temperature scaling, tuning grids and early stopping shared by the claim benchmarks.

The protocols under ``benchmarks/protocols/`` fix these estimators; every claim benchmark
(``bnnn_vs_fn3.py``, ``fn3_vs_independent.py``, ``ordering.py``) uses them from here, so the
numbers of different benchmarks mean the same thing. Not part of the installed package.

* :func:`mean_se` -- mean and standard error over seeds, :math:`\bar x \pm s/\sqrt n`;
* :func:`t_interval` / :func:`paired_interval` -- a 95 % Student-t interval of a mean, or of the
  mean of per-seed paired differences :math:`d_s = a_s - b_s`;
* :func:`fit_temperature` / :func:`temper` -- temperature scaling of predictive probabilities;
* :func:`run_grid` -- the same number of validation trials for every method, best by one rule;
* :func:`early_stopping` -- train epoch by epoch, keep the weights of the best validation epoch.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import optimize, stats
from tqdm.auto import tqdm

__all__ = [
    "early_stopping",
    "fit_temperature",
    "grid_settings",
    "mean_se",
    "paired_interval",
    "run_grid",
    "t_interval",
    "temper",
]

LOG_T_BOUNDS = (-3.0, 3.0)
"""Search interval of :math:`\\log T` in :func:`fit_temperature`."""


def _values(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    r"""Mean and standard error :math:`s/\sqrt n` (sample std, ``ddof=1``; 0 for one value).

    Parameters
    ----------
    values : sequence of float, shape (n,)
        One value per seed.
    """
    x = _values(values, "values")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0
    return float(x.mean()), se


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    r"""Mean with a two-sided Student-t interval :math:`\bar x \pm t_{(1+\ell)/2,\,n-1}\, s/\sqrt n`.

    Parameters
    ----------
    values : sequence of float, shape (n,)
    level : float in (0, 1)
        Coverage of the interval.

    Returns
    -------
    dict with ``mean``, ``se``, ``low``, ``high`` and ``n``. With one value ``low`` and ``high``
    are ``None`` (JSON ``null``): one seed says nothing about the spread.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = _values(values, "values")
    mean, se = mean_se(x)
    if x.size < 2:
        return {"mean": mean, "se": se, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * se
    return {"mean": mean, "se": se, "low": mean - half, "high": mean + half, "n": int(x.size)}


def paired_interval(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, scale: float = 1.0
) -> dict[str, float]:
    r"""Interval of the mean paired difference :math:`\overline{a - b}` (same seeds, same order).

    ``scale`` multiplies the differences first (100 for percentage points).
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    return t_interval(scale * (x - y), level)


def temper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Temperature-scaled probabilities :math:`p_T \propto p^{1/T}` (softmax of :math:`\log p / T`).

    For a deterministic network :math:`\log p` equals the logits up to a per-row constant, so
    this is classic temperature scaling; for an averaged predictive it scales the average.

    Parameters
    ----------
    probs : Tensor, shape (N, K), or (S, N, K) (averaged over S first)
    temperature : float > 0
    """
    if (
        not (isinstance(temperature, int | float) and math.isfinite(temperature))
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    p = probs.mean(0) if probs.dim() == 3 else probs
    log_p = torch.log(p.double().clamp_min(1e-12))
    return torch.softmax(log_p / temperature, dim=-1).to(p.dtype)


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor) -> float:
    r"""The temperature minimising the NLL of :func:`temper` on held-out (validation) data.

    Minimises :math:`-\frac1N \sum_n \log p_T(y_n \mid x_n)` over :math:`\log T` in
    ``LOG_T_BOUNDS`` by bounded scalar minimisation (the NLL is convex in :math:`1/T`).

    Parameters
    ----------
    probs : Tensor, shape (N, K) or (S, N, K)
    labels : Tensor of int, shape (N,)
    """
    p = probs.mean(0) if probs.dim() == 3 else probs
    if p.dim() != 2 or labels.shape != p.shape[:1]:
        raise ValueError(f"need probs (N, K) and labels (N,), got {tuple(p.shape)}, {labels.shape}")
    log_p = torch.log(p.double().clamp_min(1e-12))
    y = labels.long()

    def nll(log_t: float) -> float:
        logits = log_p / math.exp(log_t)
        return float(torch.nn.functional.cross_entropy(logits, y))

    result = optimize.minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded")
    return float(math.exp(result.x))


def grid_settings(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``grid``'s values, in the order of the keys (first key slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def run_grid(
    grid: Mapping[str, Sequence[Any]],
    trial: Callable[[dict[str, Any]], float],
    *,
    minimize: bool,
    label: str = "tuning",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one validation trial per grid setting and return the best setting and the table.

    Parameters
    ----------
    grid : mapping name -> candidate values
        The trials are :func:`grid_settings` of it; every method of a protocol gets as many.
    trial : callable setting -> float
        Trains on the train split and returns the *validation* score of the setting.
    minimize : bool
        Lower score is better (NLL) or higher (accuracy). Ties go to the earlier setting.

    Returns
    -------
    (best setting, rows ``{**setting, "score": value}`` in grid order)
    """
    settings = grid_settings(grid)
    if not settings:
        raise ValueError("the tuning grid has no settings")
    rows = []
    for setting in tqdm(settings, desc=label, leave=False):
        score = float(trial(dict(setting)))
        if not math.isfinite(score):
            raise FloatingPointError(f"{label}: validation score of {setting} is {score}")
        rows.append({**setting, "score": score})
    sign = 1.0 if minimize else -1.0
    best = min(range(len(rows)), key=lambda i: (sign * rows[i]["score"], i))
    return dict(settings[best]), rows


def early_stopping(
    module: torch.nn.Module,
    train_epoch: Callable[[], None],
    score: Callable[[], float],
    *,
    max_epochs: int,
    patience: int,
) -> dict[str, float]:
    """Train one epoch at a time, stop after ``patience`` epochs without a better validation
    ``score`` (higher is better) and restore the weights of the best epoch.

    Returns ``{"best_epoch", "epochs_run", "best_score"}`` (epochs counted from 1).
    """
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience must be >= 1, got {max_epochs}, {patience}")
    best_score, best_epoch, best_state = -math.inf, 0, None
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        train_epoch()
        value = float(score())
        if value > best_score:
            best_score, best_epoch = value, epoch
            best_state = copy.deepcopy(module.state_dict())
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "epochs_run": epoch, "best_score": best_score}
