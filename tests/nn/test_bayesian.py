"""Bayesian weight layers: local reparameterization moments, KL, conversion, slicing."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from bayes_nest.models import MLP
from bayes_nest.nn import NestedConv2d, NestedLinear, SlicedLinear
from bayes_nest.nn.bayesian import (
    BayesianConv2d,
    BayesianLinear,
    deterministic_weights,
    pinned_weights,
    resolve_prior_scale,
    shared_posterior_scales,
    to_bayesian_,
)
from bayes_nest.testing import assert_close


def _randomize(layer, seed=0, scale=(0.05, 0.4)):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight_loc.normal_(generator=g)
        sigma = torch.empty_like(layer.weight_rho).uniform_(*scale, generator=g)
        layer.weight_rho.copy_(torch.log(torch.expm1(sigma)))
        if layer.bias_loc is not None:
            layer.bias_loc.normal_(generator=g)
            layer.bias_rho.copy_(torch.log(torch.expm1(torch.full_like(layer.bias_rho, 0.3))))
    return layer


def test_linear_lrt_moments_match_closed_form():
    torch.manual_seed(0)
    layer = _randomize(BayesianLinear(5, 3))
    x = torch.randn(4, 5)
    # one batch of S copies: LRT noise is drawn per example, so rows are independent draws
    draws = layer(x.repeat(20000, 1)).reshape(20000, 4, 3)
    mean = F.linear(x, layer.weight_loc, layer.bias_loc)
    var = F.linear(x.square(), layer.weight_scale.square(), layer.bias_scale.square())
    se_mean = (var / 20000).sqrt()
    assert torch.all((draws.mean(0) - mean).abs() < 5 * se_mean)
    # sample variance of a Gaussian: relative standard error sqrt(2 / S) ~ 1 %
    assert torch.allclose(draws.var(0), var, rtol=0.06)
    # noise is independent across examples and units (LRT), unlike one shared weight draw
    centered = (draws - mean).reshape(20000, -1)
    corr = torch.corrcoef(centered.T)
    off_diag = corr - torch.diag(torch.diag(corr))
    assert off_diag.abs().max() < 0.05


def test_conv_lrt_moments_match_closed_form():
    torch.manual_seed(1)
    layer = _randomize(BayesianConv2d(2, 3, 3, padding=1, bias=True))
    x = torch.randn(1, 2, 4, 4)
    draws = layer(x.expand(8000, -1, -1, -1)).unsqueeze(1)
    mean = F.conv2d(x, layer.weight_loc, layer.bias_loc, padding=1)
    var = F.conv2d(x.square(), layer.weight_scale.square(), layer.bias_scale.square(), padding=1)
    assert torch.all((draws.mean(0) - mean).abs() < 5 * (var / 8000).sqrt())
    assert torch.allclose(draws.var(0), var, rtol=0.1)


def test_deterministic_mode_and_slicing_match_plain_ops():
    layer = _randomize(BayesianLinear(6, 8))
    x = torch.randn(3, 4)  # narrower input: the first 4 columns are used
    with deterministic_weights(layer):
        out = layer(x, out_units=5)
    expected = F.linear(x, layer.weight_loc[:5, :4], layer.bias_loc[:5])
    assert_close(out, expected)
    assert layer.stochastic  # restored
    with pytest.raises(ValueError, match="more than 6"):
        layer(torch.randn(3, 7))


def test_weight_transform_and_pinned_weights():
    layer = _randomize(BayesianLinear(4, 2))
    x = torch.randn(5, 4)
    with deterministic_weights(layer):
        out = layer(x, weight_transform=torch.round)
    assert_close(out, F.linear(x, torch.round(layer.weight_loc), layer.bias_loc))
    w, b = torch.randn(2, 4), torch.randn(2)
    model = torch.nn.Sequential(layer)
    with pinned_weights(model, {"0": (w, b)}):
        assert_close(layer(x), F.linear(x, w, b))
    assert layer.pinned is None
    with pytest.raises(ValueError, match="shape"):
        with pinned_weights(model, {"0": (torch.randn(3, 4), None)}):
            pass
    with pytest.raises(ValueError, match="no Bayesian layer"):
        with pinned_weights(model, {"1": (w, b)}):
            pass


def test_kl_per_output_matches_torch_normal_kl():
    layer = _randomize(BayesianConv2d(2, 3, 3, bias=True, prior_loc=0.1, prior_scale=0.7))
    prior = Normal(0.1, 0.7)
    w_kl = kl_divergence(Normal(layer.weight_loc, layer.weight_scale), prior)
    b_kl = kl_divergence(Normal(layer.bias_loc, layer.bias_scale), prior)
    expected = w_kl.sum((1, 2, 3)) + b_kl
    assert_close(layer.kl_per_output(), expected)
    assert_close(layer.kl(), expected.sum())


def test_prior_scale_rules_and_validation():
    assert resolve_prior_scale("radford", 16) == pytest.approx(0.25)
    assert resolve_prior_scale("kaiming", 8) == pytest.approx(0.5)
    assert BayesianLinear(9, 2, prior_scale="radford").prior_scale == pytest.approx(1 / 3)
    assert BayesianConv2d(2, 4, 3, prior_scale="kaiming").prior_scale == pytest.approx(
        math.sqrt(2 / 18)
    )
    with pytest.raises(ValueError, match="prior_scale"):
        BayesianLinear(3, 2, prior_scale=-1.0)
    with pytest.raises(ValueError, match="prior_scale"):
        BayesianLinear(3, 2, prior_scale="xavier")
    with pytest.raises(TypeError, match="prior_scale"):
        BayesianLinear(3, 2, prior_scale=None)
    with pytest.raises(ValueError, match="init_scale"):
        BayesianLinear(3, 2, init_scale=0.0)


def test_init_scale_sets_posterior_std():
    layer = BayesianLinear(3, 2, init_scale=0.03)
    assert_close(layer.weight_scale, torch.full((2, 3), 0.03))
    assert_close(layer.bias_scale, torch.full((2,), 0.03))


def test_to_bayesian_keeps_the_function_of_a_trained_network():
    torch.manual_seed(0)
    net = MLP(6, [8, 8], 3, groups=4)
    x = torch.randn(7, 6)
    before = net(x)
    with torch.no_grad():
        before_small = net.hidden[0](x)
    converted = to_bayesian_(net)
    assert converted == ["hidden.0.affine", "hidden.1.affine", "output"]
    assert isinstance(net.hidden[0].affine, BayesianLinear)
    assert isinstance(net.output, BayesianLinear)
    with deterministic_weights(net):
        assert_close(net(x), before)
        assert_close(net.hidden[0](x), before_small)
    assert net.hidden[0].full_weight() is net.hidden[0].affine.weight_loc
    assert to_bayesian_(net) == []  # already Bayesian: nothing to do


def test_to_bayesian_converts_conv_and_heads():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = NestedConv2d(1, 4, 3, groups=2, padding=1)
            self.lin = NestedLinear(4 * 16, 6, groups=3)
            self.head = SlicedLinear(6, 2)

    net = Net()
    to_bayesian_(net, prior_scale="radford")
    assert isinstance(net.conv.affine, BayesianConv2d)
    assert net.conv.affine.prior_scale == pytest.approx(1 / 3)
    assert isinstance(net.head, BayesianLinear)
    grouped = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, groups=2))
    with pytest.raises(ValueError, match="groups=1"):
        to_bayesian_(grouped)


def test_gradients_reach_loc_and_rho():
    layer = BayesianLinear(3, 2)
    loss = layer(torch.randn(4, 3)).square().sum() + layer.kl()
    loss.backward()
    assert layer.weight_loc.grad.abs().sum() > 0
    assert layer.weight_rho.grad.abs().sum() > 0
    assert layer.bias_rho.grad.abs().sum() > 0


def test_shared_posterior_scales_computes_each_scale_once():
    net = torch.nn.Sequential(_randomize(BayesianLinear(3, 4)), _randomize(BayesianLinear(4, 2)))
    first, second = net[0], net[1]
    with shared_posterior_scales(net) as layers:
        assert layers == [first, second]
        scales = first.posterior_scales()
        assert scales is first.shared_scales and first.posterior_scales() is scales
        assert_close(scales[0], first.weight_scale)
        x = torch.randn(5, 3)
        torch.manual_seed(0)
        inside = net(x)
        kl_inside = first.kl()
    assert first.shared_scales is None and second.shared_scales is None  # restored
    torch.manual_seed(0)
    assert_close(inside, net(x))  # the same values as without sharing
    assert_close(kl_inside, first.kl())
    # the shared scales carry the gradient of both uses into rho
    with shared_posterior_scales([first]):
        (first(x).sum() + first.kl()).backward()
    assert first.weight_rho.grad.abs().sum() > 0


def test_the_two_modules_are_gathered_under_bayes_nest_nn_bayesian():
    from bayes_nest.nn import bayesian, bayesian_convert, bayesian_layers

    assert bayesian.BayesianLinear is bayesian_layers.BayesianLinear
    assert bayesian.to_bayesian_ is bayesian_convert.to_bayesian_
    for name in bayesian.__all__:
        assert getattr(bayesian, name) is not None
