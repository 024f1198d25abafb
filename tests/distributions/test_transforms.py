"""Tests for bayes_nest.distributions.constraints and bayes_nest.distributions.transforms."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch.distributions import biject_to, transform_to

from bayes_nest.distributions import (
    Downhill,
    DownhillStraightThrough,
    DownhillTransform,
    constraints,
)
from bayes_nest.testing import assert_close


def test_constraints_check_batches():
    values = torch.tensor(
        [
            [0.9, 0.5, 0.1],  # strictly decreasing inside (0, 1)
            [1.0, 1.0, 0.0],  # hard mask: only the closed constraint
            [0.9, 0.9, 0.1],  # tie
            [0.5, 0.6, 0.1],  # increasing step
            [1.2, 0.5, 0.1],  # outside [0, 1]
        ]
    )
    assert constraints.downhill.check(values).tolist() == [True, False, False, False, False]
    assert constraints.downhill_closed.check(values).tolist() == [True, True, True, False, False]
    assert constraints.downhill.check(values.view(5, 1, 3)).shape == (5, 1)
    assert not constraints.downhill.check(torch.tensor(0.5))
    assert constraints.downhill.event_dim == 1
    assert constraints.open_unit_interval.check(torch.tensor([0.0, 0.5, 1.0])).tolist() == [
        False,
        True,
        False,
    ]
    assert constraints.positive_finite.check(torch.tensor([-1.0, 2.0, float("inf")])).tolist() == [
        False,
        True,
        False,
    ]


def test_registered_with_biject_to_and_transform_to():
    for constraint in (constraints.downhill, constraints.downhill_closed):
        assert isinstance(biject_to(constraint), DownhillTransform)
        assert isinstance(transform_to(constraint), DownhillTransform)
    assert isinstance(biject_to(Downhill.support), DownhillTransform)
    assert DownhillTransform() == DownhillTransform()


def test_round_trip_and_support():
    torch.manual_seed(0)
    transform = DownhillTransform()
    x = torch.randn(4, 3, 6, dtype=torch.float64) * 3
    y = transform(x)
    assert y.shape == x.shape
    assert constraints.downhill.check(y).all()
    assert_close(y, torch.sigmoid(x).cumprod(-1))
    assert_close(transform.inv(y), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_stays_in_support_for_large_inputs(dtype):
    x = torch.linspace(-3.0, 20.0, 20, dtype=dtype)
    y = DownhillTransform()(torch.stack([x, x.flip(0)]))
    assert constraints.downhill.check(y).all()


def test_log_abs_det_jacobian_matches_autograd():
    torch.manual_seed(1)
    transform = DownhillTransform()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    assert log_det.shape == (5,)
    for row, value in zip(x, log_det, strict=True):
        jacobian = torch.autograd.functional.jacobian(transform, row)
        assert_close(value.item(), torch.linalg.slogdet(jacobian)[1].item())
    # the inverse's Jacobian is the reciprocal
    inv_log_det = transform.inv.log_abs_det_jacobian(y, x)
    assert_close(inv_log_det, -log_det)


@pytest.mark.parametrize("cls", [Downhill, DownhillStraightThrough])
def test_auto_normal_guide_on_a_downhill_site(cls):
    pyro.clear_param_store()
    pyro.set_rng_seed(2)

    def model():
        mask = pyro.sample("mask", cls(keep_probs=torch.full((4,), 0.7), temperature=0.5))
        pyro.sample("obs", dist.Normal(mask.sum(), 1.0), obs=torch.tensor(2.0))

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    with pyro.validation_enabled(True):
        losses = [svi.step() for _ in range(5)]
        sample = guide()["mask"]
    assert np.isfinite(losses).all()
    assert constraints.downhill.check(sample)
