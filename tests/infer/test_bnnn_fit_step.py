"""The training step of ``BNNN.fit`` is Pyro's ``SVI.step``: same parameters after an epoch,
gradients left as SVI leaves them, and torch's one-kernel optimizers where they apply."""

import pyro
import pytest
import torch
from pyro.infer import SVI

from bayes_nest.data import as_loader
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.bnnn_elbo import NestedMeanFieldELBO
from bayes_nest.infer.bnnn_fit import _fill_missing_grads, _release_grads
from bayes_nest.models import MLP
from bayes_nest.testing import assert_close

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: faster and steadier


def _problem(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _adam_per_parameter(lr):
    """Pyro's own way: one torch Adam per parameter (not fused by fit)."""
    return pyro.optim.PyroOptim(lambda params, **kw: torch.optim.Adam(params, **kw), {"lr": lr})


def test_fit_equals_svi_steps_of_the_same_program():
    """One epoch of fit (the trace-free ELBO, parameters found once, gradients released) ends
    where Pyro's SVI.step over the same batches and random state ends."""
    x, y = _problem()
    runs = []
    for use_svi in (False, True):
        torch.manual_seed(0)
        bnnn = BNNN(MLP(6, [8, 8], 3, groups=4))
        initial = [p.detach().clone() for p in bnnn.parameters()]
        if not use_svi:
            bnnn.fit((x, y), epochs=1, batch_size=16, optimizer=_adam_per_parameter(1e-2),
                     progress=False, seed=3)  # fmt: skip
        else:
            pyro.clear_param_store()
            pyro.set_rng_seed(3)
            loader = as_loader((x, y), 16, shuffle=True, seed=3)
            bnnn.likelihood.dataset_size = len(x)
            bnnn.set_epoch(0)
            svi = SVI(bnnn.model, bnnn.guide, _adam_per_parameter(1e-2), NestedMeanFieldELBO())
            with pyro.validation_enabled(False):
                for xb, yb in loader:
                    svi.step(xb, yb)
        runs.append(bnnn)
    moved = [not torch.equal(p, q) for p, q in zip(runs[0].parameters(), initial, strict=True)]
    assert all(moved)  # every parameter was trained, so the comparison below says something
    for (name, a), b in zip(runs[0].named_parameters(), runs[1].parameters(), strict=True):
        assert_close(a, b, scale=10, msg=name)
        assert b.grad is not None and a.grad is not None
        assert torch.equal(a.grad, torch.zeros_like(a)), name  # zeros, as SVI leaves them


def test_released_gradients_come_back_as_zeros_only_where_svi_keeps_zeros():
    reached, unreached, never = (torch.nn.Parameter(torch.ones(3)) for _ in range(3))
    reached.grad, unreached.grad = torch.full((3,), 2.0), torch.full((3,), 5.0)
    released = _release_grads({reached, unreached, never})
    assert released == {reached, unreached}
    assert reached.grad is None and unreached.grad is None
    reached.grad = torch.full((3,), 7.0)  # the next backward pass reaches only this one
    _fill_missing_grads(released)
    assert torch.equal(reached.grad, torch.full((3,), 7.0))
    assert torch.equal(unreached.grad, torch.zeros(3))
    assert never.grad is None  # SVI's zero_grads leaves a missing gradient missing


def _fit_with(optimizer):
    x, y = _problem(32)
    torch.manual_seed(0)
    bnnn = BNNN(MLP(6, [8], 3, groups=4))
    bnnn.fit((x, y), epochs=1, batch_size=16, optimizer=optimizer, progress=False, seed=0)
    return bnnn._optim.fused


def test_the_one_optimizer_is_torch_fused_unless_the_arguments_choose():
    assert _fit_with(pyro.optim.Adam({"lr": 1e-3})).defaults["fused"] is True
    chosen = _fit_with(pyro.optim.Adam({"lr": 1e-3, "foreach": False})).defaults
    assert chosen["foreach"] is False and not chosen["fused"]
    assert _fit_with(pyro.optim.SGD({"lr": 1e-3})).defaults["fused"] is True
