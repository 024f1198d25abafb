"""The nested-latent recipe: mask sites, capped ordering units, the masked latent posterior,
the exact sum over prefixes and the guide checks."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from scipy.stats import norm

from bayes_nest.distributions import Downhill
from bayes_nest.infer.latent import (
    AmortizedOrderingUnit,
    OrderingUnit,
    masked_normal,
    nested_elbo,
    nested_mask,
)
from bayes_nest.infer.latent_checks import UnsafeGuideError, check_guide, fit_latent
from bayes_nest.testing import assert_close


def test_mask_site_is_per_example_inside_a_plate_with_the_geometric_prior():
    def model():
        with pyro.plate("data", 6):
            return nested_mask("order", 5, keep_prob=0.7, always_on=1)

    torch.manual_seed(0)
    trace = pyro.poutine.trace(model).get_trace()
    mask = trace.nodes["_RETURN"]["value"]
    assert mask.shape == (6, 5)
    assert torch.all(mask[:, 0] == 1)  # always on
    assert torch.all(mask[:, 1:] <= mask[:, :-1])  # a prefix
    counts = trace.nodes["order"]["value"]
    assert torch.equal(mask.sum(-1), counts.to(mask.dtype) + 1)
    probs = trace.nodes["order"]["fn"].probs
    expected = [0.7**b * 0.3 for b in range(4)] + [0.7**4]
    assert_close(probs.expand(6, 5)[0], torch.tensor(expected))


def test_global_mask_outside_a_plate_and_relaxed_site():
    torch.manual_seed(0)
    mask = pyro.poutine.trace(lambda: nested_mask("m", 4, site="relaxed")).get_trace()
    value = mask.nodes["_RETURN"]["value"]
    assert value.shape == (4,)
    assert set(value.tolist()) <= {0.0, 1.0} and torch.all(value[1:] <= value[:-1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 0}, "dim"),
        ({"dim": 3, "always_on": 3}, "always_on"),
        ({"dim": 3, "keep_prob": 1.0}, "keep_prob"),
        ({"dim": 3, "site": "hard"}, "site"),
        ({"dim": 3, "site": "relaxed", "temperature": 0.0}, "temperature"),
    ],
)
def test_bad_mask_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nested_mask("m", **kwargs)


def test_keep_probabilities_are_capped():
    unit = OrderingUnit("order", 5, always_on=1, init_keep_prob=0.5, max_keep_prob=0.9)
    with torch.no_grad():
        unit.logits.copy_(torch.tensor([-3.0, 0.0, 4.0, 30.0]))
    expected = 0.9 / (1 + np.exp(-np.array([-3.0, 0.0, 4.0, 30.0])))
    assert_close(unit.keep_probs().detach(), torch.tensor(expected, dtype=torch.float32))
    marginals = unit.keep_marginals().detach()
    assert_close(marginals, torch.tensor([1.0, *np.cumprod(expected)], dtype=torch.float32))
    assert unit.keep_probs().max() <= 0.9


def test_initial_keep_probability_must_be_below_the_cap():
    assert_close(
        OrderingUnit("o", 3, init_keep_prob=0.5).keep_probs().detach(), torch.full((3,), 0.5)
    )
    with pytest.raises(ValueError, match="init_keep_prob"):
        OrderingUnit("o", 3, init_keep_prob=0.97)


def test_amortized_unit_gives_each_example_its_keep_logits():
    torch.manual_seed(0)
    unit = AmortizedOrderingUnit("order", torch.nn.Linear(3, 4), 5, always_on=1)
    x = torch.randn(7, 3)
    assert unit.keep_probs(x).shape == (7, 4) and unit.keep_marginals(x).shape == (7, 5)
    assert_close(unit.keep_probs(x), 0.95 * torch.sigmoid(unit.encoder(x)))
    with pytest.raises(ValueError, match="dim - always_on = 4"):
        AmortizedOrderingUnit("order", torch.nn.Linear(3, 5), 5, always_on=1).keep_probs(x)
    with pytest.raises(TypeError, match="unit\\(x\\)"):
        unit.keep_probs()


def test_masked_normal_pays_the_kl_only_for_kept_dimensions():
    loc, scale = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 2.0, 0.7])
    mask = torch.tensor([1.0, 1.0, 0.0])
    q = masked_normal(loc, scale, mask).to_event(1)
    kl = torch.distributions.kl_divergence(q, dist.Normal(torch.zeros(3), 1.0).to_event(1))
    per_dim = 0.5 * (scale**2 + loc**2 - 1) - torch.log(scale)
    assert_close(kl, (mask * per_dim).sum())
    with pytest.raises(ValueError, match="last"):
        masked_normal(loc, scale, torch.ones(4))


def test_enumerated_count_gives_the_exact_elbo():
    """Model x ~ N(sum_k w_k m_k, 1) with one global count: the loss is
    sum_b q_b * (-log N(x; prefix sum_b)) + KL(q || p), checked with scipy."""
    w = torch.tensor([1.0, -0.5, 2.0])
    x = torch.tensor(1.3)
    unit = OrderingUnit("order", 3, init_keep_prob=0.6, max_keep_prob=0.9)
    with torch.no_grad():
        unit.logits.copy_(torch.tensor([0.3, -1.0, 2.0]))

    def model():
        mask = nested_mask("order", 3, keep_prob=0.8)
        pyro.sample("x", dist.Normal((mask * w).sum(-1), 1.0), obs=x)

    def guide():
        unit()

    loss = nested_elbo(max_plate_nesting=0).differentiable_loss(model, guide).item()
    beta = 0.9 / (1 + np.exp(-np.array([0.3, -1.0, 2.0])))
    q = np.array([np.prod(beta[:b]) * (1 - beta[b]) for b in range(3)] + [np.prod(beta)])
    p = np.array([0.8**b * 0.2 for b in range(3)] + [0.8**3])
    prefix = np.concatenate([[0.0], np.cumsum(w.numpy())])
    expected = -np.sum(q * norm.logpdf(1.3, prefix, 1.0)) + np.sum(q * np.log(q / p))
    assert_close(loss, expected, dtype=torch.float32)


def test_relaxed_density_is_unbounded_at_the_hard_masks():
    """Why point-mass guides diverge: the density grows without bound towards a vertex."""
    fn = Downhill(keep_probs=torch.full((3,), 0.8, dtype=torch.float64), temperature=0.5)
    values = [
        fn.log_prob(torch.tensor([1 - e, 1 - 2 * e, e], dtype=torch.float64))
        for e in (1e-2, 1e-4, 1e-6)
    ]
    assert values[0] + 5 < values[1] and values[1] + 5 < values[2]


def _relaxed_model(x, dataset_size=None):
    with pyro.plate("data", len(x)):
        mask = nested_mask("order", 3, site="relaxed")
        pyro.sample("x", dist.Normal(mask.sum(-1), 1.0), obs=x)


def test_point_mass_guide_on_a_relaxed_mask_is_refused():
    x = torch.randn(4)
    guide = AutoDelta(_relaxed_model)
    with pytest.raises(UnsafeGuideError, match="AutoDelta"):
        check_guide(_relaxed_model, guide, Trace_ELBO(), x)


def test_autonormal_with_mean_field_is_refused_and_warned_without():
    x = torch.randn(4)
    guide = AutoNormal(_relaxed_model)
    with pytest.raises(UnsafeGuideError, match="TraceMeanField_ELBO"):
        check_guide(_relaxed_model, guide, TraceMeanField_ELBO(), x)
    with pytest.warns(UserWarning, match="does not learn an order"):
        assert len(check_guide(_relaxed_model, guide, Trace_ELBO(), x)) == 1


def test_ordering_unit_guides_pass_and_a_missing_site_is_refused():
    x = torch.randn(4)
    unit = OrderingUnit("order", 3, site="relaxed")

    def guide(x):
        with pyro.plate("data", len(x)):
            unit()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_guide(_relaxed_model, guide, TraceMeanField_ELBO(), x) == []
    with pytest.raises(UnsafeGuideError, match="no sample site"):
        check_guide(_relaxed_model, lambda x: None, TraceMeanField_ELBO(), x)


def test_count_site_without_enumeration_warns():
    count_unit = OrderingUnit("order", 3)

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(nested_mask("order", 3).sum(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            count_unit()

    with pytest.warns(UserWarning, match="not enumerated"):
        check_guide(model, guide, Trace_ELBO(), torch.randn(4))


def test_fit_latent_validates_and_fits_a_keep_count():
    """One global count, x_n ~ N(sum of the first b weights, 0.3): data generated with b = 2 of
    3 learns q(b = 2) as the most probable count."""
    w = torch.tensor([1.0, 1.0, 5.0])
    unit = OrderingUnit("order", 3, init_keep_prob=0.5, max_keep_prob=0.99)

    def model(x, dataset_size):
        mask = nested_mask("order", 3, keep_prob=0.5)
        with pyro.plate("data", dataset_size, subsample=torch.arange(len(x))):
            pyro.sample("x", dist.Normal((mask * w).sum(-1), 0.3), obs=x)

    def guide(x, dataset_size):
        unit()

    x = 2.0 + 0.3 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    losses = fit_latent(
        model, guide, x, [unit], steps=300, lr=0.1, elbo=nested_elbo(1), progress=False
    )
    assert losses[-1] < losses[0]
    probs = unit.distribution().probs.detach()
    assert int(probs.argmax()) == 2 and probs[2] > 0.9
    with pytest.raises(ValueError, match="steps"):
        fit_latent(model, guide, x, [unit], steps=0)
    assert math.isfinite(losses[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "guide_class, elbo", [(AutoDelta, Trace_ELBO), (AutoNormal, TraceMeanField_ELBO)]
)
def test_the_refused_guides_do_diverge(guide_class, elbo):
    """What check_guide refuses: on a per-example relaxed mask of PPCA the loss falls far below
    that of any plausible fit (about +5e3 here) and keeps falling."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=gen) @ torch.randn(4, 10, generator=gen)

    def model(x):
        loadings = pyro.param("loadings", 0.1 * torch.randn(10, 4, generator=gen))
        with pyro.plate("data", len(x)):
            mask = nested_mask("order", 4, site="relaxed")
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
            pyro.sample("x", dist.Normal((z * mask) @ loadings.T, 0.5).to_event(1), obs=x)

    pyro.set_rng_seed(0)
    svi = pyro.infer.SVI(model, guide_class(model), pyro.optim.Adam({"lr": 0.02}), elbo())
    with pyro.validation_enabled(False):
        losses = [svi.step(x) for _ in range(1000)]
    assert losses[-1] < -5000 and losses[-1] < losses[500] - 1000


def test_uniform_cap_makes_every_prefix_equally_likely_at_saturation():
    unit = OrderingUnit("order", 6, always_on=1, max_keep_prob="uniform")
    assert_close(unit.cap, torch.tensor([5 / 6, 4 / 5, 3 / 4, 2 / 3, 1 / 2]))
    assert bool((unit.keep_probs() < unit.cap).all())  # starts below the caps
    with torch.no_grad():
        unit.logits.fill_(40.0)  # every keep probability at its cap
    assert_close(unit.distribution().probs.detach(), torch.full((6,), 1 / 6))
    with pytest.raises(ValueError, match="max_keep_prob"):
        OrderingUnit("order", 3, max_keep_prob="geometric")
    with pytest.raises(ValueError, match="3 values"):
        OrderingUnit("order", 3, max_keep_prob=[0.9, 0.9])
