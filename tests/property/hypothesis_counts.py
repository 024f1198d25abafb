"""Count the inputs the property and fuzzing tests try, for the reliability page.

Runs pytest on the given test files with ``--hypothesis-show-statistics``, adds up the examples
Hypothesis ran per test (every phase: explicit examples, generation, shrinking) and counts the
parametrized cases of the other tests, then prints a Markdown table (and writes JSON with
``--json``)::

    python tests/property/hypothesis_counts.py tests/property tests/cli/test_fuzz.py

Environment variables such as ``BAYES_NEST_PROPERTY_PROFILE=property-long`` or
``BAYES_NEST_FUZZ_EXAMPLES=500`` pass through to the tests.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = re.compile(r"- (\d+) passing, (\d+) failing, and (\d+) invalid test cases")
HEADER = re.compile(r"^(\S+\.py::\S+):$")


def run(paths: list[str]) -> tuple[dict[str, list[int]], Counter, str]:
    """Hypothesis counts per test ([passing, failing, invalid]), items per test function, and
    pytest's summary line."""
    cmd = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider"]
    out = subprocess.run(
        [*cmd, "--hypothesis-show-statistics"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    stats: dict[str, list[int]] = {}
    current = None
    for line in out.splitlines():
        header = HEADER.match(line.strip())
        if header:
            current = header.group(1).split("[")[0]
            stats.setdefault(current, [0, 0, 0])
            continue
        cases = CASES.search(line)
        if cases and current:
            for i in range(3):
                stats[current][i] += int(cases.group(i + 1))
    summary = next((s for s in reversed(out.splitlines()) if " passed" in s or " failed" in s), "")
    listing = subprocess.run(
        [*cmd, "--collect-only"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    items = Counter(
        line.split("[")[0] for line in listing.splitlines() if "::" in line and ".py" in line
    )
    return stats, items, summary.strip("= ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="test files or folders")
    parser.add_argument("--json", help="also write the counts to this JSON file")
    args = parser.parse_args(argv)
    stats, items, summary = run(args.paths)
    rows = []
    for test in sorted(set(items) | set(stats)):
        passing, failing, invalid = stats.get(test, [0, 0, 0])
        kind = "hypothesis" if test in stats else "cases"
        tried = passing + failing if test in stats else items[test]
        rows.append(
            {"test": test, "kind": kind, "tried": tried, "failing": failing, "invalid": invalid}
        )
    print("| test | kind | inputs tried | failing | rejected by assume/filter |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        name = r["test"].replace("tests/", "")
        print(f"| `{name}` | {r['kind']} | {r['tried']} | {r['failing']} | {r['invalid']} |")
    total = sum(r["tried"] for r in rows)
    print(f"\n{len(rows)} tests, {total} inputs tried; pytest: {summary}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
