"""A Downhill prior in a hand-written Pyro model orders the latent dimensions of a linear
autoencoder by explained variance (examples/pca_downhill.py)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

_PATH = Path(__file__).resolve().parents[1] / "examples" / "pca_downhill.py"
_spec = importlib.util.spec_from_file_location("pca_downhill", _PATH)
pca = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("pca_downhill", pca)
_spec.loader.exec_module(pca)

EIGENVALUES = [9.0, 6.0, 4.0, 2.5, 1.5, 1.0, 0.6, 0.4, 0.25, 0.1]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and steadier
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    x, rotation = pca.data_with_spectrum(4000, EIGENVALUES, seed=0)
    xc = x.numpy() - x.numpy().mean(0)
    evals, evecs = np.linalg.eigh(xc.T @ xc / len(xc))
    return x, rotation, evals[::-1], evecs[:, ::-1]  # sample PCA, decreasing


def test_downhill_prior_recovers_ordered_principal_components(data):
    x, rotation, sample_evals, sample_evecs = data
    fit = pca.fit_pca_downhill(x, 4, steps=600, seed=0)
    explained = pca.explained_variance_per_dim(fit, x)
    assert np.all(np.diff(explained) < 0)  # ordered by explained variance
    np.testing.assert_allclose(explained, sample_evals[:4], rtol=0.1)
    for k in range(1, 5):
        assert subspace_angles(fit.decoder[:, :k], sample_evecs[:, :k]).max() < 0.15
        assert pca.principal_angles(fit, rotation, k).max() < 0.2  # vs the true spectrum


def test_without_ordering_pressure_the_first_dimension_is_arbitrary(data):
    x, _, _, sample_evecs = data
    fit = pca.fit_pca_downhill(x, 4, steps=600, seed=0, keep_prob=0.999)
    # the 4-dim code still finds the top-4 subspace ...
    assert subspace_angles(fit.decoder, sample_evecs[:, :4]).max() < 0.2
    # ... but not the order inside it
    assert subspace_angles(fit.decoder[:, :1], sample_evecs[:, :1]).max() > 0.3


@pytest.mark.slow
def test_learned_keep_probabilities_follow_the_spectrum(data):
    x, _, _, sample_evecs = data
    fit = pca.fit_pca_downhill(x, 4, steps=2000, seed=1, learn_order=True)
    assert np.all(np.diff(fit.keep_probs) < 0)  # later dimensions are kept less often
    assert subspace_angles(fit.decoder, sample_evecs[:, :4]).max() < 0.1
    explained = pca.explained_variance_per_dim(fit, x)
    assert explained[-1] < explained[0]
