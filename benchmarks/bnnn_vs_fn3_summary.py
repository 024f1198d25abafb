"""Cells, paired comparisons and the summary of ``bnnn_vs_fn3.py`` (protocol version 1).

Seed rows carry ``dataset, seed, method, width`` and the metrics of :data:`METRICS`. A *cell* is
one dataset x method x width; comparisons pair a BNNN row with ``fn3_ts`` (or a full-width
baseline) seed by seed. All intervals come from ``claims_stats``.
"""

from __future__ import annotations

import statistics

from claims_stats import mean_se, paired_interval, t_interval

OOD_SETS = ("heldout", "noise", "corruption")
OOD_METRICS = tuple(f"{m}_{s}" for s in OOD_SETS for m in ("auroc", "aupr", "fpr95"))
METRICS = ("accuracy", "nll", "ece", "brier", *OOD_METRICS)
BNNN_ROWS = {"": "bnnn", "_unscaled": "bnnn_unscaled", "_true": "bnnn_true"}
BNNN_ROWS["_true_unscaled"] = "bnnn_true_unscaled"
REFERENCE = "fn3_ts"
FULL_WIDTH_BASELINES = ("mc_dropout_ts", "ensemble")
# Paired differences reported per cell; percentage points for the bounded scores.
COMPARED = {"accuracy": 100.0, "ece": 1.0, "nll": 1.0, **{f"auroc_{s}": 100.0 for s in OOD_SETS}}


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["dataset"], r["method"], r["width"], r["seed"]): r for r in rows}


def _paired(index, dataset, a, b, width, seeds, metric, scale) -> dict:
    first = [index[dataset, a, width, s][metric] for s in seeds]
    second = [index[dataset, b, width, s][metric] for s in seeds]
    return paired_interval(first, second, scale=scale)


def cells(rows: list[dict]) -> list[dict]:
    """Mean ± s.e. over seeds of every metric, per dataset, method and width."""
    out = []
    for dataset, method, width in sorted({(r["dataset"], r["method"], r["width"]) for r in rows}):
        sel = [
            r for r in rows if (r["dataset"], r["method"], r["width"]) == (dataset, method, width)
        ]
        cell = {"kind": "cell", "dataset": dataset, "method": method, "width": width}
        cell["seeds"] = len(sel)
        for metric in METRICS:
            cell[metric], cell[f"{metric}_se"] = mean_se([r[metric] for r in sel])
        out.append(cell)
    return out


def comparisons(rows: list[dict]) -> list[dict]:
    """Paired differences (first − second) with 95 % intervals, for every compared cell."""
    index = _index(rows)
    seeds = sorted({r["seed"] for r in rows})
    datasets = sorted({r["dataset"] for r in rows})
    widths = sorted({r["width"] for r in rows if r["method"] == REFERENCE})
    pairs = [(d, b, REFERENCE, w) for d in datasets for b in BNNN_ROWS.values() for w in widths]
    pairs += [(d, "bnnn", base, max(widths)) for d in datasets for base in FULL_WIDTH_BASELINES]
    out = []
    for dataset, first, second, width in pairs:
        row = {"kind": "paired", "dataset": dataset, "first": first, "second": second}
        row["width"] = width
        for metric, scale in COMPARED.items():
            ci = _paired(index, dataset, first, second, width, seeds, metric, scale)
            row[f"{metric}_diff"] = ci["mean"]
            row[f"{metric}_diff_interval"] = [ci["low"], ci["high"]]
        out.append(row)
    return out


def _per_seed(rows: list[dict], method: str, metric: str) -> list[float]:
    """Per seed: the mean of ``metric`` over datasets and widths of ``method``."""
    seeds = sorted({r["seed"] for r in rows})
    return [
        statistics.mean(r[metric] for r in rows if r["method"] == method and r["seed"] == s)
        for s in seeds
    ]


