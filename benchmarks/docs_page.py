"""Write docs/benchmarks.md and docs/claims.md from the full-mode results in benchmarks/results.

Run after a benchmark: ``python benchmarks/docs_page.py``. ``--check`` exits 1 when a page is
not what the current results give (the test suite runs it, so the pages cannot drift). The
claims page and the rule for pre-registered benchmarks live in ``docs_claims.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docs_claims  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
CLAIMS_PAGE = ROOT / "docs" / "claims.md"

# The claim each benchmark checks: (results file, summary key, target, comparison).
HEADLINES = [
    ("downhill_sampling", "time_ratio_vs_relaxed", 1.25, "<="),
    ("gradient_variance", "variance_ratio_reinforce_over_downhill", 100.0, ">="),
    ("fn3_vs_independent", "max_accuracy_gap_pp", 1.0, "<="),
    ("fn3_vs_independent", "joint_max_accuracy_gap_pp", 2.0, "<="),
    ("fn3_vs_independent", "train_time_ratio", 0.5, "<="),
    ("ordering", "fn3_prefix_minus_random_pp", 10.0, ">="),
    ("training_overhead", "epoch_time_ratio", 1.0, "<="),
    ("bnnn_vs_fn3", "ece_ratio_vs_fn3_ts", 0.8, "<="),
    ("bnnn_vs_fn3", "accuracy_gain_pp", 0.0, ">="),
    ("bnnn_vs_fn3", "min_auroc_gain_pp", 0.0, ">="),
    ("search_quality", "max_gap_to_exhaustive_pp", 0.5, "<="),
    ("search_quality", "evaluation_ratio", 20.0, ">="),
    ("search_quality", "beats_random", True, "=="),
    ("search_quality", "beats_evolutionary", True, "=="),
    ("export_speed", "min_speedup_efficiency", 0.7, ">="),
    ("cascade", "accuracy_gain_pp", 0.0, ">"),
    ("gpu_throughput", "nested_over_plain_throughput", 0.95, ">="),
    ("gpu_throughput_cuda", "nested_over_plain_throughput", 0.95, ">="),
    ("cuda_check", "amp_max_accuracy_drop_pp", 3.0, "<="),
    ("cuda_check", "bnnn_accuracy", 0.85, ">="),
    ("segmentation", "ged_ratio_vs_prob_unet", 1.0, "<="),
    ("segmentation", "ged_ratio_vs_mc_dropout", 0.9, "<="),
    ("segmentation", "half_macs_ged_ratio", 1.1, "<="),
    ("ordered_vae", "max_elbo_gap_frac", 0.02, "<="),
    ("ordered_vae", "truncation_gain", 3.0, ">="),
    ("bnnn_speed", "epoch_time_ratio", 2.5, "<="),
    ("bnnn_speed", "epoch_time_ratio_vs_pyro_bnn", 0.5, "<="),
]

INTRO = """# Benchmarks

Every claim of speed or quality has a script under `benchmarks/` that runs bayes_nest and its
baseline side by side in one process and writes `benchmarks/results/<name>.json`. This page is
generated from those files (`python benchmarks/docs_page.py`); the numbers are from the full mode
of each script (`python benchmarks/<name>.py`; `--quick` runs a short version in under a minute).
Timings are medians of repeats reported as ratios against the baseline measured in the same run,
on the machine named in each section (a CPU unless a GPU is named); ratios move by about ±0.1 between runs on a shared
machine. Accuracy comparisons average several seeds (see each file's `config`). The papers'
claims, with what each benchmark shows about them, are on [Claims](claims.md); a pre-registered
benchmark (`benchmarks/protocols/`) reads "pending full run" here until a full run under its
current protocol is committed.
"""


def _format(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


_met = docs_claims.met


def _scalars(summary: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_scalars(value, f"{name}."))
        elif isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 120):
            rows.append((name, _format(value)))
    return rows


def load_results() -> dict[str, dict]:
    """Full-mode results by benchmark name (``*_quick.json`` files are smoke tests, left out)."""
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted(RESULTS.glob("*.json"))
        if not path.stem.endswith("_quick")
    }


def render() -> str:
    results = load_results()
    lines = [
        INTRO,
        "## Claims and targets",
        "",
        "| benchmark | summary key | target | result | met |",
    ]
    lines.append("|---|---|---|---|---|")
    for name, key, target, op in HEADLINES:
        if name in docs_claims.PROTOCOLS and docs_claims.current(name, results) is None:
            version = docs_claims.PROTOCOLS[name]
            lines.append(
                f"| `{name}` | `{key}` | {op} {_format(target)} "
                f"| pending full run (protocol v{version}) | — |"
            )
            continue
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
        device = data.get("summary", {}).get("device", "cpu")
        if device != "cpu":
            where = f"{device}, " + where
        lines += [
            "",
            f"## {name}",
            "",
            f"`python benchmarks/{data.get('name', name)}.py"
            + (" --device cuda`" if name.endswith("_cuda") else "`")
            + (f" — {where}" if where else ""),
        ]
        if name in docs_claims.PROTOCOLS and docs_claims.current(name, results) is None:
            lines += [
                "",
                f"This result predates protocol v{docs_claims.PROTOCOLS[name]} "
                f"(`benchmarks/protocols/{name}.md`) and is not a result of it.",
            ]
        lines += ["", "| summary key | value |", "|---|---|"]
        lines += [f"| `{key}` | {value} |" for key, value in _scalars(data.get("summary", {}))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    pages = {PAGE: render(), CLAIMS_PAGE: docs_claims.render(load_results())}
    if args.check:
        stale = [p for p, text in pages.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"{path} is out of date: run python benchmarks/docs_page.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in pages.items():
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: a reader never sees half a page
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
