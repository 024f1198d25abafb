"""Baseline searches: exhaustive (small spaces), random search and an evolutionary search.

They take the same ``(module, score, cost, input_shape)`` arguments as
:func:`~bayes_nest.search.greedy` and return a :class:`~bayes_nest.search.Front`, so the
searches can be compared at equal numbers of score evaluations (``evaluations=``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence

from torch import nn
from tqdm.auto import tqdm

from ._common import CachedScore, Space, resolve_cost
from .front import Front

__all__ = ["exhaustive", "evolutionary", "random_search"]

ScoreFn = Callable[[Mapping[str, int]], float]
CostArg = str | Callable[[Mapping[str, int]], float]


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def exhaustive(
    module: nn.Module,
    score: ScoreFn,
    *,
    cost: CostArg = "macs",
    input_shape: Sequence[int] | None = None,
    max_configs: int = 100_000,
    progress: bool = True,
) -> Front:
    """Score every config of the space (the oracle for small spaces).

    Raises
    ------
    ValueError
        If the space has more than ``max_configs`` configs (use :func:`greedy`).
    """
    space = Space(module)
    _check_positive_int(max_configs, "max_configs")
    size = space.size()
    if size > max_configs:
        raise ValueError(
            f"the search space has {size} configs, more than max_configs={max_configs}; use "
            "greedy (or raise max_configs)"
        )
    cost_fn, metric = resolve_cost(module, cost, input_shape)
    cached = CachedScore(space, score, cost_fn)
    ranges = [range(a.always_on, a.size + 1) for a in space.axes.values()]
    for counts in tqdm(
        itertools.product(*ranges), total=size, disable=not progress, desc="exhaustive"
    ):
        config = dict(zip(space.names, counts, strict=True))
        cached.score(config)
        cached.cost(config)
    return Front(cached.points(), cached.evaluations, metric, {"search": "exhaustive"})


def _random_config(space: Space, rng: random.Random) -> dict[str, int]:
    return {n: rng.randint(a.always_on, a.size) for n, a in space.axes.items()}


def random_search(
    module: nn.Module,
    score: ScoreFn,
    *,
    cost: CostArg = "macs",
    input_shape: Sequence[int] | None = None,
    evaluations: int,
    seed: int = 0,
    include_extremes: bool = True,
    progress: bool = True,
) -> Front:
    """Score ``evaluations`` distinct configs drawn uniformly from the space.

    ``include_extremes`` spends two of them on the full and the smallest network.
    """
    space = Space(module)
    _check_positive_int(evaluations, "evaluations")
    cost_fn, metric = resolve_cost(module, cost, input_shape)
    cached = CachedScore(space, score, cost_fn)
    rng = random.Random(seed)
    target = min(evaluations, space.size())
    bar = tqdm(total=target, disable=not progress, desc="random search")
    queue = [space.full(), space.smallest()] if include_extremes else []
    while cached.evaluations < target:
        config = queue.pop() if queue else _random_config(space, rng)
        if cached.seen(config):
            continue
        cached.score(config)
        cached.cost(config)
        bar.update(1)
    bar.close()
    return Front(cached.points(), cached.evaluations, metric, {"search": "random", "seed": seed})


def _budget_grid(cached: CachedScore, space: Space, n: int) -> list[float]:
    lo, hi = cached.cost(space.smallest()), cached.cost(space.full())
    return [lo + (hi - lo) * (i + 1) / (n + 1) for i in range(n)] + [hi]


def evolutionary(
    module: nn.Module,
    score: ScoreFn,
    *,
    cost: CostArg = "macs",
    input_shape: Sequence[int] | None = None,
    evaluations: int,
    budgets: float | Sequence[float] | None = None,
    population: int = 16,
    parent_fraction: float = 0.25,
    mutation_fraction: float = 0.5,
    mutation_prob: float = 0.1,
    seed: int = 0,
    max_tries: int = 1000,
    progress: bool = True,
) -> Front:
    """Once-for-All-style evolutionary search under cost budgets.

    For each budget, a population of random configs within the budget (rejection sampling on
    the cost, which is cheap; the smallest network when sampling finds none) evolves: the best ``parent_fraction`` survive; a
    ``mutation_fraction`` of the children are mutations of a random parent (each axis redrawn
    with probability ``mutation_prob``), the rest crossovers of two parents (each axis taken
    from either); children over budget are redrawn. The ``evaluations`` are split equally
    between the budgets, and configs scored for one budget are reused by the others.

    Parameters
    ----------
    budgets : float or sequence of float, optional
        Cost budgets; default: four evenly spaced between the smallest and the full network's
        cost, plus the full cost.
    population : int
        Population size per generation.

    Returns
    -------
    Front
        Every scored config.
    """
    space = Space(module)
    _check_positive_int(evaluations, "evaluations")
    _check_positive_int(population, "population")
    _check_positive_int(max_tries, "max_tries")
    parent_fraction = _check_fraction(parent_fraction, "parent_fraction")
    mutation_fraction = _check_fraction(mutation_fraction, "mutation_fraction")
    mutation_prob = _check_fraction(mutation_prob, "mutation_prob")
    cost_fn, metric = resolve_cost(module, cost, input_shape)
    cached = CachedScore(space, score, cost_fn)
    rng = random.Random(seed)
    if budgets is None:
        budget_list = _budget_grid(cached, space, 4)
    elif isinstance(budgets, int | float):
        budget_list = [float(budgets)]
    else:
        budget_list = [float(b) for b in budgets]
    if not budget_list:
        raise ValueError("budgets must not be empty")
    floor = cached.cost(space.smallest())
    too_small = [b for b in budget_list if b < floor]
    if too_small:
        raise ValueError(
            f"budget {too_small[0]:g} is below the cost of the smallest sub-network ({floor:g})"
        )
    limit = min(evaluations, space.size())
    shares = [limit * (i + 1) // len(budget_list) for i in range(len(budget_list))]
    bar = tqdm(total=limit, disable=not progress, desc="evolutionary search")

    def within(budget: float, make: Callable[[], dict[str, int]]) -> dict[str, int] | None:
        for _ in range(max_tries):
            config = make()
            if cached.cost(config) <= budget:
                return config
        return None

    def evaluate(config: dict[str, int]) -> float:
        before = cached.evaluations
        value = cached.score(config)
        bar.update(cached.evaluations - before)
        return value

    for budget, share in zip(budget_list, shares, strict=True):
        pop: list[dict[str, int]] = []
        stalls = 0
        while len(pop) < population and cached.evaluations < share and stalls < max_tries:
            config = within(budget, lambda: _random_config(space, rng))
            if config is None:  # a tight budget: start from the smallest network (it fits)
                config = space.smallest()
                if config in pop:
                    break
            stalls += cached.seen(config)
            evaluate(config)
            pop.append(config)
        n_parents = max(1, round(parent_fraction * population))
        while cached.evaluations < share and stalls < max_tries and pop:
            pop.sort(key=lambda c: -cached.score(c))
            parents = pop[:n_parents]
            children: list[dict[str, int]] = []
            n_mutate = round(mutation_fraction * (population - len(parents)))
            for i in range(population - len(parents)):
                if i < n_mutate or len(parents) < 2:
                    parent = rng.choice(parents)

                    def make(parent=parent) -> dict[str, int]:
                        return {
                            n: (
                                rng.randint(a.always_on, a.size)
                                if rng.random() < mutation_prob
                                else parent[n]
                            )
                            for n, a in space.axes.items()
                        }
                else:
                    mother, father = rng.sample(parents, 2)

                    def make(mother=mother, father=father) -> dict[str, int]:
                        return {n: rng.choice((mother[n], father[n])) for n in space.names}

                child = within(budget, make)
                if child is None or cached.evaluations >= share:
                    continue
                stalls = stalls + 1 if cached.seen(child) else 0
                evaluate(child)
                children.append(child)
            pop = parents + children
    bar.close()
    info = {"search": "evolutionary", "budgets": budget_list, "seed": seed}
    return Front(cached.points(), cached.evaluations, metric, info)
