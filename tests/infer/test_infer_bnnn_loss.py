"""The direct mean-field ELBO equals Pyro's TraceMeanField_ELBO on the same draws."""

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.bnnn_loss import mean_field_loss
from bayes_nest.models import MLP, ConvNet
from bayes_nest.testing import assert_close, tolerances


@pytest.fixture(autouse=True)
def _clean_pyro():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _spread(bnnn, seed):
    """Move every variational parameter away from its initial value, so every term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for vou in bnnn.vous.values():
            vou.keep_logits.copy_(torch.randn(vou.keep_logits.shape, generator=g))
        for _, layer, *_ in bnnn.bayesian_layers():
            layer.weight_rho.add_(torch.rand(layer.weight_rho.shape, generator=g) * 3)
            layer.weight_loc.add_(torch.randn(layer.weight_loc.shape, generator=g) * 0.3)
    return bnnn


def _both(bnnn, x, y, num_particles, seed=3):
    params = list(bnnn.parameters())
    pyro.set_rng_seed(seed)
    elbo = TraceMeanField_ELBO(num_particles=num_particles)
    with pyro.validation_enabled(False):
        pyro_loss = elbo.differentiable_loss(bnnn.model, bnnn.guide, x, y)
    pyro_grads = torch.autograd.grad(pyro_loss, params, allow_unused=True)
    pyro.set_rng_seed(seed)
    fast_loss = mean_field_loss(bnnn, x, y, num_particles=num_particles)
    fast_grads = torch.autograd.grad(fast_loss, params, allow_unused=True)
    return pyro_loss, fast_loss, pyro_grads, fast_grads


def _assert_equal(pyro_loss, fast_loss, pyro_grads, fast_grads):
    # The same draws (hard straight-through masks included: one argmax of the same perturbed
    # scores) summed by two formulas in float32: equal up to accumulated rounding.
    assert_close(fast_loss, pyro_loss, scale=10)
    assert all(a is not None and b is not None for a, b in zip(pyro_grads, fast_grads, strict=True))
    largest = max(float(a.abs().max()) for a in pyro_grads)  # float32 rounding of the largest
    for a, b in zip(pyro_grads, fast_grads, strict=True):
        assert_close(b, a, rtol=tolerances(torch.float32)[0] * 10, atol=1e-5 * largest)


@pytest.mark.parametrize("straight_through", [True, False])
@pytest.mark.parametrize("always_on", [0, 1, 2])
@pytest.mark.parametrize("num_particles", [1, 2])
def test_mlp_loss_and_gradients_equal_pyros(straight_through, always_on, num_particles):
    torch.manual_seed(always_on)
    net = MLP(4, [8, 8], 3, groups=4, always_on=always_on)
    bnnn = BNNN(
        net,
        kl_scale=0.7,
        prior_keep_prob=0.8,
        temperature=0.6,
        straight_through=straight_through,
    )
    _spread(bnnn, seed=always_on + 1)
    bnnn.model.dataset_size = 30  # a mini-batch of 12 out of 30
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(12, 4, generator=g), torch.randint(0, 3, (12,), generator=g)
    results = _both(bnnn, x, y, num_particles)
    _assert_equal(*results)
    # the gradients reach every kind of parameter, keep logits included
    assert all(float(grad.abs().sum()) > 0 for grad in results[3])


def test_conv_network_and_unset_dataset_size_and_zero_kl_scale():
    torch.manual_seed(0)
    bnnn = BNNN(ConvNet(4, 1, (8, 16), hidden=16, groups=4), kl_scale=0.0)
    _spread(bnnn, seed=2)
    assert bnnn.model.dataset_size is None  # the likelihood is then not scaled
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 4, (5,))
    pyro_loss, fast_loss, pyro_grads, fast_grads = _both(bnnn, x, y, 1)
    _assert_equal(pyro_loss, fast_loss, pyro_grads, fast_grads)


def test_draws_follow_the_random_stream():
    """Different seeds give different losses (masks and noise are drawn, not fixed)."""
    torch.manual_seed(0)
    bnnn = _spread(BNNN(MLP(4, [8, 8], 3, groups=4)), seed=1)
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    losses = set()
    for seed in range(4):
        pyro.set_rng_seed(seed)
        losses.add(round(float(mean_field_loss(bnnn, x, y).detach()), 4))
    assert len(losses) == 4


def test_labels_are_validated():
    bnnn = BNNN(MLP(4, [8], 3, groups=2))
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="y must be"):
        mean_field_loss(bnnn, x, None)
    with pytest.raises(ValueError, match="y must be"):
        mean_field_loss(bnnn, x, torch.zeros(5, dtype=torch.long))
