r"""Uncertainty-driven cascade: small sub-network first, larger ones only for uncertain inputs.

A nested network holds a whole family of sub-networks, so it can serve each input with the
cheapest one that is confident about it. The cascade runs stage 0 (the smallest chosen
sub-network) on every input; an input whose uncertainty :math:`u_0(x)` exceeds the threshold
:math:`t_0` is passed on to stage 1, and so on; the last stage answers whatever reaches it.
An input answered by stage :math:`k` costs :math:`\sum_{j \le k} C_j` (every earlier stage ran).

Uncertainty is the predictive entropy :math:`H[\bar p(x)]` or, for per-sample predictions of a
Bayesian network ``(S, N, K)``, the mutual information between prediction and weights (the
epistemic part). Thresholds are chosen on validation data to maximise accuracy subject to an
average cost target (grid search over quantiles of the validation uncertainties).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .. import metrics

__all__ = ["Cascade", "CascadeResult", "cascade_curve", "uncertainty"]

UNCERTAINTIES = ("entropy", "mutual_information")


def uncertainty(probs: torch.Tensor, kind: str = "entropy") -> torch.Tensor:
    """Per-example uncertainty of ``probs`` ``(N, K)`` or ``(S, N, K)``, shape ``(N,)``."""
    if kind not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {kind!r}")
    probs = torch.as_tensor(probs)
    if kind == "mutual_information":
        if probs.dim() != 3:
            raise ValueError(
                "mutual_information needs per-sample probabilities (S, N, K); a single "
                f"prediction of shape {tuple(probs.shape)} has none (use 'entropy')"
            )
        return metrics.mutual_information(probs)
    return metrics.predictive_entropy(probs)


def _mean_probs(probs: torch.Tensor) -> torch.Tensor:
    probs = torch.as_tensor(probs).float()
    if probs.dim() == 3:
        return probs.mean(0)
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, K) or (S, N, K), got shape {tuple(probs.shape)}")
    return probs


@dataclass
class CascadeResult:
    """Outcome of a cascade on a set of inputs.

    Attributes
    ----------
    probs : Tensor, shape ``(N, K)``
        Mean predictive probabilities of the stage that answered each input.
    stage : Tensor, shape ``(N,)``
        Index of that stage.
    cost : Tensor, shape ``(N,)``
        Cost spent on each input (sum of the costs of the stages run).
    """

    probs: torch.Tensor
    stage: torch.Tensor
    cost: torch.Tensor

    @property
    def average_cost(self) -> float:
        return float(self.cost.double().mean())

    def exit_fractions(self, n_stages: int) -> list[float]:
        counts = torch.bincount(self.stage, minlength=n_stages).double()
        return (counts / counts.sum()).tolist()


def _check_costs(costs: Sequence[float], n: int) -> list[float]:
    costs = [float(c) for c in costs]
    if len(costs) != n:
        raise ValueError(f"costs must have one entry per stage ({n}), got {len(costs)}")
    if any(not math.isfinite(c) or c < 0 for c in costs):
        raise ValueError(f"costs must be finite and non-negative, got {costs}")
    return costs


@dataclass
class Cascade:
    """A cascade of sub-networks with escalation thresholds.

    Parameters
    ----------
    costs : sequence of float
        Cost of each stage run on its own (e.g. MACs), cheapest first.
    thresholds : sequence of float
        ``len(costs) - 1`` thresholds: stage ``k`` answers when its uncertainty is
        ``<= thresholds[k]``.
    uncertainty : {"entropy", "mutual_information"}
    configs : sequence of Mapping, optional
        The sub-network of each stage (for :meth:`predict` and reports).
    """

    costs: list[float]
    thresholds: list[float]
    uncertainty: str = "entropy"
    configs: list[dict[str, int]] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.costs) < 1:
            raise ValueError("a cascade needs at least one stage")
        self.costs = _check_costs(self.costs, len(self.costs))
        if len(self.thresholds) != len(self.costs) - 1:
            raise ValueError(
                f"thresholds must have len(costs) - 1 = {len(self.costs) - 1} entries, got "
                f"{len(self.thresholds)}"
            )
        self.thresholds = [float(t) for t in self.thresholds]
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(
                f"uncertainty must be one of {UNCERTAINTIES}, got {self.uncertainty!r}"
            )
        if self.configs is not None and len(self.configs) != len(self.costs):
            raise ValueError("configs must have one entry per stage")

    @property
    def n_stages(self) -> int:
        return len(self.costs)

    def run(self, stage_probs: Sequence[torch.Tensor]) -> CascadeResult:
        """Apply the cascade to precomputed predictions of every stage on the same inputs."""
        if len(stage_probs) != self.n_stages:
            raise ValueError(
                f"stage_probs must have one entry per stage ({self.n_stages}), got {len(stage_probs)}"
            )
        scores = [uncertainty(p, self.uncertainty) for p in stage_probs[:-1]]
        means = [_mean_probs(p) for p in stage_probs]
        return _run(means, scores, self.thresholds, self.costs)

    def evaluate(self, stage_probs: Sequence[torch.Tensor], labels: torch.Tensor) -> dict:
        """Accuracy, average cost and exit fractions on labelled inputs."""
        result = self.run(stage_probs)
        return {
            "accuracy": metrics.accuracy(result.probs, labels),
            "average_cost": result.average_cost,
            "exit_fractions": result.exit_fractions(self.n_stages),
        }

    def predict(
        self,
        predict: Callable[[Mapping[str, int], torch.Tensor], torch.Tensor],
        x: torch.Tensor,
    ) -> CascadeResult:
        """Run the cascade lazily: stage ``k`` only sees the inputs escalated to it.

        ``predict(config, x) -> probs`` of shape ``(B, K)`` or ``(S, B, K)``.
        """
        if self.configs is None:
            raise ValueError("predict needs the configs of the stages (Cascade(configs=...))")
        n = x.shape[0]
        active = torch.arange(n)
        probs: torch.Tensor | None = None
        stage = torch.zeros(n, dtype=torch.long)
        spent = torch.zeros(n, dtype=torch.float64)
        for k, config in enumerate(self.configs):
            out = torch.as_tensor(predict(config, x[active]))
            mean = _mean_probs(out)
            if probs is None:
                probs = torch.zeros(n, mean.shape[-1])
            spent[active] += self.costs[k]
            if k < self.n_stages - 1:
                done = uncertainty(out, self.uncertainty) <= self.thresholds[k]
            else:
                done = torch.ones(len(active), dtype=torch.bool)
            probs[active[done]] = mean[done]
            stage[active[done]] = k
            active = active[~done]
            if len(active) == 0:
                break
        return CascadeResult(probs, stage, spent)

    @classmethod
    def fit(
        cls,
        stage_probs: Sequence[torch.Tensor],
        labels: torch.Tensor,
        costs: Sequence[float],
        target_cost: float,
        *,
        uncertainty: str = "entropy",
        configs: Sequence[Mapping[str, int]] | None = None,
        grid: int = 41,
    ) -> Cascade:
        """Choose thresholds on validation data for an average-cost target.

        Maximises validation accuracy subject to ``average cost <= target_cost``, over
        thresholds at ``grid`` quantiles of each stage's validation uncertainty (plus "escalate
        everything" and "escalate nothing"); exhaustive for up to three stages, coordinate ascent
        beyond. Ties go to the cheaper cascade.

        Raises
        ------
        ValueError
            If even the first stage alone costs more than ``target_cost``.
        """
        n_stages = len(stage_probs)
        if n_stages < 1:
            raise ValueError("stage_probs must hold at least one stage")
        costs = _check_costs(costs, n_stages)
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 2:
            raise ValueError(f"grid must be an int >= 2, got {grid!r}")
        target = float(target_cost)
        if target < costs[0]:
            raise ValueError(
                f"target_cost {target:g} is below the cost of the first stage ({costs[0]:g})"
            )
        labels = torch.as_tensor(labels).long()
        means = [_mean_probs(p) for p in stage_probs]
        scores = [_uncertainty_checked(p, uncertainty) for p in stage_probs[:-1]]
        correct = [(m.argmax(-1) == labels) for m in means]
        candidates = [_threshold_grid(s, grid) for s in scores]

        def objective(thresholds: Sequence[float]) -> tuple[float, float] | None:
            stage = _exit_stage(scores, thresholds, len(labels))
            avg = _average_cost(stage, costs)
            if avg > target * (1 + 1e-12):
                return None
            acc = torch.stack(correct)[stage, torch.arange(len(labels))].double().mean()
            return float(acc), -avg

        best: tuple[tuple[float, float], list[float]] | None = None
        if n_stages - 1 <= 2:
            for thresholds in itertools.product(*candidates):
                value = objective(thresholds)
                if value is not None and (best is None or value > best[0]):
                    best = (value, list(thresholds))
        else:
            # Coordinate ascent from "stage 0 answers everything"; a move sets one threshold
            # and optionally sends everything it escalates straight to the last stage.
            current = [math.inf] * (n_stages - 1)
            best = (objective(current), current)
            improved = True
            while improved:
                improved = False
                for k in range(n_stages - 1):
                    for t in candidates[k]:
                        trial = list(best[1])
                        trial[k] = t
                        for move in (trial, trial[: k + 1] + [-math.inf] * (n_stages - 2 - k)):
                            value = objective(move)
                            if value is not None and value > best[0]:
                                best, improved = (value, move), True
        assert best is not None  # escalating nothing always fits the target
        return cls(
            costs,
            best[1],
            uncertainty,
            None if configs is None else [dict(c) for c in configs],
            {"target_cost": target, "validation_accuracy": best[0][0]},
        )


def _uncertainty_checked(probs: torch.Tensor, kind: str) -> torch.Tensor:
    return uncertainty(probs, kind).double()


def _threshold_grid(scores: torch.Tensor, grid: int) -> list[float]:
    qs = torch.quantile(scores.double(), torch.linspace(0, 1, grid, dtype=torch.float64))
    return sorted({-math.inf, math.inf, *qs.tolist()})


def _exit_stage(scores: Sequence[torch.Tensor], thresholds: Sequence[float], n: int):
    stage = torch.full((n,), len(scores), dtype=torch.long)
    pending = torch.ones(n, dtype=torch.bool)
    for k, (s, t) in enumerate(zip(scores, thresholds, strict=True)):
        done = pending & (s <= t)
        stage[done] = k
        pending &= ~done
    return stage


def _average_cost(stage: torch.Tensor, costs: Sequence[float]) -> float:
    cumulative = torch.tensor(costs, dtype=torch.float64).cumsum(0)
    return float(cumulative[stage].mean())


def _run(means, scores, thresholds, costs) -> CascadeResult:
    n = means[0].shape[0]
    stage = _exit_stage([s.double() for s in scores], thresholds, n)
    probs = torch.stack(means)[stage, torch.arange(n)]
    cumulative = torch.tensor(costs, dtype=torch.float64).cumsum(0)
    return CascadeResult(probs, stage, cumulative[stage])


def cascade_curve(
    val_probs: Sequence[torch.Tensor],
    val_labels: torch.Tensor,
    test_probs: Sequence[torch.Tensor],
    test_labels: torch.Tensor,
    costs: Sequence[float],
    targets: Sequence[float],
    *,
    uncertainty: str = "entropy",
    grid: int = 41,
) -> list[dict]:
    """Accuracy versus average cost: fit a cascade per target on validation, score on test.

    Returns
    -------
    list of dict
        Per target: ``target_cost``, ``thresholds``, ``val_accuracy``, ``accuracy`` and
        ``average_cost`` (test), ``exit_fractions`` (test).
    """
    rows = []
    for target in targets:
        cascade = Cascade.fit(
            val_probs, val_labels, costs, target, uncertainty=uncertainty, grid=grid
        )
        result = cascade.evaluate(test_probs, test_labels)
        rows.append(
            {
                "target_cost": float(target),
                "thresholds": cascade.thresholds,
                "val_accuracy": cascade.info["validation_accuracy"],
                **result,
            }
        )
    return rows
