"""Variance of the pathwise Downhill gradient versus REINFORCE with a baseline.

Claim: the reparameterised (pathwise) gradient of ``E[f(m)]``, ``m ~ Downhill(keep_logits, tau)``,
has far lower variance than the score-function (REINFORCE) estimator of the same gradient,
even with a leave-one-out baseline (target: variance ratio >= 100).

Toy objective with a known optimum: ``f(m) = mean_i (m_i - t_i)^2`` with the hard mask
``t_i = 1[i <= D/2]``. Its infimum 0 is reached when the keep count is ``D/2`` with probability
one (``q = delta_{D/2}``), where every Concrete draw is exactly the one-hot vector.

Both estimators use ``K = 4`` draws per estimate and the same objective:

* pathwise: ``grad mean_k f(m_k)`` with ``m_k = rsample()``;
* REINFORCE: ``mean_k (f(m_k) - b_k) grad log p(m_k)`` with ``m_k = sample()`` and the
  leave-one-out baseline ``b_k = mean_{j != k} f(m_j)``.

For each setting (D, tau, evaluation point) we draw ``R`` independent estimates and report the
total variance (trace of the covariance) of each, their ratio, and the largest z-score of the
difference of their means (both are unbiased, so it should be a few units at most). A second
table runs Adam (lr 0.1) with each estimator from ``keep_logits = 0`` and reports ``E[f]`` and
``q(D/2)`` after a fixed number of steps (optimum: 0 and 1). float64, one thread.

Run ``python benchmarks/gradient_variance.py`` (full) or ``--quick`` (under a minute).
"""

from __future__ import annotations

from pathlib import Path

import torch
from _bench import benchmark_args, print_table, write_result

from bayes_nest.distributions import Downhill

RESULTS = Path(__file__).resolve().parent / "results" / "gradient_variance.json"
DRAWS = 4


def objective(size: int):
    target = (torch.arange(size) < size // 2).double()

    def f(m: torch.Tensor) -> torch.Tensor:
        return ((m - target) ** 2).mean(-1)

    return f


def evaluation_point(size: int, name: str) -> torch.Tensor:
    """``start``: all keep logits 0; ``midway``: +2 up to D/2, -2 at D/2 + 1, 0 after."""
    logits = torch.zeros(size, dtype=torch.float64)
    if name == "midway":
        logits[: size // 2] = 2.0
        logits[size // 2] = -2.0
    return logits


def gradient_estimates(keep_logits, temperature, estimator, estimates, f):
    """``estimates`` independent gradient estimates, shape ``(estimates, D)``."""
    leaf = keep_logits.expand(estimates, 1, -1).clone().requires_grad_()
    downhill = Downhill(keep_logits=leaf, temperature=temperature, validate_args=False)
    if estimator == "pathwise":
        surrogate = f(downhill.rsample((DRAWS,))).mean(0).sum()
    else:
        m = downhill.sample((DRAWS,))
        values = f(m)
        baseline = (values.sum(0, keepdim=True) - values) / (DRAWS - 1)
        surrogate = ((values - baseline) * downhill.log_prob(m)).mean(0).sum()
    (grad,) = torch.autograd.grad(surrogate, leaf)
    return grad.squeeze(1)


def variance_rows(sizes, temperatures, points, estimates) -> list[dict]:
    rows = []
    for size in sizes:
        f = objective(size)
        for temperature in temperatures:
            for point in points:
                keep_logits = evaluation_point(size, point)
                pathwise = gradient_estimates(keep_logits, temperature, "pathwise", estimates, f)
                reinforce = gradient_estimates(keep_logits, temperature, "reinforce", estimates, f)
                var_p, var_r = pathwise.var(0), reinforce.var(0)
                standard_error = ((var_p + var_r) / estimates).sqrt().clamp_min(1e-300)
                z = ((pathwise.mean(0) - reinforce.mean(0)).abs() / standard_error).max()
                rows.append(
                    {
                        "D": size,
                        "temperature": temperature,
                        "point": point,
                        "var_pathwise": var_p.sum().item(),
                        "var_reinforce": var_r.sum().item(),
                        "variance_ratio": (var_r.sum() / var_p.sum()).item(),
                        "max_mean_z": z.item(),
                    }
                )
    return rows


def optimisation_rows(sizes, temperature, steps) -> list[dict]:
    rows = []
    for size in sizes:
        f = objective(size)
        for estimator in ("pathwise", "reinforce"):
            torch.manual_seed(1)
            keep_logits = torch.zeros(size, dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.Adam([keep_logits], lr=0.1)
            for _ in range(steps):
                grad = gradient_estimates(keep_logits.detach(), temperature, estimator, 1, f)
                keep_logits.grad = grad[0]
                optimizer.step()
            final = Downhill(keep_logits=keep_logits.detach(), temperature=temperature)
            with torch.no_grad():
                value = f(final.rsample((4096,))).mean().item()
            rows.append(
                {
                    "D": size,
                    "temperature": temperature,
                    "estimator": estimator,
                    "steps": steps,
                    "objective": value,
                    "q_optimal_count": final.index_distribution.probs[size // 2].item(),
                }
            )
    return rows


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, "fewer estimates (under a minute)")

    torch.set_num_threads(1)
    torch.manual_seed(0)
    sizes, temperatures, points = (8, 32, 128), (0.1, 0.5, 1.0, 2.0), ("start", "midway")
    estimates, steps = (500, 100) if args.quick else (4000, 400)
    rows = variance_rows(sizes, temperatures, points, estimates)
    training = optimisation_rows((8, 32), 0.5, steps)

    print(f"gradient variance (trace of covariance), {estimates} estimates of {DRAWS} draws each")
    print_table(rows)
    print(f"\nAdam, lr 0.1, one estimate of {DRAWS} draws per step")
    print_table(training)

    ratios = [r["variance_ratio"] for r in rows]
    summary = {
        "variance_ratio_reinforce_over_downhill": min(ratios),
        "target_variance_ratio": 100.0,
        "median_variance_ratio": float(torch.tensor(ratios).median()),
        "min_variance_ratio_by_D": {
            str(size): min(r["variance_ratio"] for r in rows if r["D"] == size) for size in sizes
        },
        "min_variance_ratio_by_temperature": {
            str(t): min(r["variance_ratio"] for r in rows if r["temperature"] == t)
            for t in temperatures
        },
        "max_mean_z": max(r["max_mean_z"] for r in rows),
    }
    config = {
        "quick": args.quick,
        "sizes": list(sizes),
        "temperatures": list(temperatures),
        "points": list(points),
        "estimates": estimates,
        "draws_per_estimate": DRAWS,
        "objective": "mean_i (m_i - 1[i <= D/2])^2",
        "reinforce_baseline": "leave-one-out over the draws of an estimate",
        "optimisation": {"sizes": [8, 32], "temperature": 0.5, "steps": steps, "lr": 0.1},
        "dtype": "float64",
    }
    rows_out = [{"table": "variance", **r} for r in rows] + [
        {"table": "optimisation", **r} for r in training
    ]
    path = write_result(args.out, "gradient_variance", config, rows_out, summary)
    print("\nsummary:", summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
