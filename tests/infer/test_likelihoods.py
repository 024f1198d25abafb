"""Likelihoods: the obs site, the data plate and its scaling, per-pixel use, errors."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats
from scipy.special import log_softmax

from bayes_nest.infer import likelihoods
from bayes_nest.testing import assert_close


def _site(likelihood, outputs, y):
    trace = poutine.trace(likelihood).get_trace(outputs, y)
    trace.compute_log_prob()
    return trace.nodes["obs"]


def test_categorical_scales_the_minibatch_to_the_dataset_size():
    torch.manual_seed(0)
    logits, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 5, (12,))
    site = _site(likelihoods.Categorical(dataset_size=30), logits, y)
    oracle = log_softmax(logits.numpy(), -1)[np.arange(12), y.numpy()]
    assert site["scale"] == pytest.approx(30 / 12)
    assert_close(site["log_prob_sum"], 30 / 12 * oracle.sum())  # Pyro applies the scale
    assert site["cond_indep_stack"][0].name == "data"
    assert_close(likelihoods.Categorical().log_likelihood(logits, y), torch.from_numpy(oracle))


def test_per_pixel_categorical_is_one_observation_per_example():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 5, 6))
    site = _site(likelihoods.Categorical(), logits, y)
    lp = log_softmax(logits.numpy(), 1)
    oracle = np.take_along_axis(lp, y.numpy()[:, None], 1)[:, 0].reshape(3, -1).sum(-1)
    assert site["fn"].batch_shape == (3,)
    assert_close(site["log_prob"], torch.from_numpy(oracle))
    assert_close(likelihoods.Categorical().log_likelihood(logits, y), torch.from_numpy(oracle))


def test_normal_fixed_scale_matches_scipy_and_sums_over_pixels():
    torch.manual_seed(2)
    mean, y = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    lik = likelihoods.Normal(dataset_size=8, scale=0.7)
    site = _site(lik, mean, y)
    oracle = stats.norm.logpdf(y.numpy(), mean.numpy(), 0.7).reshape(4, -1).sum(-1)
    assert site["scale"] == pytest.approx(2.0)
    assert_close(site["log_prob"], 2.0 * torch.from_numpy(oracle))
    assert_close(lik.log_likelihood(mean, y), torch.from_numpy(oracle))


def test_normal_learned_scale_reaches_the_maximum_likelihood_estimate():
    torch.manual_seed(3)
    y = 2.5 * torch.randn(400, 1)
    lik = likelihoods.Normal(init_scale=1.0)
    opt = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (-lik.log_likelihood(torch.zeros_like(y), y).sum()).backward()
        opt.step()
    assert_close(
        float(lik.scale_value.detach()), float(y.square().mean().sqrt()), dtype=torch.float32
    )


def test_bernoulli_matches_scipy():
    torch.manual_seed(4)
    logits = torch.randn(5, 7, dtype=torch.float64)
    y = torch.randint(0, 2, (5, 7))
    p = torch.sigmoid(logits).numpy()
    oracle = stats.bernoulli.logpmf(y.numpy(), p).sum(-1)
    site = _site(likelihoods.Bernoulli(), logits, y)
    assert_close(site["log_prob"], torch.from_numpy(oracle))
    assert_close(likelihoods.Bernoulli().log_likelihood(logits, y), torch.from_numpy(oracle))


def test_without_y_the_site_samples_observations_of_the_right_shape():
    pyro.set_rng_seed(5)
    logits = torch.tensor([[20.0, -20.0], [-20.0, 20.0]]).repeat(3, 1)
    obs = poutine.trace(likelihoods.Categorical()).get_trace(logits).nodes["obs"]["value"]
    assert obs.tolist() == [0, 1] * 3
    mean = torch.full((6, 2), 3.0)
    draws = torch.stack(
        [
            poutine.trace(likelihoods.Normal(scale=0.5)).get_trace(mean).nodes["obs"]["value"]
            for _ in range(200)
        ]
    )
    assert abs(float(draws.mean()) - 3.0) < 0.03  # 5 standard errors
    assert abs(float(draws.std()) - 0.5) < 0.03


@pytest.mark.parametrize(
    ("likelihood", "outputs", "y", "match"),
    [
        (likelihoods.Categorical(), torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), "label 3"),
        (likelihoods.Categorical(), torch.zeros(4, 3), torch.zeros(4, 1).long(), r"\(4, 1\)"),
        (likelihoods.Categorical(), torch.zeros(4, 3), torch.zeros(4), "integers"),
        (likelihoods.Normal(scale=1.0), torch.zeros(4, 2), torch.zeros(4), r"\(4,\)"),
        (likelihoods.Bernoulli(), torch.zeros(2, 2), torch.full((2, 2), 0.5), "0 or 1"),
    ],
)
def test_bad_observations_are_named(likelihood, outputs, y, match):
    with pytest.raises(ValueError, match=match):
        likelihood(outputs, y)


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_dataset_size_is_named(value):
    with pytest.raises(ValueError, match=repr(value)):
        likelihoods.Categorical(dataset_size=value)


def test_bad_scale_is_named():
    with pytest.raises(ValueError, match="-1"):
        likelihoods.Normal(scale=-1.0)
