"""Tests for bayes_nest.distributions.downhill.Downhill."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.testing.gof import multinomial_goodness_of_fit
from scipy import integrate
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from bayes_nest.distributions import Downhill, DownhillStraightThrough, KeepCount, constraints
from bayes_nest.testing import assert_close


def differences(m: torch.Tensor) -> torch.Tensor:
    """Simplex point y with y_0 = 1 - m_1, y_k = m_k - m_{k+1}, y_D = m_D."""
    ones = torch.ones_like(m[..., :1])
    zeros = torch.zeros_like(m[..., :1])
    return torch.cat([ones, m], -1) - torch.cat([m, zeros], -1)


def concrete_log_density(y: np.ndarray, log_alpha: np.ndarray, tau: float) -> float:
    """Concrete log density on the simplex (Maddison et al. 2017, eq. 1), written in numpy."""
    n = len(y)
    log_terms = log_alpha - tau * np.log(y)
    return (
        math.lgamma(n)
        + (n - 1) * math.log(tau)
        + np.sum(log_alpha - (tau + 1) * np.log(y))
        - n * np.logaddexp.reduce(log_terms)
    )


def test_shapes_and_attributes():
    torch.manual_seed(0)
    keep_logits = torch.randn(2, 3, 5)
    downhill = Downhill(keep_logits=keep_logits, temperature=0.5)
    assert downhill.batch_shape == (2, 3) and downhill.event_shape == (5,)
    assert downhill.num_blocks == 5 and downhill.has_rsample
    assert downhill.keep_logits is keep_logits
    assert_close(downhill.keep_probs, torch.sigmoid(keep_logits))
    assert downhill.temperature.shape == ()
    assert isinstance(downhill.index_distribution, KeepCount)
    assert downhill.index_distribution.probs.shape == (2, 3, 6)
    sample = downhill.rsample((4,))
    assert sample.shape == (4, 2, 3, 5)
    assert downhill.log_prob(sample).shape == (4, 2, 3)
    assert downhill.sample().shape == (2, 3, 5)
    assert downhill.support.event_dim == 1
    assert downhill.support.check(sample).shape == (4, 2, 3)
    # a single draw scored against the whole batch (both scoring paths broadcast)
    single = Downhill(keep_logits=torch.randn(5), temperature=0.5).rsample()
    assert downhill.log_prob(single).shape == (2, 3)
    assert_close(downhill.log_prob(single), downhill.log_prob(single.clone()))


@pytest.mark.parametrize("cls", [Downhill, DownhillStraightThrough])
def test_geometric_constructor(cls):
    prior = cls.geometric(0.9, 5, temperature=0.5)
    assert type(prior) is cls and prior.event_shape == (5,)
    assert_close(prior.keep_probs, torch.full((5,), 0.9))
    expected = torch.tensor([0.9**b * 0.1 for b in range(5)] + [0.9**5])
    assert_close(prior.index_distribution.probs, expected)
    batched = cls.geometric(torch.tensor([0.5, 0.8]), 3, temperature=1.0)
    assert batched.batch_shape == (2,)
    with pytest.raises(ValueError, match="keep_probs"):
        cls.geometric(1.5, 3, temperature=1.0, validate_args=True)


def test_batched_temperature_broadcasts():
    downhill = Downhill(keep_probs=torch.full((4,), 0.7), temperature=torch.tensor([0.1, 1.0, 5.0]))
    assert downhill.batch_shape == (3,)
    assert downhill.index_distribution.batch_shape == (3,)
    sample = downhill.rsample((2,)).clone()  # a plain tensor: scored from its differences
    assert sample.shape == (2, 3, 4)
    for i, tau in enumerate([0.1, 1.0, 5.0]):
        single = Downhill(keep_probs=torch.full((4,), 0.7), temperature=tau)
        assert_close(downhill.log_prob(sample)[:, i], single.log_prob(sample[:, i]))
    # a low temperature gives nearly hard masks, a high one diffuse masks
    torch.manual_seed(1)
    sample = downhill.rsample((2000,))
    distance_to_hard = (sample - sample.round()).abs().mean((0, 2))
    assert distance_to_hard[0] < 0.05 < distance_to_hard[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.05, 10.0])
@pytest.mark.parametrize("beta", [1e-6, 1 - 1e-6, "mixed"])
def test_finite_and_in_support_at_extremes(dtype, temperature, beta):
    torch.manual_seed(2)
    if beta == "mixed":
        keep_probs = torch.where(torch.arange(40) % 3 == 0, 1e-6, 1 - 1e-6).to(dtype)
    else:
        keep_probs = torch.full((40,), beta, dtype=dtype)
    keep_logits = torch.logit(keep_probs).requires_grad_()
    downhill = Downhill(keep_logits=keep_logits, temperature=temperature)
    sample = downhill.rsample((2000,))
    assert sample.dtype == dtype
    assert constraints.downhill.check(sample).all()
    log_prob = downhill.log_prob(sample)
    assert torch.isfinite(log_prob).all()
    (grad,) = torch.autograd.grad(log_prob.sum() + sample.sum(), keep_logits)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.0])
def test_log_prob_matches_relaxed_one_hot_categorical(temperature):
    torch.manual_seed(3)
    keep_probs = torch.rand(3, 6, dtype=torch.float64) * 0.9 + 0.05
    downhill = Downhill(keep_probs=keep_probs, temperature=temperature)
    sample = downhill.rsample((50,))
    q = torch.tensor(
        np.stack([KeepCount(keep_probs=row).probs.numpy() for row in keep_probs]),
        dtype=torch.float64,
    )
    tau = torch.tensor(temperature, dtype=torch.float64)
    oracle = dist.RelaxedOneHotCategorical(tau, probs=q)
    plain = sample.clone()  # scored from its differences
    assert_close(downhill.log_prob(plain), oracle.log_prob(differences(plain)))
    # the draw itself is scored at its exact log y (kept with the draw): compare in log space
    log_y = sample._reversed_log_simplex.flip(-1)
    log_space_oracle = ExpRelaxedCategorical(tau, probs=q).log_prob(log_y) - log_y.sum(-1)
    assert_close(downhill.log_prob(sample), log_space_oracle)


def test_log_prob_matches_numpy_concrete_density():
    torch.manual_seed(4)
    keep_logits = torch.randn(4, dtype=torch.float64)
    downhill = Downhill(keep_logits=keep_logits, temperature=0.4)
    log_alpha = np.log(KeepCount(keep_logits=keep_logits).probs.numpy())
    for m in downhill.rsample((20,)):
        y = differences(m).numpy()
        expected = concrete_log_density(y, log_alpha, 0.4)
        assert_close(downhill.log_prob(m).item(), expected)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("keep_prob", [0.2, 0.9])
def test_density_integrates_to_one_one_block(temperature, keep_prob):
    downhill = Downhill(
        keep_probs=torch.tensor([keep_prob], dtype=torch.float64), temperature=temperature
    )

    def density(m):
        return downhill.log_prob(torch.tensor([m], dtype=torch.float64)).exp().item()

    total, _ = integrate.quad(density, 0.0, 1.0, limit=200)
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


@pytest.mark.parametrize("temperature", [0.8, 2.0])
def test_density_integrates_to_one_two_blocks(temperature):
    """Gauss-Legendre over 1 > m1 > m2 > 0 via m1 = u, m2 = u v (Jacobian u)."""
    downhill = Downhill(
        keep_probs=torch.tensor([0.7, 0.4], dtype=torch.float64), temperature=temperature
    )
    nodes, weights = np.polynomial.legendre.leggauss(400)
    nodes, weights = (nodes + 1) / 2, weights / 2
    u, v = np.meshgrid(nodes, nodes, indexing="ij")
    m = torch.tensor(np.stack([u, u * v], -1))
    density = downhill.log_prob(m).exp().numpy() * u
    total = weights @ density @ weights
    np.testing.assert_allclose(total, 1.0, rtol=2e-4)


@pytest.mark.parametrize("temperature", [0.1, 2.0])
def test_argmax_of_differences_follows_keep_count(temperature):
    """argmax y ~ Cat(q) at every temperature: logits are log q (not q)."""
    torch.manual_seed(5)
    keep_probs = torch.tensor([0.3, 0.9, 0.6, 0.95], dtype=torch.float64)
    downhill = Downhill(keep_probs=keep_probs, temperature=temperature)
    winners = differences(downhill.rsample((20000,))).argmax(-1)
    counts = torch.bincount(winners, minlength=5).double()
    q = downhill.index_distribution.probs
    assert multinomial_goodness_of_fit(q, counts) > 1e-3
    # passing q as logits would draw counts from softmax(q): rejected by the same test
    assert multinomial_goodness_of_fit(torch.softmax(q, -1), counts) < 1e-6


def test_pathwise_gradient_matches_score_function_estimate():
    """Gradient of E[f(m)] by reparameterisation vs the score-function estimator using log_prob."""
    torch.manual_seed(6)
    keep_logits = torch.tensor([0.5, -0.3, 1.0], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)

    def f(m):
        return (m * weights).sum(-1) ** 2 + m[..., 0] * m[..., 2]

    pathwise, score = [], []
    for _ in range(20):
        downhill = Downhill(keep_logits=keep_logits, temperature=0.7)
        pathwise.append(torch.autograd.grad(f(downhill.rsample((10000,))).mean(), keep_logits)[0])
        downhill = Downhill(keep_logits=keep_logits, temperature=0.7)  # fresh graph for log q
        sample = downhill.rsample((10000,)).detach()
        baseline = f(downhill.rsample((10000,)).detach()).mean()
        surrogate = ((f(sample) - baseline) * downhill.log_prob(sample)).mean()
        score.append(torch.autograd.grad(surrogate, keep_logits)[0])
    pathwise, score = torch.stack(pathwise), torch.stack(score)
    standard_error = ((pathwise.var(0) + score.var(0)) / 20).sqrt()
    assert (standard_error < 0.05 * pathwise.mean(0).abs()).all()  # the check has power
    assert ((pathwise.mean(0) - score.mean(0)).abs() < 4 * standard_error).all()


def test_draws_are_scored_with_their_exact_log_simplex():
    """Tiny gaps y_k are lost in float m; log_prob of the draw itself must not lose them.

    A score-function estimate built on ``log_prob(sample())`` then agrees with the pathwise
    gradient even where most y_k underflow the floor (many blocks, low temperature), while the
    same estimate from a copy of the draw (scored from its differences) is biased.
    """
    torch.manual_seed(8)
    rows, draws, size = 3000, 4, 16
    keep_logits = torch.zeros(rows, 1, size, dtype=torch.float64, requires_grad=True)
    target = (torch.arange(size) < size // 2).double()

    def f(m):
        return ((m - target) ** 2).mean(-1)

    def score_gradient(copy):
        downhill = Downhill(keep_logits=keep_logits, temperature=0.2)
        m = downhill.sample((draws,))
        m = m.clone() if copy else m
        values = f(m)
        baseline = (values.sum(0, keepdim=True) - values) / (draws - 1)
        surrogate = ((values - baseline) * downhill.log_prob(m)).mean(0).sum()
        return torch.autograd.grad(surrogate, keep_logits)[0].squeeze(1)

    downhill = Downhill(keep_logits=keep_logits, temperature=0.2)
    pathwise = torch.autograd.grad(f(downhill.rsample((draws,))).mean(0).sum(), keep_logits)[0]
    pathwise = pathwise.squeeze(1)
    exact, copied = score_gradient(copy=False), score_gradient(copy=True)

    def z_scores(a, b):
        return (a.mean(0) - b.mean(0)).abs() / ((a.var(0) + b.var(0)) / rows).sqrt()

    assert z_scores(pathwise, exact).max() < 4.5
    assert z_scores(pathwise, copied).max() > 10


def test_gradcheck_rsample_and_log_prob():
    """Pathwise derivatives of draws and of both scoring paths, also wrt the temperature."""

    def draw_and_score(keep_logits, temperature):
        torch.manual_seed(9)
        downhill = Downhill(keep_logits=keep_logits, temperature=temperature)
        m = downhill.rsample((3,))
        return 2 * m.sum(0) + downhill.log_prob(m).sum() + downhill.log_prob(m.clone()).sum()

    keep_logits = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    for temperature in (torch.tensor(0.7), torch.tensor([0.7, 1.3])):
        temperature = temperature.double().requires_grad_()
        assert torch.autograd.gradcheck(draw_and_score, (keep_logits, temperature))
    fixed = torch.tensor(0.5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda k: draw_and_score(k, fixed), (keep_logits,))


@pytest.mark.parametrize("default", [False, True])
def test_expand(default):
    torch.manual_seed(7)
    small = Downhill(keep_logits=torch.randn(1, 4), temperature=0.5)
    expand = dist.TorchDistribution.expand if default else Downhill.expand
    large = expand(small, (3, 2))
    assert large.batch_shape == (3, 2) and large.event_shape == (4,)
    value = large.rsample()
    assert value.shape == (3, 2, 4)
    assert_close(large.log_prob(value), small.log_prob(value))
    assert large.rsample((5,)).shape == (5, 3, 2, 4)
    if not default:
        assert isinstance(large, Downhill)
        assert large.keep_logits.shape == (3, 2, 4)
        assert large.index_distribution.probs.shape == (3, 2, 5)
    by = small.expand_by((6,))
    assert by.batch_shape == (6, 1)
    assert by.log_prob(by.rsample()).shape == (6, 1)


def test_expand_with_batched_temperature():
    downhill = Downhill(keep_probs=torch.full((2, 1, 3), 0.6), temperature=torch.tensor([0.5]))
    large = downhill.expand((2, 4))
    assert large.temperature.shape == (2, 4)
    value = large.rsample()
    assert_close(large.log_prob(value), downhill.log_prob(value))


def test_infer_shapes():
    assert Downhill.infer_shapes(keep_logits=(2, 3, 5)) == ((2, 3), (5,))
    assert Downhill.infer_shapes(keep_probs=(3, 5), temperature=(4, 1)) == ((4, 3), (5,))
    downhill = Downhill(keep_probs=torch.full((3, 5), 0.5), temperature=torch.ones(4, 1))
    assert (downhill.batch_shape, downhill.event_shape) == ((4, 3), (5,))


def test_validation_errors():
    keep_probs = torch.full((3,), 0.5)
    with pytest.raises(ValueError, match="both"):
        Downhill(keep_probs=keep_probs, keep_logits=torch.zeros(3), temperature=1.0)
    with pytest.raises(ValueError, match="neither"):
        Downhill(temperature=1.0)
    with pytest.raises(TypeError):
        Downhill(keep_probs)  # temperature is required
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            Downhill(keep_probs=keep_probs, temperature=bad, validate_args=True)
    with pytest.raises(ValueError, match="keep_probs"):
        Downhill(keep_probs=torch.tensor([0.5, 0.0]), temperature=1.0, validate_args=True)
    with pytest.raises(ValueError, match="temperature of shape"):
        Downhill(keep_probs=torch.full((2, 3), 0.5), temperature=torch.ones(3))
    with pytest.raises(ValueError, match="at least one dimension"):
        Downhill(keep_probs=torch.tensor(0.5), temperature=1.0)
    downhill = Downhill(keep_probs=keep_probs, temperature=1.0, validate_args=True)
    for outside in ([0.9, 0.9, 0.1], [1.0, 0.5, 0.1], [0.9, 0.5, 0.0], [0.2, 0.5, 0.1]):
        with pytest.raises(ValueError):
            downhill.log_prob(torch.tensor(outside))
    with pytest.raises(ValueError):
        downhill.log_prob(torch.tensor([0.9, 0.5]))  # wrong event size


def test_validation_can_be_switched_off():
    with pyro.validation_enabled(False):
        assert not Downhill(keep_probs=torch.full((3,), 0.5), temperature=-1.0)._validate_args
        downhill = Downhill(keep_probs=torch.full((3,), 0.5), temperature=1.0)
        # outside the support: no error, and still no NaN (differences are floored at tiny)
        assert torch.isfinite(downhill.log_prob(torch.tensor([0.9, 0.9, 0.1]))).all()


def test_no_closed_form_mean():
    with pytest.raises(NotImplementedError):
        _ = Downhill(keep_probs=torch.full((3,), 0.5), temperature=1.0).mean
