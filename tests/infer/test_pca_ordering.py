"""Ordered PPCA (examples/pca_downhill.py): the recipe's default guide recovers every principal
direction in order and switches the spare latent dimensions off."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "examples" / "pca_downhill.py"
_spec = importlib.util.spec_from_file_location("pca_downhill", _PATH)
pca = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("pca_downhill", pca)
_spec.loader.exec_module(pca)

SIGNAL = len(pca.EIGENVALUES)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: faster and steadier


def _assert_ordered(fit, basis, min_cos):
    cosines = pca.direction_cosines(fit, basis)
    assert cosines.min() >= min_cos, cosines  # direction k in column k, for every k
    norms = pca.column_norms(fit)
    # the signal columns carry sqrt(λ_k - noise) and decrease; the spare ones are off
    assert np.all(np.diff(norms[:SIGNAL]) < 0), norms
    # a spare column adds less variance than half the noise variance of one observed dimension
    assert np.all(norms[SIGNAL:] ** 2 < 0.5 * pca.NOISE**2), norms
    # the learned ordering is not the prior: used dimensions are kept more often than π = 0.8,
    # at most at the cap, and the keep marginals decrease
    assert np.all(fit.keep_probs[: SIGNAL - 1] > 0.9) and np.all(fit.keep_probs <= 0.95)
    assert np.all(np.diff(fit.keep_marginals) < 0)
    assert fit.keep_probs[SIGNAL:].max() < fit.keep_probs[: SIGNAL - 1].min()


def test_uncapped_keep_probabilities_lose_the_order():
    """Without the cap the keep probabilities of all used dimensions reach 1 and the leading
    columns are an arbitrary rotation of the principal subspace (seed 1: measured)."""
    x, basis = pca.data_with_spectrum(2000, seed=1)
    torch.manual_seed(1)
    ppca = pca.OrderedPPCA(x.shape[1], 8, center=x.mean(0))
    ppca.unit = pca.OrderingUnit("order", 8, max_keep_prob=None)
    pca.fit_latent(ppca.model, ppca.guide, x, [ppca], steps=400, lr=0.03, seed=1, progress=False)
    with torch.no_grad():
        keep = ppca.unit.keep_probs().numpy()
        loadings = ppca.loadings.numpy()
    assert np.all(keep[:SIGNAL] > 0.99)
    cosines = np.abs(np.sum(loadings[:, :SIGNAL] * basis, 0)) / np.linalg.norm(
        loadings[:, :SIGNAL], axis=0
    )
    assert cosines.min() < 0.8, cosines


def test_quick_example_recovers_the_principal_directions_in_order(capsys, tmp_path):
    rows = pca.main(["--quick", "--plot", str(tmp_path / "keep.png")])
    assert len(rows) == 1
    _, basis = pca.data_with_spectrum(2000, seed=0)
    _assert_ordered(rows[0]["fit"], basis, min_cos=0.95)
    out = capsys.readouterr().out
    assert "|cos| with direction k" in out and "order[7]" in out  # the ArviZ summary
    assert (tmp_path / "keep.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_every_direction_in_order_across_seeds(seed):
    x, basis = pca.data_with_spectrum(2000, seed=seed)
    _, fit = pca.fit_ordered_ppca(x, steps=1000, seed=seed)
    _assert_ordered(fit, basis, min_cos=0.95)
