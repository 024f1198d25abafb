"""The BNNN vs FN3 benchmark's summary arithmetic and decision rule on constructed rows."""

import importlib.util
import sys
from pathlib import Path

import pytest

from bayes_nest.testing import assert_close

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location(
    "bnnn_vs_fn3_summary", ROOT / "benchmarks" / "bnnn_vs_fn3_summary.py"
)
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)

SEEDS = (0, 1, 2)


def _row(method, width, seed, ece, acc, auroc):
    row = {"dataset": "d", "method": method, "width": width, "seed": seed}
    row.update(dict.fromkeys(summary.METRICS, 0.5))
    row.update(ece=ece, accuracy=acc, nll=1.0)
    for s in summary.OOD_SETS:
        row[f"auroc_{s}"] = auroc
    return row


def _rows(bnnn_ece=0.05, bnnn_acc=0.91, worst_auroc=0.80):
    rows = []
    for seed in SEEDS:
        for width in (1, 2):
            rows.append(_row("fn3", width, seed, 0.12, 0.90, 0.85))
            rows.append(_row("fn3_ts", width, seed, 0.10, 0.90, 0.85))
            for name in summary.BNNN_ROWS.values():
                auroc = worst_auroc + 0.01 * seed if width == 1 else 0.90
                rows.append(_row(name, width, seed, bnnn_ece + 0.001 * seed, bnnn_acc, auroc))
        for base in summary.FULL_WIDTH_BASELINES:
            rows.append(_row(base, 2, seed, 0.08, 0.92, 0.88))
    return rows


def test_headline_figures_follow_their_definitions():
    rows = _rows()
    figures = summary.headline(rows, summary.comparisons(rows), "bnnn")
    # Mean BNNN ECE 0.051 (seeds add 0, 1, 2 thousandths) over fn3_ts's 0.10.
    assert_close(figures["ece_ratio_vs_fn3_ts"], 0.51)
    low, high = figures["ece_ratio_vs_fn3_ts_interval"]
    assert low < 0.51 < high < 1
    assert_close(figures["accuracy_gain_pp"], 1.0)
    # Worst cell: width 1, seed-mean AUROC 0.81 against 0.85.
    assert_close(figures["min_auroc_gain_pp"], -4.0)
    assert figures["min_auroc_gain_cell"].startswith("d width 1")


def test_verdicts_apply_the_pre_registered_rule():
    good = summary.headline(
        _rows(worst_auroc=0.86), summary.comparisons(_rows(worst_auroc=0.86)), "bnnn"
    )
    assert summary.verdict(good) == {
        "calibration": "supported",
        "accuracy": "supported",
        "ood_detection": "supported",
    }
    bad_rows = _rows(bnnn_ece=0.2, bnnn_acc=0.85)
    bad = summary.headline(bad_rows, summary.comparisons(bad_rows), "bnnn")
    verdicts = summary.verdict(bad)
    assert verdicts["calibration"] == "refuted" and verdicts["ood_detection"] == "partly supported"
    # Accuracy lower by exactly 5 pp on every seed: zero spread, so the interval is the point.
    assert verdicts["accuracy"] == "refuted"


def test_one_seed_gives_no_interval_and_no_verdict():
    rows = [r for r in _rows() if r["seed"] == 0]
    figures = summary.headline(rows, summary.comparisons(rows), "bnnn")
    assert figures["accuracy_gain_pp_interval"] == [None, None]
    assert summary.verdict(figures) is None


@pytest.mark.parametrize("suffix", ["", "_unscaled", "_true", "_true_unscaled"])
def test_summary_names_every_bnnn_row(suffix):
    rows = _rows()
    out = summary.summarize(rows, summary.comparisons(rows))
    for key in ("ece_ratio_vs_fn3_ts", "accuracy_gain_pp", "min_auroc_gain_pp"):
        assert f"{key}{suffix}" in out
