"""Small helpers shared by the scripts under ``benchmarks/`` (imported as ``_bench`` from there; not shipped).

* :func:`benchmark_args` -- the command line every benchmark shares (``--quick``, ``--out``).
* :func:`machine_info` -- what the numbers were measured on.
* :func:`interleaved_timings` -- per-call seconds of several callables, measured in alternation
  (ours and a baseline see the same machine load), with a calibrated inner loop. The default
  clock is the calling thread's CPU time (:func:`time.thread_time`): with torch on one thread it
  counts the work done and not the time spent waiting for a core on a busy machine.
* :func:`median_ratio` -- median over repeats of the per-repeat time ratio of two callables.
* :func:`print_table` and :func:`write_result` -- the table on stdout and the JSON file
  ``{"name", "config", "rows", "summary", "machine"}`` (DESIGN §6).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "benchmark_args",
    "interleaved_timings",
    "machine_info",
    "median_ratio",
    "print_table",
    "write_result",
]


def benchmark_args(
    doc: str, results: Path, quick_help: str, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``--quick`` (a run of under a minute, described by ``quick_help``) and ``--out``
    (the result file, default ``results``); the description is the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=results)
    return parser.parse_args(argv)


def machine_info() -> dict[str, Any]:
    """Python, torch and Pyro versions, platform, CPU count and torch's thread count."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import pyro

        info["pyro"] = pyro.__version__
    except ImportError:  # pragma: no cover - pyro is a dependency
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


Clock = Callable[[], float]


def _calibrate(fn: Callable[[], object], min_seconds: float, clock: Clock) -> int:
    """Smallest power of two of calls that takes at least ``min_seconds``."""
    number = 1
    while True:
        start = clock()
        for _ in range(number):
            fn()
        if clock() - start >= min_seconds or number >= 2**20:
            return number
        number *= 2


def interleaved_timings(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 7,
    min_seconds: float = 0.02,
    warmup: int = 3,
    clock: Clock = time.thread_time,
) -> dict[str, list[float]]:
    """Seconds per call of each callable, one list of ``repeats`` entries per name.

    Each callable is warmed up, given an inner loop long enough to last ``min_seconds``, then the
    callables are timed in turn within every repeat, so that a change of machine load hits all of
    them alike. Pass ``clock=time.perf_counter`` for wall time (needed when torch uses several
    threads).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    numbers = {name: _calibrate(fn, min_seconds, clock) for name, fn in fns.items()}
    timings: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            for _ in range(numbers[name]):
                fn()
            timings[name].append((clock() - start) / numbers[name])
    return timings


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over repeats of ``numerator[r] / denominator[r]`` (robust to load drifts)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` as an aligned text table (floats with 4 significant digits)."""
    if not rows:
        return
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def write_result(
    path: str | Path,
    name: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
) -> Path:
    """Write the benchmark result JSON (with :func:`machine_info`) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "name": name,
        "config": dict(config),
        "rows": [dict(row) for row in rows],
        "summary": dict(summary),
        "machine": machine_info(),
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
