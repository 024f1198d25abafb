"""Write docs/benchmarks.md from the full-mode results in benchmarks/results/*.json.

Run after a benchmark: ``python benchmarks/docs_page.py``. ``--check`` exits 1 when the page is
not what the current results give (the test suite runs it, so the page cannot drift).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"

# The claim each benchmark checks: (results file, summary key, target, comparison).
HEADLINES = [
    ("downhill_sampling", "time_ratio_vs_relaxed", 1.25, "<="),
    ("gradient_variance", "variance_ratio_reinforce_over_downhill", 100.0, ">="),
    ("fn3_vs_independent", "max_accuracy_gap_pp", 1.0, "<="),
    ("fn3_vs_independent", "train_time_ratio", 0.5, "<="),
    ("training_overhead", "epoch_time_ratio", 1.0, "<="),
    ("bnnn_vs_fn3", "ece_ratio", 0.7, "<="),
    ("bnnn_vs_fn3", "widths_better_ece_frac", 0.75, ">="),
    ("bnnn_vs_fn3", "min_auroc_gain_pp", 0.0, ">="),
    ("bnnn_vs_fn3", "epoch_time_ratio", 2.5, "<="),
    ("search_quality", "max_gap_to_exhaustive_pp", 0.5, "<="),
    ("search_quality", "evaluation_ratio", 20.0, ">="),
    ("search_quality", "beats_random", True, "=="),
    ("search_quality", "beats_evolutionary", True, "=="),
    ("export_speed", "min_speedup_efficiency", 0.7, ">="),
    ("cascade", "accuracy_gain_pp", 0.0, ">"),
    ("gpu_throughput", "nested_over_plain_throughput", 0.95, ">="),
]

INTRO = """# Benchmarks

Every claim of speed or quality has a script under `benchmarks/` that runs bayes_nest and its
baseline side by side in one process and writes `benchmarks/results/<name>.json`. This page is
generated from those files (`python benchmarks/docs_page.py`); the numbers are from the full mode
of each script (`python benchmarks/<name>.py`; `--quick` runs a short version in under a minute).
Timings are medians of repeats reported as ratios against the baseline measured in the same run,
on the CPU machine named in each section; ratios move by about ±0.1 between runs on a shared
machine. Accuracy comparisons average several seeds (see each file's `config`).
"""


def _format(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _met(value, target, op: str) -> bool:
    if op == "==":
        return value == target
    return {"<=": value <= target, ">=": value >= target, ">": value > target}[op]


def _scalars(summary: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_scalars(value, f"{name}."))
        elif isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 120):
            rows.append((name, _format(value)))
    return rows


def render() -> str:
    results = {
        path.stem: json.loads(path.read_text())
        for path in sorted(RESULTS.glob("*.json"))
        if not path.stem.endswith("_quick")
    }
    lines = [
        INTRO,
        "## Claims and targets",
        "",
        "| benchmark | summary key | target | result | met |",
    ]
    lines.append("|---|---|---|---|---|")
    for name, key, target, op in HEADLINES:
        summary = results.get(name, {}).get("summary", {})
        if key not in summary:
            lines.append(f"| `{name}` | `{key}` | {op} {_format(target)} | not run | — |")
            continue
        value = summary[key]
        met = "yes" if _met(value, target, op) else "**no**"
        lines.append(f"| `{name}` | `{key}` | {op} {_format(target)} | {_format(value)} | {met} |")
    for name, data in results.items():
        machine = data.get("machine", {})
        where = ", ".join(
            f"{k} {machine[k]}"
            for k in ("processor", "cpu_count", "torch", "torch_threads")
            if k in machine
        )
        lines += [
            "",
            f"## {name}",
            "",
            f"`python benchmarks/{name}.py`" + (f" — {where}" if where else ""),
        ]
        lines += ["", "| summary key | value |", "|---|---|"]
        lines += [f"| `{key}` | {value} |" for key, value in _scalars(data.get("summary", {}))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} is out of date: run python benchmarks/docs_page.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
