"""Pyro SVI with Downhill priors and guides recovers known keep probabilities."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from bayes_nest.distributions import Downhill, DownhillStraightThrough, KeepCount


def fit_guide_keep_probs(model, guide_cls, elbo_cls, *, temperature, steps, particles, lr):
    """Run SVI with a Downhill guide on site "m"; return the keep probs averaged over the last 20%."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    def guide():
        keep_logits = pyro.param("keep_logits", torch.zeros(3))
        pyro.sample("m", guide_cls(keep_logits=keep_logits, temperature=temperature))

    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)})
    elbo = elbo_cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(model, guide, optim, elbo)
    tail = []
    with pyro.validation_enabled(False):
        for step in range(steps):
            svi.step()
            if step >= 0.8 * steps:
                tail.append(torch.sigmoid(pyro.param("keep_logits")).detach())
    return torch.stack(tail).mean(0)


def relaxed_posterior_case(cls):
    """A likelihood ratio that makes the relaxed posterior exactly Downhill(target, tau)."""
    temperature, prior, target = 0.5, torch.full((3,), 0.5), torch.tensor([0.9, 0.6, 0.3])

    def model():
        m = pyro.sample("m", cls(keep_probs=prior, temperature=temperature))
        log_ratio = Downhill(keep_probs=target, temperature=temperature).log_prob(m) - Downhill(
            keep_probs=prior, temperature=temperature
        ).log_prob(m)
        pyro.factor("obs", log_ratio)

    return model, temperature, prior, target


def discrete_posterior_case(cls, temperature):
    """x ~ Normal(mask, 0.5) observed: the exact posterior over counts is known in closed form."""
    prior, sigma = torch.full((3,), 0.7), 0.5
    x = torch.tensor([0.9, 0.7, 0.2])
    masks = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    log_posterior = KeepCount(keep_probs=prior).logits + dist.Normal(masks, sigma).log_prob(x).sum(
        -1
    )
    target = KeepCount.from_count_probs(count_logits=log_posterior).keep_probs

    def model():
        m = pyro.sample("m", cls(keep_probs=prior, temperature=temperature))
        pyro.sample("x", dist.Normal(m, sigma).to_event(1), obs=x)

    return model, prior, target


@pytest.mark.parametrize("cls", [Downhill, DownhillStraightThrough])
def test_trace_elbo_learns_keep_probs(cls):
    model, temperature, prior, target = relaxed_posterior_case(cls)
    learned = fit_guide_keep_probs(
        model, cls, Trace_ELBO, temperature=temperature, steps=400, particles=8, lr=0.05
    )
    assert (learned - target).abs().max() < 0.03 < (prior - target).abs().max()


@pytest.mark.parametrize("cls", [DownhillStraightThrough])
def test_mean_field_elbo_learns_posterior_keep_probs(cls):
    """Hard masks: the registered keep-count KL is their exact KL, so the mean-field ELBO's
    optimum is the discrete posterior (the relaxed Downhill has no registered KL: its relaxed
    densities define a different posterior)."""
    model, prior, target = discrete_posterior_case(cls, temperature=0.1)
    learned = fit_guide_keep_probs(
        model, cls, TraceMeanField_ELBO, temperature=0.1, steps=800, particles=32, lr=0.1
    )
    assert (learned - target).abs().max() < 0.06 < (prior - target).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("cls", [Downhill, DownhillStraightThrough])
def test_trace_elbo_learns_keep_probs_long(cls):
    model, temperature, _, target = relaxed_posterior_case(cls)
    learned = fit_guide_keep_probs(
        model, cls, Trace_ELBO, temperature=temperature, steps=2000, particles=32, lr=0.05
    )
    assert (learned - target).abs().max() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("cls", [DownhillStraightThrough])  # hard masks: see the short test
def test_mean_field_elbo_learns_posterior_keep_probs_long(cls):
    model, _, target = discrete_posterior_case(cls, temperature=0.05)
    learned = fit_guide_keep_probs(
        model, cls, TraceMeanField_ELBO, temperature=0.05, steps=4000, particles=64, lr=0.05
    )
    assert (learned - target).abs().max() < 0.03
