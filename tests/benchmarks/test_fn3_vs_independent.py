"""The FN3 vs independent benchmark's runs, paired gaps and summary on constructed records."""

import importlib.util
import sys
from pathlib import Path

from bayes_nest.testing import assert_close

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location(
    "fn3_vs_independent", ROOT / "benchmarks" / "fn3_vs_independent.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_one_joint_run_covers_every_size_the_independent_runs_cover():
    runs = bench.runs()
    independent = [
        cell for name, r in runs.items() if name.startswith("independent") for cell in r["cells"]
    ]
    assert len(independent) == 7 == len(set(independent))
    assert set(runs["joint"]["cells"]) == set(independent)
    assert set(runs["fn3/width"]["cells"]) | set(runs["fn3/bits"]["cells"]) == set(independent)


def _records():
    records = []
    for seed in (0, 1, 2):
        for family, level in (("width", 2), ("bits", 4)):
            accs = {"independent": 0.90, "fn3": 0.89 + 0.001 * seed, "joint": 0.87}
            if (family, level) == ("width", 2):
                accs["fn3"] = 0.88 - 0.002 * seed
            for method, acc in accs.items():
                records.append(
                    {"dataset": "d", "seed": seed, "family": family, "level": level}
                    | {"method": method, "test_accuracy": acc}
                )
    return records


def test_gaps_are_paired_over_seeds_and_the_worst_cell_is_reported():
    table = bench.cells(_records())
    worst = max((c for c in table if c["method"] == "fn3"), key=lambda c: c["gap_pp"])
    # Width 2: gaps 2.0, 2.2, 2.4 pp.
    assert (worst["family"], worst["level"]) == ("width", 2)
    assert_close(worst["gap_pp"], 2.2)
    low, high = worst["gap_pp_interval"]
    assert low < 2.2 < high
    times = {"d": {"independent": 10.0, "joint": 3.0, "fn3/width": 2.0, "fn3/bits": 2.5}}
    summary = bench.summarize(table, times)
    assert_close(summary["max_accuracy_gap_pp"], 2.2)
    assert_close(summary["joint_max_accuracy_gap_pp"], 3.0)
    assert_close(summary["train_time_ratio"], 0.3)
    assert_close(summary["two_run_train_time_ratio"], 0.45)
    assert summary["verdict"]["accuracy"] is False and summary["verdict"]["cost"] is True
    # Joint gaps are exactly 3 pp on every seed (zero spread): its interval sits above 2.
    assert "d joint width 2" in summary["verdict"]["cells_missing_target"]
    assert "d fn3 bits 4" not in summary["verdict"]["cells_missing_target"]
