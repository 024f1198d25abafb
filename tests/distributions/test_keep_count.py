"""Tests for bayes_nest.distributions.keep_count.KeepCount."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.testing.gof import multinomial_goodness_of_fit
from pyro.infer import TraceEnum_ELBO, config_enumerate

from bayes_nest.distributions import KeepCount, hard_mask
from bayes_nest.testing import assert_close


def product_formula(beta: np.ndarray) -> np.ndarray:
    """q_b from the chain definition, one count at a time (independent of the log-space code)."""
    d = len(beta)
    q = np.empty(d + 1)
    for b in range(d + 1):
        value = 1.0
        for j in range(b):
            value *= beta[j]
        if b < d:
            value *= 1.0 - beta[b]
        q[b] = value
    return q


@pytest.mark.parametrize("d", [1, 2, 5])
def test_probs_match_product_formula(d):
    torch.manual_seed(d)
    beta = torch.rand(d, dtype=torch.float64) * 0.98 + 0.01
    keep_count = KeepCount(keep_probs=beta)
    assert_close(keep_count.probs.numpy(), product_formula(beta.numpy()))
    assert_close(keep_count.probs.sum().item(), 1.0)
    assert_close(keep_count.keep_marginals.numpy(), np.cumprod(beta.numpy()))


def test_logits_and_probs_parametrisations_agree():
    beta = torch.tensor([[0.2, 0.9, 0.5], [0.7, 0.1, 0.99]], dtype=torch.float64)
    by_probs = KeepCount(keep_probs=beta)
    by_logits = KeepCount(keep_logits=torch.logit(beta))
    assert_close(by_probs.logits, by_logits.logits)
    assert_close(by_probs.keep_logits, torch.logit(beta))
    assert_close(by_logits.keep_probs, beta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", [1e-6, 1 - 1e-6])
def test_log_probs_finite_near_boundaries(dtype, beta):
    keep_count = KeepCount(keep_probs=torch.full((30,), beta, dtype=dtype))
    beta = torch.tensor(beta, dtype=dtype).item()  # the value as stored in this dtype
    logits = keep_count.logits
    assert torch.isfinite(logits).all()
    np.testing.assert_allclose(logits.double().logsumexp(-1).item(), 0.0, atol=1e-5)
    # q_0 = 1 - beta_1 and q_D = beta^D, read off in log space
    np.testing.assert_allclose(logits[0].item(), math.log1p(-beta), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(logits[-1].item(), 30 * math.log(beta), rtol=1e-4)


def test_geometric_is_truncated_geometric():
    keep_count = KeepCount.geometric(0.8, 6)
    expected = [0.8**b * 0.2 for b in range(6)] + [0.8**6]
    assert_close(keep_count.probs, expected, dtype=torch.float32)
    batched = KeepCount.geometric(torch.tensor([0.5, 0.9]), 4)
    assert batched.batch_shape == (2,)
    assert_close(batched.probs[0], [0.5, 0.25, 0.125, 0.0625, 0.0625], dtype=torch.float32)


def test_uniform_and_from_count_probs():
    uniform = KeepCount.uniform(7, dtype=torch.float64)
    assert_close(uniform.probs.numpy(), np.full(8, 1 / 8))
    i = np.arange(1, 8)
    assert_close(uniform.keep_probs.numpy(), (8 - i) / (9 - i))

    torch.manual_seed(0)
    q = torch.softmax(torch.randn(3, 6, dtype=torch.float64), -1)
    rebuilt = KeepCount.from_count_probs(q)
    assert_close(rebuilt.probs, q)
    assert_close(KeepCount.from_count_probs(count_logits=q.log() + 3.0).probs, q)


def test_from_count_probs_with_zero_counts():
    q = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    rebuilt = KeepCount.from_count_probs(q)
    assert_close(rebuilt.probs, q)
    assert not torch.isnan(rebuilt.keep_logits).any()


def test_shapes_log_prob_and_enumerate_support():
    torch.manual_seed(1)
    keep_count = KeepCount(keep_logits=torch.randn(2, 3, 4))
    assert keep_count.batch_shape == (2, 3) and keep_count.event_shape == ()
    assert keep_count.probs.shape == (2, 3, 5)
    samples = keep_count.sample((7,))
    assert samples.shape == (7, 2, 3) and samples.dtype == torch.long
    assert keep_count.support.check(samples).all()
    assert keep_count.log_prob(samples).shape == (7, 2, 3)

    support = keep_count.enumerate_support()
    assert support.shape == (5, 2, 3)
    log_probs = keep_count.log_prob(support)
    assert_close(log_probs.exp().sum(0), torch.ones(2, 3))
    assert_close(log_probs.movedim(0, -1), keep_count.logits)
    unexpanded = keep_count.enumerate_support(expand=False)
    assert unexpanded.shape == (5, 1, 1)
    assert_close(keep_count.log_prob(unexpanded), log_probs)


def test_mean_variance_entropy_against_probs():
    beta = torch.tensor([[0.9, 0.6, 0.3, 0.8], [0.2, 0.5, 0.5, 0.5]], dtype=torch.float64)
    keep_count = KeepCount(keep_probs=beta)
    counts = torch.arange(5, dtype=torch.float64)
    q = torch.tensor(np.stack([product_formula(b) for b in beta.numpy()]))
    mean = (q * counts).sum(-1)
    assert_close(keep_count.mean, mean)
    assert_close(keep_count.variance, (q * (counts - mean[:, None]) ** 2).sum(-1))
    assert_close(keep_count.entropy(), -(q * q.log()).sum(-1))


@pytest.mark.parametrize("batch", [(), (3,)])
def test_sample_goodness_of_fit(batch):
    torch.manual_seed(2)
    keep_count = KeepCount(keep_logits=torch.randn(batch + (6,), dtype=torch.float64))
    samples = keep_count.sample((20000,))
    probs = keep_count.probs.reshape(-1, 7)
    for column, p in zip(samples.reshape(20000, -1).T, probs, strict=True):
        counts = torch.bincount(column, minlength=7).double()
        assert multinomial_goodness_of_fit(p, counts) > 1e-3


def test_sample_hard_mask_matches_counts():
    keep_count = KeepCount.geometric(0.7, 5)
    torch.manual_seed(3)
    counts = keep_count.sample_keep_count((50, 2))
    torch.manual_seed(3)
    masks = keep_count.sample_hard_mask((50, 2))
    assert masks.shape == (50, 2, 5) and masks.dtype == torch.float32
    assert_close(masks, hard_mask(counts, 5, dtype=torch.float32))
    assert_close(masks.sum(-1).long(), counts)
    assert (masks[..., 1:] <= masks[..., :-1]).all()


@pytest.mark.parametrize("default", [False, True])
def test_expand(default):
    small = KeepCount(keep_logits=torch.randn(1, 4))
    assert small.logits.shape == (1, 5)  # cached now; expand must carry the cache along
    expand = dist.TorchDistribution.expand if default else KeepCount.expand
    large = expand(small, (3, 2))
    assert large.batch_shape == (3, 2)
    values = torch.tensor([[0, 1], [2, 3], [4, 4]])
    assert_close(large.log_prob(values), small.log_prob(values))
    assert large.sample((5,)).shape == (5, 3, 2)
    by = small.expand_by((6,))
    assert by.batch_shape == (6, 1)
    if not default:
        assert isinstance(large, KeepCount) and large.probs.shape == (3, 2, 5)


def test_infer_shapes():
    assert KeepCount.infer_shapes(keep_logits=(2, 3, 4)) == ((2, 3), ())
    keep_count = KeepCount(keep_probs=torch.full((5, 4), 0.5))
    assert KeepCount.infer_shapes(keep_probs=(5, 4)) == (keep_count.batch_shape, ())


def test_validation_errors():
    with pytest.raises(ValueError, match="keep_probs or keep_logits.*both"):
        KeepCount(keep_probs=torch.full((3,), 0.5), keep_logits=torch.zeros(3))
    with pytest.raises(ValueError, match="keep_probs or keep_logits.*neither"):
        KeepCount()
    with pytest.raises(ValueError, match="keep_probs"):
        KeepCount(keep_probs=torch.tensor([0.5, 1.0]), validate_args=True)
    with pytest.raises(ValueError, match="keep_logits"):
        KeepCount(keep_logits=torch.tensor([0.0, math.nan]), validate_args=True)
    with pytest.raises(ValueError, match="keep_probs must have at least one dimension"):
        KeepCount(keep_probs=torch.tensor(0.5))
    with pytest.raises(ValueError, match="num_blocks"):
        KeepCount.geometric(0.5, 0)
    with pytest.raises(ValueError, match="count_probs"):
        KeepCount.from_count_probs(torch.tensor([0.5, -0.1, 0.6]))
    keep_count = KeepCount(keep_probs=torch.full((3,), 0.5), validate_args=True)
    with pytest.raises(ValueError):
        keep_count.log_prob(torch.tensor(4))
    with pytest.raises(ValueError):
        keep_count.log_prob(torch.tensor(-1))


def test_trace_enum_elbo_marginalises_keep_count():
    """With the count enumerated in the model, the ELBO is the exact log marginal likelihood."""
    torch.manual_seed(4)
    keep_logits = torch.randn(4, dtype=torch.float64, requires_grad=True)
    data = torch.tensor([0.3, 2.2, 3.9, 1.1, 0.0], dtype=torch.float64)

    @config_enumerate
    def model():
        with pyro.plate("data", len(data)):
            count = pyro.sample("count", KeepCount(keep_logits=keep_logits))
            pyro.sample("obs", dist.Normal(count.to(data.dtype), 0.7), obs=data)

    def guide():
        pass

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide)
    (grad,) = torch.autograd.grad(loss, keep_logits)
    log_q = torch.tensor(
        np.log(product_formula(torch.sigmoid(keep_logits).detach().numpy())),
        requires_grad=False,
    )
    counts = torch.arange(5, dtype=torch.float64)
    log_lik = dist.Normal(counts, 0.7).log_prob(data[:, None])
    expected = (log_q + log_lik).logsumexp(-1).sum()
    assert_close(-loss.detach(), expected)
    # gradient of the log marginal likelihood by central differences of the oracle
    step, numeric = 1e-6, torch.empty(4, dtype=torch.float64)
    for i in range(4):
        shifted = []
        for sign in (1.0, -1.0):
            logits = keep_logits.detach().clone()
            logits[i] += sign * step
            q = torch.tensor(np.log(product_formula(torch.sigmoid(logits).numpy())))
            shifted.append((q + log_lik).logsumexp(-1).sum())
        numeric[i] = (shifted[0] - shifted[1]) / (2 * step)
    assert_close(-grad, numeric, rtol=1e-5, atol=1e-7)


def test_one_sampler_the_uniform_draw_of_fn3_is_the_tensor_sampler():
    """count_for_uniform (FN3's per-step prior draw) is sample_keep_count's inverse CDF."""
    law = KeepCount.geometric(torch.tensor(0.8, dtype=torch.float64), 6)
    torch.manual_seed(0)
    tensor_draws = law.sample_keep_count((2000,))
    torch.manual_seed(0)
    uniforms = torch.rand(2000, dtype=torch.float64).tolist()
    assert [law.count_for_uniform(u) for u in uniforms] == tensor_draws.tolist()
    assert law.count_for_uniform(0.0) == 0 and law.count_for_uniform(1.0 - 1e-16) == 6
    with pytest.raises(ValueError, match="unbatched"):
        KeepCount(keep_probs=torch.full((2, 3), 0.5)).count_for_uniform(0.5)


def test_fn3_ordered_dropout_and_ordering_units_draw_from_the_keep_count_law():
    from bayes_nest.infer import OrderedDropout, VariationalOrderingUnit
    from bayes_nest.models import MLP
    from bayes_nest.nn import axes

    net = MLP(4, [8], 2, groups=4)
    dropout = OrderedDropout(net, keep_prob=0.7, seed=3)
    uniforms = torch.rand(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    law = KeepCount.geometric(torch.tensor(0.7, dtype=torch.float64), 3)
    drawn = [dropout.sample()["hidden.0"] for _ in range(500)]
    assert drawn == [1 + law.count_for_uniform(u) for u in uniforms.tolist()]
    vou = VariationalOrderingUnit(axes(net)["hidden.0"], init_keep_prob=0.6)
    torch.manual_seed(4)
    counts = vou.sample_keep_counts((4000,)) - 1
    q = vou.keep_count_probs().detach()
    observed = torch.stack([(counts == b).double().mean() for b in range(4)])
    assert (observed - q.double()).abs().max() < 4 * (0.25 / 4000) ** 0.5
