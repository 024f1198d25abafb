r"""Greedy front search: peel blocks off the full network, cheapest score loss per cost first.

Because every axis is ordered, a sub-network is a keep count per axis and the space is
:math:`\prod_a (D_a + 1)` configs, far too many to score exhaustively. The greedy search walks
from the full network down: at every step it tries removing one block (``step`` blocks) from
each axis and keeps the removal with the smallest score loss per unit of cost saved,

.. math:: a^\star = \arg\min_a \frac{s(c) - s(c - e_a)}{C(c) - C(c - e_a)},

until every axis is at its always-on minimum. Moves that do not change the cost (a bits axis
under MACs) are not part of this trade-off: each walk keeps such axes at their best-scoring
value (see :func:`greedy`). One run gives a whole path of sub-networks, from
which :meth:`Front.best` answers every budget. ``direction="up"`` walks the other way, from the
smallest network up, adding the block with the largest score gain per unit of cost added; it is
more accurate at small budgets, where the downward path's early choices (made for large
networks) no longer fit. The default ``direction="both"`` walks down from the full network to
the middle of the cost range and up from the smallest network to it, so each walk covers the
half where it is accurate, for the evaluations of one walk. With ``candidates=K`` only the ``K`` axes whose
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


def _same_cost(a: float, b: float) -> bool:
    """Whether two costs are equal up to float rounding (a move between them is cost-neutral)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _moves(space, cached, current, c_cur, steps, up):
    """Single-axis moves from ``current`` that change the cost: (axis, config, |Δcost|)."""
    moves = []
    for name, axis in space.axes.items():
        count = current[name]
        if (count >= axis.size) if up else (count <= axis.always_on):
            continue
        cand = dict(current)
        cand[name] = (
            min(axis.size, count + steps[name]) if up else max(axis.always_on, count - steps[name])
        )
        c_new = cached.cost(cand)
        delta = c_new - c_cur if up else c_cur - c_new
        if delta > 0 and not _same_cost(c_new, c_cur):
            moves.append((name, cand, delta))
    return moves


def _neutral_configs(space, cached, current, c_cur, name, step, reach):
    """Configs that move axis ``name`` by whole steps either way (at most ``reach`` steps each
    way, ``None``: no limit) while the cost stays that of ``current``."""
    axis = space.axes[name]
    found = []
    for sign in (1, -1):
        count, taken = current[name], 0
        while reach is None or taken < reach:
            nxt = min(axis.size, count + step) if sign > 0 else max(axis.always_on, count - step)
            if nxt == count:
                break
            cand = dict(current)
            cand[name] = nxt
            if not _same_cost(cached.cost(cand), c_cur):
                break
            found.append(cand)
            count, taken = nxt, taken + 1
    return found


def _settle(space, cached, current, steps, reach):
    """Move the axes whose moves cost nothing to their best value.

    For every axis in turn, the cost-neutral configs within ``reach`` steps either way are scored
    and the best one is taken when it beats the current score; passes repeat until no such move
    improves the score (the score rises strictly, so this ends). Returns the final config and the
    configs moved to, in order.
    """
    visited = []
    s_cur, c_cur = cached.score(current), cached.cost(current)
    improved = True
    while improved:
        improved = False
        for name in space.names:
            best = None
            for cand in _neutral_configs(space, cached, current, c_cur, name, steps[name], reach):
                s = cached.score(cand)
                if s > s_cur and (best is None or s > best[0]):
                    best = (s, cand)
            if best is not None:
                s_cur, current = best
                visited.append(dict(current))
                improved = True
    return current, visited


def _walk(space, cached, current, steps, k, up, bar, until=None) -> list[dict[str, int]]:
    """One greedy walk, stopping once its cost passes ``until``; returns its path of configs."""
    path = [dict(current)]
    # Cost-neutral axes go to their best value first (every neutral value scored), then are
    # kept at a local optimum (one step either way) after every move.
    current, moved = _settle(space, cached, current, steps, None)
    path += moved
    # Last measured loss (down) or negated gain (up) per unit cost of each axis: lower is better.
    estimate: dict[str, float] = {}
    s_cur, c_cur = cached.score(current), cached.cost(current)
    while until is None or (c_cur < until if up else c_cur > until):
        moves = _moves(space, cached, current, c_cur, steps, up)
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
        for name, cand, delta in moves:
            change = cached.score(cand) - s_cur
            ratio = -change / delta
            estimate[name] = ratio
            # down: smallest loss per cost saved, then the larger saving;
            # up: largest gain per cost added, then the smaller addition.
            rank = (ratio, -delta) if not up else (ratio, delta)
            if best is None or rank < best[0]:
                best = (rank, cand)
        current = best[1]
        path.append(dict(current))
        current, moved = _settle(space, cached, current, steps, 1)
        path += moved
        s_cur, c_cur = cached.score(current), cached.cost(current)
        bar.update(1)
        bar.set_postfix(score=f"{s_cur:.4g}", cost=f"{c_cur:.4g}")
    return path


