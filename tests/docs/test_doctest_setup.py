"""The docstring examples are part of CI: `make doctest` runs them and `.ci/run` calls it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_doctest_runs_the_package_docstrings():
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^doctest:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert target is not None, "Makefile has no doctest target"
    assert "--doctest-modules bayes_nest" in target.group(1)


def test_ci_runs_the_doctests():
    steps = (ROOT / ".ci" / "run").read_text().split("\n")
    assert "make doctest" in steps
