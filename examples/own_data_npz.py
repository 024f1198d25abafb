"""Your own data, end to end, with the ``bayes-nest`` command.

Story: you have a table of features and labels -- here a synthetic one saved as ``.npz`` -- and
want a nested classifier, its accuracy/cost front, metrics for a budget and a small exported
model, without writing training code. Each step below is one ``bayes-nest`` command (run here
through ``bayes_nest.cli.main`` so the script is self-contained); the same lines work in a
shell. Training options come from a TOML file; command-line options override it.

Run::

    python examples/own_data_npz.py --workdir my-run
    python examples/own_data_npz.py --quick
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path

import numpy as np

from bayes_nest.cli import main as bayes_nest


def make_data(path: Path, n: int, seed: int) -> None:
    """Four classes of 20 features: Gaussian clusters, plus a few uninformative features."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(4, 12))
    y = rng.integers(0, 4, size=n)
    informative = centers[y] + rng.normal(size=(n, 12))
    x = np.hstack([informative, rng.normal(size=(n, 8))]).astype(np.float32)
    np.savez(path, x=x, y=y)


def run(*argv: str) -> None:
    print("$ bayes-nest " + " ".join(shlex.quote(a) for a in argv), flush=True)
    code = bayes_nest(list(argv))
    if code != 0:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and epochs")
    parser.add_argument("--workdir", help="where to put the files (default: a temporary folder)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bayes-nest-own-data-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "table.npz"
    make_data(data, 600 if args.quick else 3000, seed=0)
    (work / "fit.toml").write_text(
        'data = "table.npz"\n'
        'method = "fn3"\n'
        "epochs = 30\n"
        "keep_prob = 0.9\n"
        "[model]\n"
        'name = "mlp"\n'
        "hidden = [64, 64]\n"
        "groups = 8\n"
    )
    progress = ["--no-progress"] if args.quick else []
    epochs = ["--epochs", "8"] if args.quick else []
    run(
        "fit",
        "--config",
        str(work / "fit.toml"),
        "--data",
        str(data),
        *epochs,
        "--out",
        str(work / "model.ckpt"),
        "--force",
        *progress,
    )
    run(
        "search",
        str(work / "model.ckpt"),
        "--data",
        str(data),
        "--score",
        "ece_penalized",
        "--out",
        str(work / "front.json"),
        "--force",
        *progress,
    )
    run(
        "evaluate",
        str(work / "model.ckpt"),
        "--data",
        str(data),
        "--front",
        str(work / "front.json"),
        "--budget",
        "10%",
        "--budget",
        "30%",
        "--json",
        str(work / "metrics.json"),
        "--force",
        *progress,
    )
    run(
        "export",
        str(work / "model.ckpt"),
        "--front",
        str(work / "front.json"),
        "--budget",
        "30%",
        "--data",
        str(data),
        "--out",
        str(work / "small.pt"),
        "--force",
        *progress,
    )
    print(f"files in {work}: {sorted(p.name for p in work.iterdir())}")
    return json.loads((work / "metrics.json").read_text())


if __name__ == "__main__":
    main()