def _n_steps(space, cached, config, steps, up) -> int:
    """Moves of a full walk from ``config``, not counting axes whose first move is cost-neutral."""
    total = 0
    for name, axis in space.axes.items():
        blocks = (axis.size - config[name]) if up else (config[name] - axis.always_on)
        if blocks <= 0:
            continue
        cand = dict(config)
        cand[name] += min(steps[name], blocks) * (1 if up else -1)
        if not _same_cost(cached.cost(cand), cached.cost(config)):
            total += math.ceil(blocks / steps[name])
    return total


def greedy(
    module: nn.Module,
    score: Callable[[Mapping[str, int]], float],
    *,
    cost: str | Callable[[Mapping[str, int]], float] = "macs",
    input_shape: Sequence[int] | None = None,
    step: int | Mapping[str, int] = 1,
    candidates: int | None = None,
    direction: str = "both",
    start: Mapping[str, int] | None = None,
    progress: bool = True,
    cache: bool = True,
) -> Front:
    """Greedy paths through the config space, scoring about ``K·N`` configs for every budget.

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
        Shape of one example, for a metric name: checked against the module, inferred when
        the first layer is a linear one (an MLP), required otherwise.
    step : int or Mapping[str, int]
        Blocks removed (added) per move, per axis when a mapping.
    candidates : int, optional
        Score only this many axes per step (lazy greedy, see the module docstring); default:
        all axes.
    direction : {"both", "down", "up"}
        ``"both"`` (default): peel from the full network down to half the cost range and grow
        from the smallest network up to it; ``"down"``: peel all the way (the classic greedy
        slimming); ``"up"``: grow all the way.
    start : Mapping[str, int], optional
        Starting config of a one-way walk (default: the full network down, the smallest up).
    progress : bool
        Show a progress bar over the steps.
    cache : bool
        Score each config once.

    Returns
    -------
    Front
        Every scored config (path steps and the candidates tried at each step);
        ``front.info["path"]`` lists the configs of the (downward, else upward) path in order
        (cost-neutral moves included) and ``front.info["paths"]`` every walk's path.

    Notes
    -----
    A move that leaves the cost unchanged (a bits axis under ``"macs"`` or ``"params"``, the
    paths of a dropped residual block) is free, so it is never traded against cost: each walk
    first scores every cost-neutral value of every axis and takes the best one, and after every
    move it takes any cost-neutral single step that raises the score (until none does). These
    moves appear in the path between the cost-changing ones, at the same cost. Beyond the ``K``
    of ``candidates``, each step scores one config either way of every cost-neutral axis (more
    when such a step is taken), and each walk starts with one scan of those axes.
    """
    space = Space(module)
    steps = _check_steps(space, step)
    k = _check_candidates(candidates)
    if direction not in ("down", "up", "both"):
        raise ValueError(f"direction must be 'down', 'up' or 'both', got {direction!r}")
    if start is not None and direction == "both":
        raise ValueError("start applies to a one-way walk; use direction='down' or 'up'")
    cost_fn, metric = resolve_cost(module, cost, input_shape)
    cached = CachedScore(space, score, cost_fn, cache=cache)
    walks = []
    if direction in ("down", "both"):
        walks.append((False, space.check(start if start is not None else space.full())))
    if direction in ("up", "both"):
        walks.append((True, space.check(start if start is not None else space.smallest())))
    total = sum(_n_steps(space, cached, config, steps, up) for up, config in walks)
    bounds = {False: None, True: None}
    if direction == "both":  # the walks meet halfway in cost
        middle = 0.5 * (cached.cost(space.smallest()) + cached.cost(space.full()))
        bounds = {False: middle, True: middle}
        total = total // 2
    bar = tqdm(total=total, disable=not progress, desc="greedy search")
    paths = {}
    for up, config in walks:
        paths["up" if up else "down"] = _walk(space, cached, config, steps, k, up, bar, bounds[up])
    bar.close()
    info = {
        "search": "greedy",
        "direction": direction,
        "candidates": k,
        "step": steps,
        "path": paths.get("down", paths.get("up")),
        "paths": paths,
    }
    return Front(cached.points(), cached.evaluations, metric, info)
