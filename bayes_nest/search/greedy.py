r"""Greedy front search: peel blocks off the full network, cheapest score loss per cost first.

Because every axis is ordered, a sub-network is a keep count per axis and the space is
:math:`\prod_a (D_a + 1)` configs, far too many to score exhaustively. The greedy search walks
from the full network down: at every step it tries removing one block (``step`` blocks) from
each axis and keeps the removal with the smallest score loss per unit of cost saved,

.. math:: a^\star = \arg\min_a \frac{s(c) - s(c - e_a)}{C(c) - C(c - e_a)},

until every axis is at its always-on minimum. One run gives a whole path of sub-networks, from
which :meth:`Front.best` answers every budget. With ``candidates=K`` only the ``K`` axes whose
last measured loss per cost was smallest are scored at each step (axes not measured yet first),
so the search costs about :math:`K N` score evaluations for :math:`N` steps.

For a score that is a sum of concave per-axis terms and a cost that counts blocks, the path is
exactly optimal at every budget (removing the smallest marginal gain first is optimal for
separable concave objectives); otherwise it is a heuristic (the FN3 paper's "fast heuristic
search", AutoSlim's greedy slimming with a cost-normalised criterion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from torch import nn
from tqdm.auto import tqdm

from ._common import CachedScore, Space, resolve_cost
from .front import Front

__all__ = ["greedy"]


def _check_steps(space: Space, step: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(step, Mapping):
        unknown = [n for n in step if n not in space.axes]
        if unknown:
            raise ValueError(f"step: unknown axis {unknown[0]!r}; known axes: {space.names}")
        steps = {n: step.get(n, 1) for n in space.names}
    else:
        steps = dict.fromkeys(space.names, step)
    for name, s in steps.items():
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"step must be a positive int (axis {name!r}), got {s!r}")
    return steps


def _check_candidates(candidates: int | None) -> int | None:
    if candidates is None:
        return None
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be a positive int or None, got {candidates!r}")
    return candidates


def greedy(
    module: nn.Module,
    score: Callable[[Mapping[str, int]], float],
    *,
    cost: str | Callable[[Mapping[str, int]], float] = "macs",
    input_shape: Sequence[int] | None = None,
    step: int | Mapping[str, int] = 1,
    candidates: int | None = None,
    start: Mapping[str, int] | None = None,
    progress: bool = True,
    cache: bool = True,
) -> Front:
    """Greedy path from the full network down to the smallest, for every budget at once.

    Parameters
    ----------
    module : nn.Module
        The nested model (its axes define the space).
    score : callable
        ``score(config) -> float``, higher is better (e.g. a
        :class:`~bayes_nest.search.Evaluator`).
    cost : str or callable
        A metric of :func:`~bayes_nest.subnet.cost` (``"macs"``, ``"params"``, ``"weight_bits"``,
        ``"bitops"``) or a callable ``config -> float`` (e.g. a latency table).
    input_shape : sequence of int, optional
        Shape of one example; required for a metric name.
    step : int or Mapping[str, int]
        Blocks removed per move (per axis when a mapping).
    candidates : int, optional
        Score only this many axes per step (lazy greedy, see the module docstring); default:
        all axes.
    start : Mapping[str, int], optional
        Starting config (default: the full network).
    progress : bool
        Show a progress bar over the steps.
    cache : bool
        Score each config once.

    Returns
    -------
    Front
        Every scored config (path steps and the candidates tried at each step);
        ``front.info["path"]`` lists the configs of the greedy path in order, full first.

    Notes
    -----
    Axes whose removal saves no cost (e.g. a bits axis under ``"macs"``) are never reduced.
    """
    space = Space(module)
    steps = _check_steps(space, step)
    k = _check_candidates(candidates)
    cost_fn, metric = resolve_cost(module, cost, input_shape)
    cached = CachedScore(space, score, cost_fn, cache=cache)
    current = space.check(space.full() if start is None else start)
    total_steps = sum(
        math.ceil((current[n] - a.always_on) / steps[n]) for n, a in space.axes.items()
    )
    path = [dict(current)]
    estimate: dict[str, float] = {}  # last measured loss per unit cost of each axis
    bar = tqdm(total=total_steps, disable=not progress, desc="greedy search")
    s_cur, c_cur = cached.score(current), cached.cost(current)
    while True:
        moves = []
        for name, axis in space.axes.items():
            if current[name] > axis.always_on:
                cand = dict(current)
                cand[name] = max(axis.always_on, current[name] - steps[name])
                saved = c_cur - cached.cost(cand)
                if saved > 0:
                    moves.append((name, cand, saved))
        if not moves:
            break
        if k is not None and k < len(moves):
            order = sorted(
                range(len(moves)),
                key=lambda i: (
                    estimate.get(moves[i][0], -math.inf),
                    space.names.index(moves[i][0]),
                ),
            )
            moves = [moves[i] for i in sorted(order[:k])]
        best = None
        for name, cand, saved in moves:
            ratio = (s_cur - cached.score(cand)) / saved
            estimate[name] = ratio
            rank = (ratio, -saved)
            if best is None or rank < best[0]:
                best = (rank, name, cand)
        _, _, current = best
        s_cur, c_cur = cached.score(current), cached.cost(current)
        path.append(dict(current))
        bar.update(1)
        bar.set_postfix(score=f"{s_cur:.4g}", cost=f"{c_cur:.4g}")
    bar.close()
    info = {"search": "greedy", "candidates": k, "step": steps, "path": path}
    return Front(cached.points(), cached.evaluations, metric, info)
