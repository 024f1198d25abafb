"""FN3 as a Pyro program: prior masks, point weights, FN3's expected log-likelihood."""

import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from bayes_nest.distributions import KeepCount
from bayes_nest.infer.fn3_model import FN3Model
from bayes_nest.models import MLP
from bayes_nest.testing import assert_close


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def test_the_elbo_is_the_expected_log_likelihood_under_prior_masks():
    torch.manual_seed(0)
    fn3 = FN3Model(MLP(4, [8, 8], 3, groups=4), keep_prob=0.7)
    fn3.likelihood.dataset_size = 90
    x, y = _data()
    for elbo in (Trace_ELBO(), TraceMeanField_ELBO()):
        pyro.set_rng_seed(1)
        loss = elbo.differentiable_loss(fn3.model, fn3.guide, x, y)
        pyro.set_rng_seed(1)
        guide = poutine.trace(fn3.guide).get_trace(x, y)
        h = x
        for i, layer in enumerate(fn3.net.hidden):
            mask = torch.cat([torch.ones(1), guide.nodes[f"hidden.{i}"]["value"]])
            a = layer.affine
            z = F.linear(h, a.weight, a.bias)
            h = F.relu(z) * mask.repeat_interleave(layer.axis_block_size)
        logits = F.linear(h, fn3.net.output.weight, fn3.net.output.bias)
        expected = F.cross_entropy(logits, y, reduction="sum") * 90 / 30
        assert_close(loss, expected)  # the masks' KL and log-ratio are exactly 0


def test_masks_follow_the_nested_dropout_prior_and_svi_trains_the_weights():
    torch.manual_seed(0)
    fn3 = FN3Model(MLP(4, [8], 3, groups=4), keep_prob=0.6)
    x, y = _data(n=60)
    pyro.set_rng_seed(2)
    counts = torch.stack([fn3.guide()["hidden.0"].sum() for _ in range(3000)])
    q = KeepCount.geometric(torch.tensor(0.6), 3).probs
    observed = torch.stack([(counts == b).float().mean() for b in range(4)])
    assert (observed - q).abs().max() < 4 * (0.25 / 3000) ** 0.5
    svi = SVI(fn3.model, fn3.guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(150)]
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    names = set(pyro.get_param_store().keys())
    assert "fn3$$$output.weight" in names  # the network's own parameters, point estimates


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="1.5"):
        FN3Model(MLP(4, [8], 3, groups=4), keep_prob=1.5)
    with pytest.raises(ValueError, match="orderable"):
        FN3Model(torch.nn.Sequential(torch.nn.Linear(2, 2)))
