"""Summary arithmetic of the segmentation benchmark: the GED-MACs front and the ratios.

Rows are dicts with ``method``, ``seed``, ``config`` (``"full"`` for a method's full network),
``macs``, ``val_ged`` (nested models) and ``test_<metric>``; see ``segmentation.py``.
"""

from __future__ import annotations

from claims_stats import mean_se, t_interval

__all__ = ["front_of", "summarize"]


def front_of(rows: list[dict]) -> list[dict]:
    """Configs not beaten on both MACs and validation GED by another config (Pareto front)."""
    return [
        r
        for r in rows
        if not any(
            o["macs"] <= r["macs"]
            and o["val_ged"] < r["val_ged"]
            or o["macs"] < r["macs"]
            and o["val_ged"] <= r["val_ged"]
            for o in rows
        )
    ]


def summarize(rows: list[dict], seeds: list[int]) -> dict:
    """Per-method means over seeds, the front, and the pre-registered ratios."""
    summary: dict = {}
    full_rows = {(r["method"], r["seed"]): r for r in rows if r["config"] == "full"}
    methods = sorted({m for m, _ in full_rows}, key=str)
    for method in methods:
        for key in ("ged", "hungarian_iou", "pixel_ece", "pixel_nll"):
            values = [
                full_rows[(method, seed)][f"test_{key}"]
                for seed in seeds
                if (method, seed) in full_rows
            ]
            mean, se = mean_se(values)
            summary[f"{method}_{key}"] = mean
            summary[f"{method}_{key}_se"] = se

    def ratio(num: str, den: str) -> list[float]:
        return [
            full_rows[(num, seed)]["test_ged"] / full_rows[(den, seed)]["test_ged"]
            for seed in seeds
            if (num, seed) in full_rows and (den, seed) in full_rows
        ]

    def half_macs(method: str) -> list[float]:
        out = []
        for seed in seeds:
            family = [r for r in rows if r["method"] == method and r["seed"] == seed]
            if not family:
                continue
            top = full_rows[(method, seed)]
            cheap = [r for r in family if r["macs"] <= 0.5 * top["macs"]]
            best = min(cheap, key=lambda r: r["val_ged"])
            out.append(best["test_ged"] / top["test_ged"])
        return out

    for nested in ("bnnn", "fn3"):
        prefix = "" if nested == "bnnn" else "fn3_"
        for key, values in (
            (f"{prefix}ged_ratio_vs_prob_unet", ratio(nested, "prob_unet")),
            (f"{prefix}ged_ratio_vs_mc_dropout", ratio(nested, "mc_dropout")),
            (f"{prefix}half_macs_ged_ratio", half_macs(nested)),
        ):
            if not values:
                summary[key] = None
                continue
            interval = t_interval(values)
            summary[key] = interval["mean"]
            summary[f"{key}_interval"] = [interval["low"], interval["high"]]
    targets = {
        "ged_ratio_vs_prob_unet": 1.0,
        "ged_ratio_vs_mc_dropout": 0.9,
        "half_macs_ged_ratio": 1.1,
    }
    summary["targets"] = {k: f"<= {v}" for k, v in targets.items()}
    summary["met"] = {
        k: None if summary[k] is None else summary[k] <= v for k, v in targets.items()
    }
    # the protocol's decision rule: a target met by the mean is "resolved" when the whole 95 %
    # interval over seeds lies on its side of the threshold
    summary["resolved"] = {
        k: None
        if summary.get(f"{k}_interval") is None or None in summary[f"{k}_interval"]
        else (summary[f"{k}_interval"][1] <= v or summary[f"{k}_interval"][0] > v)
        for k, v in targets.items()
    }
    return summary
