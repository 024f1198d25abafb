"""The three examples of docs/concepts/nested_priors.md run and show what the page says."""

import re
from pathlib import Path

import numpy as np
import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "nested_priors.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: faster and steadier


def test_the_page_has_three_examples():
    assert len(_blocks()) == 3


@pytest.mark.slow
def test_ordered_ppca_example_recovers_the_directions():
    scope: dict = {}
    exec(compile(_blocks()[0], str(PAGE), "exec"), scope)
    assert scope["cosines"].min() >= 0.95
    norms = scope["loadings"].detach().norm(dim=0).numpy()
    assert norms[5:].max() < 0.1 * norms[4]


@pytest.mark.slow
def test_ordered_vae_example_orders_the_keep_marginals():
    scope: dict = {}
    exec(compile(_blocks()[1], str(PAGE), "exec"), scope)
    marginals = scope["unit"].keep_marginals(scope["x"]).mean(0).detach().numpy()
    assert np.all(np.diff(marginals) < 0)
    assert np.all(np.diff(scope["summary"]["mean"].to_numpy()) < 0)


@pytest.mark.slow
def test_autoguide_example_refuses_the_divergent_guides(capsys):
    scope: dict = {}
    exec(compile(_blocks()[2], str(PAGE), "exec"), scope)
    out = capsys.readouterr().out
    assert out.count("refused:") == 2 and "AutoDelta" in out and "TraceMeanField_ELBO" in out
    norms = scope["loadings"].norm(dim=0).numpy()
    assert norms[:2].min() > 20 * norms[2:].max()  # the data has two directions
    keep = scope["unit"].keep_probs().detach().numpy()
    assert keep[:2].min() >= keep[2:].max()