def _mean_over_ood_sets(rows: list[dict], method: str) -> list[float]:
    """Per seed: AUROC averaged over datasets, widths and the OOD sets."""
    per_set = [_per_seed(rows, method, f"auroc_{s}") for s in OOD_SETS]
    return [statistics.mean(values) for values in zip(*per_set, strict=True)]


def _interval(ci: dict) -> list:
    return [ci["low"], ci["high"]]


def headline(rows: list[dict], paired: list[dict], method: str) -> dict:
    """The protocol's three summary figures for one BNNN row against ``fn3_ts``."""
    bnnn_ece, ref_ece = _per_seed(rows, method, "ece"), _per_seed(rows, REFERENCE, "ece")
    all_b = [r["ece"] for r in rows if r["method"] == method]
    all_r = [r["ece"] for r in rows if r["method"] == REFERENCE]
    ratio_ci = t_interval([b / r for b, r in zip(bnnn_ece, ref_ece, strict=True)])
    acc_ci = paired_interval(
        _per_seed(rows, method, "accuracy"), _per_seed(rows, "fn3", "accuracy"), scale=100.0
    )
    gains = []
    for row in paired:
        if row["first"] == method and row["second"] == REFERENCE:
            for s in OOD_SETS:
                gains.append((row[f"auroc_{s}_diff"], row, s))
    worst, worst_row, worst_set = min(gains, key=lambda g: g[0])
    mean_gain = paired_interval(
        _mean_over_ood_sets(rows, method), _mean_over_ood_sets(rows, REFERENCE), scale=100.0
    )
    return {
        "ece_ratio_vs_fn3_ts": statistics.mean(all_b) / statistics.mean(all_r),
        "ece_ratio_vs_fn3_ts_interval": _interval(ratio_ci),
        "accuracy_gain_pp": acc_ci["mean"],
        "accuracy_gain_pp_interval": _interval(acc_ci),
        "min_auroc_gain_pp": worst,
        "min_auroc_gain_pp_interval": worst_row[f"auroc_{worst_set}_diff_interval"],
        "min_auroc_gain_cell": f"{worst_row['dataset']} width {worst_row['width']} {worst_set}",
        "mean_auroc_gain_pp": mean_gain["mean"],
        "mean_auroc_gain_pp_interval": _interval(mean_gain),
    }


def verdict(figures: dict) -> dict | None:
    """The protocol's decision rule; ``None`` without intervals (one seed)."""
    ratio_low, ratio_high = figures["ece_ratio_vs_fn3_ts_interval"]
    if ratio_low is None:
        return None
    ratio = figures["ece_ratio_vs_fn3_ts"]
    acc_high = figures["accuracy_gain_pp_interval"][1]
    calibration = (
        "supported"
        if ratio <= 0.8 and ratio_high < 1
        else "refuted"
        if ratio_low > 1
        else "not shown"
    )
    accuracy = (
        "supported"
        if figures["accuracy_gain_pp"] >= 0
        else "refuted"
        if acc_high < 0
        else "inconclusive"
    )
    ood = (
        "supported"
        if figures["min_auroc_gain_pp"] >= 0
        else "refuted"
        if figures["mean_auroc_gain_pp_interval"][1] < 0
        else "partly supported"
    )
    return {"calibration": calibration, "accuracy": accuracy, "ood_detection": ood}


def summarize(rows: list[dict], paired: list[dict]) -> dict:
    """Summary keys of the protocol (primary ``bnnn``) plus the suffixed BNNN variants."""
    summary: dict = {}
    for suffix, method in BNNN_ROWS.items():
        figures = headline(rows, paired, method)
        summary.update({f"{key}{suffix}": value for key, value in figures.items()})
        summary[f"verdict{suffix}"] = verdict(figures)
    summary["targets"] = {
        "ece_ratio_vs_fn3_ts": "<= 0.8",
        "accuracy_gain_pp": ">= 0",
        "min_auroc_gain_pp": ">= 0",
    }
    return summary
