"""Fused Bayesian-layer operations: values against the plain formulas, gradients by gradcheck."""

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from bayes_nest.nn.bayesian_ops import (
    VAR_FLOOR,
    block_weighted_normal_kl,
    example_noise,
    example_shard,
    local_reparam_linear,
    per_unit_normal_kl,
)
from bayes_nest.testing import assert_close


def _params(o, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(o, d, generator=g, dtype=dtype)
    scale = torch.rand(o, d, generator=g, dtype=dtype) * 0.5 + 0.05
    bias_loc = torch.randn(o, generator=g, dtype=dtype)
    bias_scale = torch.rand(o, generator=g, dtype=dtype) * 0.5 + 0.05
    return [t.requires_grad_() for t in (loc, scale, bias_loc, bias_scale)]


@pytest.mark.parametrize("bias", [True, False])
def test_local_reparam_linear_equals_the_unfused_expression(bias):
    x = torch.randn(6, 4, dtype=torch.float64)
    loc, scale, bias_loc, bias_scale = _params(3, 4, 0)
    if not bias:
        bias_loc = bias_scale = None
    torch.manual_seed(1)
    out = local_reparam_linear(x, loc, scale, bias_loc, bias_scale)
    torch.manual_seed(1)
    mean = F.linear(x, loc, bias_loc)
    var = F.linear(x.square(), scale.square(), None if bias_scale is None else bias_scale.square())
    expected = mean + (var + VAR_FLOOR).sqrt() * torch.randn_like(mean)
    assert_close(out, expected)


@pytest.mark.parametrize("bias", [True, False])
def test_local_reparam_linear_gradients_by_gradcheck(bias):
    x = (torch.randn(5, 4, dtype=torch.float64) + 0.5).requires_grad_()
    loc, scale, bias_loc, bias_scale = _params(3, 4, 2)
    if not bias:
        bias_loc = bias_scale = None

    def fn(*args):
        torch.manual_seed(3)  # the same noise at every evaluation
        return local_reparam_linear(*args)

    assert torch.autograd.gradcheck(fn, (x, loc, scale, bias_loc, bias_scale))
    # an input that needs no gradient (the network's data) is skipped
    out = fn(x.detach(), loc, scale, bias_loc, bias_scale)
    assert out.requires_grad and out.grad_fn is not None


def test_local_reparam_linear_needs_both_bias_parts():
    loc, scale, bias_loc, _ = _params(3, 4, 0)
    with pytest.raises(ValueError, match="bias_loc and bias_scale"):
        local_reparam_linear(torch.randn(2, 4, dtype=torch.float64), loc, scale, bias_loc, None)


@pytest.mark.parametrize("prior", [(0.0, 1.0), (0.3, 0.2)])
def test_per_unit_normal_kl_matches_torch_normal_kl(prior):
    prior_loc, prior_scale = prior
    loc, scale, bias_loc, bias_scale = _params(3, 2 * 2 * 2, 4)
    loc, scale = loc.reshape(3, 2, 2, 2), scale.reshape(3, 2, 2, 2)  # a conv weight
    kl = per_unit_normal_kl(loc, scale, bias_loc, bias_scale, prior_loc, prior_scale)
    # the prior's parameters in float64 (a float32 0.3 would differ in the 8th digit)
    p = Normal(
        torch.tensor(prior_loc, dtype=torch.float64), torch.tensor(prior_scale, dtype=torch.float64)
    )
    expected = kl_divergence(Normal(loc, scale), p).flatten(1).sum(1)
    expected = expected + kl_divergence(Normal(bias_loc, bias_scale), p)
    assert_close(kl, expected)
    no_bias = per_unit_normal_kl(loc, scale, None, None, prior_loc, prior_scale)
    assert_close(no_bias, kl_divergence(Normal(loc, scale), p).flatten(1).sum(1))


def test_per_unit_normal_kl_gradients_by_gradcheck():
    loc, scale, bias_loc, bias_scale = _params(3, 4, 5)
    assert torch.autograd.gradcheck(
        lambda *a: per_unit_normal_kl(*a, 0.2, 0.7), (loc, scale, bias_loc, bias_scale)
    )
    assert torch.autograd.gradcheck(
        lambda *a: per_unit_normal_kl(*a, None, None, 0.0, 1.5), (loc, scale)
    )


def test_block_weighted_normal_kl_value_and_gradients():
    loc, scale, bias_loc, bias_scale = _params(6, 3, 6)
    weights = torch.tensor([1.0, 0.6, 0.25], dtype=torch.float64, requires_grad=True)
    total = block_weighted_normal_kl(loc, scale, bias_loc, bias_scale, weights, 2, 0.1, 0.8)
    per_unit = per_unit_normal_kl(loc, scale, bias_loc, bias_scale, 0.1, 0.8)
    assert_close(total, (weights.repeat_interleave(2) * per_unit).sum())
    assert torch.autograd.gradcheck(
        lambda *a: block_weighted_normal_kl(*a, 2, 0.1, 0.8),
        (loc, scale, bias_loc, bias_scale, weights),
    )


def test_example_noise_outside_a_shard_is_randn_like():
    like = torch.empty(5, 3, dtype=torch.float64)
    torch.manual_seed(4)
    expected = torch.randn_like(like)
    torch.manual_seed(4)
    assert torch.equal(example_noise(like), expected)


@pytest.mark.parametrize(("rows", "world"), [(6, 2), (7, 2), (7, 3), (4, 4)])
def test_sharded_noise_is_the_global_draw_split_by_rows(rows, world):
    torch.manual_seed(0)
    whole, following = torch.randn(rows, 3), torch.randn(2)
    for rank in range(world):
        torch.manual_seed(0)
        local = len(range(rank, rows, world))
        with example_shard(rank, world, rows):
            noise = example_noise(torch.empty(local, 3))
        assert torch.equal(noise, whole[rank::world])
        # every process's stream moves on as one process's would
        assert torch.equal(torch.randn(2), following)


def test_sharded_noise_refuses_a_batch_that_is_not_the_shard():
    with example_shard(1, 2, 7), pytest.raises(RuntimeError, match="this process's 3 examples"):
        example_noise(torch.empty(4, 3))
    with pytest.raises(ValueError, match="rank=2"):
        with example_shard(2, 2, 7):
            pass


def test_local_reparameterization_in_shards_is_the_one_batch_computation():
    torch.manual_seed(1)
    x = torch.randn(6, 4)
    loc, scale = torch.randn(3, 4), torch.rand(3, 4) + 0.1
    bias_loc, bias_scale = torch.randn(3), torch.rand(3) + 0.1
    torch.manual_seed(2)
    whole = local_reparam_linear(x, loc, scale, bias_loc, bias_scale)
    for rank in range(2):
        torch.manual_seed(2)
        with example_shard(rank, 2, 6):
            part = local_reparam_linear(x[rank::2], loc, scale, bias_loc, bias_scale)
        assert_close(part, whole[rank::2])
