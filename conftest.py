"""Settings of the docstring examples (``make doctest``: ``pytest --doctest-modules bayes_nest``).

Every example runs in a fresh temporary folder, so the files it writes (models, reports) land
there and examples never depend on each other's files; torch's global generator is seeded, so
examples that draw random numbers see the same ones on every run.
"""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_sandbox(request: pytest.FixtureRequest) -> None:
    if type(request.node).__name__ != "DoctestItem":
        return
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
    torch.set_num_threads(int(os.environ.get("BAYES_NEST_TEST_THREADS", "1")))
    torch.manual_seed(0)
