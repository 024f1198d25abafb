"""The BNNN as a Pyro program: prior predictive, swappable priors, the fast ELBO, AutoGuides."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal

from bayes_nest.infer import likelihoods
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.bnnn_elbo import NestedMeanFieldELBO, fast_path_applies
from bayes_nest.models import MLP, ConvNet
from bayes_nest.nn.local_reparam import local_reparameterization
from bayes_nest.testing import assert_close


def _bnnn(seed=0, **kw):
    torch.manual_seed(seed)
    bnnn = BNNN(MLP(4, [8, 8], 3, groups=4), **kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # spread the variational parameters so every term matters
        for vou in bnnn.vous.values():
            vou.keep_logits.copy_(torch.randn(vou.keep_logits.shape, generator=g))
        for _, layer, *_ in bnnn.bayesian_layers():
            layer.weight_rho.add_(torch.rand(layer.weight_rho.shape, generator=g) * 3)
    return bnnn


def _data(n=12, seed=0, features=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, 3, (n,), generator=g)


def _forward_by_hand(net, sites, x, s):
    """The MLP's logits of draw ``s`` from the returned weight and mask sites."""

    def site(name, like):
        return sites[name][s].reshape(like.shape)  # Predictive adds a leading batch dim

    h = x
    for i, layer in enumerate(net.hidden):
        a = layer.affine
        w, b = (
            site(f"hidden.{i}.affine.weight", a.weight_loc),
            site(f"hidden.{i}.affine.bias", a.bias_loc),
        )
        mask = torch.cat([torch.ones(1), sites[f"hidden.{i}"][s].reshape(-1)])
        h = F.relu(F.linear(h, w, b)) * mask.repeat_interleave(layer.axis_block_size)
    out = net.output
    return F.linear(h, site("output.weight", out.weight_loc), site("output.bias", out.bias_loc))


def test_predictive_without_a_guide_samples_the_prior():
    bnnn = _bnnn(weight_prior=dist.Normal(0.0, 0.5), prior_keep_prob=0.6)
    x, _ = _data(n=5)
    pyro.set_rng_seed(0)
    sites = Predictive(bnnn.model, num_samples=400, return_sites=[*bnnn.weight_site_names(),
                       *bnnn.mask_sites(), "_RETURN", "obs"])(x)  # fmt: skip
    for s in (0, 7, 399):  # the outputs are the network run on the sampled sites
        assert_close(sites["_RETURN"][s], _forward_by_hand(bnnn.net, sites, x, s))
    w = sites["hidden.1.affine.weight"]  # (400, 8, 8) draws: the prior, not the posterior
    assert abs(float(w.mean())) < 5 * 0.5 / w.numel() ** 0.5
    assert abs(float(w.std()) - 0.5) < 0.01
    counts = (
        sites["hidden.0"].reshape(400, -1).sum(-1)
    )  # keep counts ~ truncated geometric(0.6) on {0..3}
    expected = torch.tensor([0.4, 0.6 * 0.4, 0.36 * 0.4, 0.6**3])
    observed = torch.stack([(counts == k).float().mean() for k in range(4)])
    assert (observed - expected).abs().max() < 4 * (0.25 / 400) ** 0.5
    # the spread of the prior predictive logits is the prior's, far beyond the posterior's
    posterior = Predictive(bnnn.model, guide=bnnn.guide, num_samples=400)(x)
    assert sites["obs"].shape == posterior["obs"].shape == (400, 5)
    assert float(sites["_RETURN"].std(0).mean()) > 3 * float(
        Predictive(bnnn.model, guide=bnnn.guide, num_samples=400, return_sites=["_RETURN"])(x)[
            "_RETURN"
        ]
        .std(0)
        .mean()
    )


def test_the_model_reads_nothing_from_the_guide():
    bnnn = _bnnn()
    x, _ = _data(n=5)
    pyro.set_rng_seed(3)
    before = Predictive(bnnn.model, num_samples=20, return_sites=["_RETURN"])(x)["_RETURN"]
    with torch.no_grad():
        for p in bnnn.guide.parameters():
            p.add_(torch.randn_like(p) * 10)
    pyro.set_rng_seed(3)
    after = Predictive(bnnn.model, num_samples=20, return_sites=["_RETURN"])(x)["_RETURN"]
    assert torch.equal(before, after)  # the same ops on the same random numbers


def test_a_laplace_weight_prior_is_used_iid_and_the_guide_stays_mean_field():
    bnnn = _bnnn(weight_prior=dist.Laplace(0.0, 0.3))
    x, y = _data()
    site = poutine.trace(bnnn.model).get_trace(x, y).nodes["output.weight"]
    assert isinstance(site["fn"].base_dist, dist.Laplace) and site["fn"].event_shape == (3, 8)
    assert not fast_path_applies(bnnn.model, bnnn.guide)  # generic Pyro ELBO (MC weight KL)
    loss = NestedMeanFieldELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="batch"):
        BNNN(MLP(4, [8], 3, groups=4), weight_prior=dist.Normal(torch.zeros(2), 1.0))
    with pytest.raises(TypeError, match="Pyro distribution"):
        BNNN(MLP(4, [8], 3, groups=4), weight_prior=0.5)


@pytest.mark.parametrize("local_reparam", [True, False])
@pytest.mark.parametrize("particles", [1, 2])
def test_fast_elbo_equals_trace_mean_field_in_value_and_gradient(local_reparam, particles):
    bnnn = _bnnn(kl_scale=0.5, prior_keep_prob=0.8)
    bnnn.likelihood.dataset_size = 40
    x, y = _data()
    assert fast_path_applies(bnnn.model, bnnn.guide)
    params = list(bnnn.parameters())
    pyro.set_rng_seed(11)
    with local_reparameterization() if local_reparam else poutine.block():
        reference = TraceMeanField_ELBO(num_particles=particles).differentiable_loss(
            bnnn.model, bnnn.guide, x, y
        )
    expected = torch.autograd.grad(reference, params)
    pyro.set_rng_seed(11)
    fast = NestedMeanFieldELBO(
        num_particles=particles, local_reparameterization=local_reparam
    ).differentiable_loss(bnnn.model, bnnn.guide, x, y)
    got = torch.autograd.grad(fast, params)
    assert_close(fast, reference, scale=100)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, scale=100)


def test_fast_elbo_on_a_bit_nested_network_uses_the_drawn_weights_in_the_quantizer():
    torch.manual_seed(0)
    bnnn = BNNN(MLP(12, [16], 4, groups=4, bits=4), init_scale=0.1)
    x, y = torch.randn(6, 12), torch.randint(0, 4, (6,))
    assert fast_path_applies(bnnn.model, bnnn.guide)
    params = list(bnnn.parameters())
    pyro.set_rng_seed(4)
    with local_reparameterization():
        reference = TraceMeanField_ELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    expected = torch.autograd.grad(reference, params, allow_unused=True)
    pyro.set_rng_seed(4)
    fast = NestedMeanFieldELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    got = torch.autograd.grad(fast, params, allow_unused=True)
    assert_close(fast, reference, scale=100)
    for g, e in zip(got, expected, strict=True):
        assert (g is None) == (e is None)
        if g is not None:
            assert_close(g, e, scale=100)


def test_fast_elbo_on_a_conv_network_and_its_rao_blackwellized_variant():
    torch.manual_seed(0)
    bnnn = BNNN(ConvNet(4, 1, (4, 8), hidden=8, groups=4), init_scale=0.1)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 4, (6,))
    pyro.set_rng_seed(2)
    with local_reparameterization():
        reference = TraceMeanField_ELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    pyro.set_rng_seed(2)
    assert_close(
        NestedMeanFieldELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y),
        reference,
        scale=100,
    )
    # Rao-Blackwellized: the weight KL given the masks replaced by its expectation
    pyro.set_rng_seed(2)
    fast = NestedMeanFieldELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    pyro.set_rng_seed(2)
    rb = NestedMeanFieldELBO(rao_blackwellized=True).differentiable_loss(
        bnnn.model, bnnn.guide, x, y
    )
    with torch.no_grad():
        masks = {}
        pyro.set_rng_seed(2)
        masks = poutine.trace(bnnn.guide).get_trace(x, y)
        kept = _weight_kl_with(bnnn, {n: masks.nodes[n]["value"] for n in bnnn.vous})
        expected = _weight_kl_with(bnnn, {n: v.keep_marginals() for n, v in bnnn.vous.items()})
    assert_close(rb - fast, expected - kept, scale=100)


def _weight_kl_with(bnnn, orderable_weights):
    total = 0.0
    for _, layer, axis, block_size in bnnn.bayesian_layers():
        per_unit = layer.kl_per_output()
        if axis is not None:
            axis_obj = bnnn.vous[axis].axis
            w = torch.cat([torch.ones(axis_obj.always_on), orderable_weights[axis]])
            per_unit = per_unit * w.repeat_interleave(block_size)
        total = total + per_unit.sum()
    return total


@pytest.mark.parametrize("cls", [AutoNormal, AutoLowRankMultivariateNormal])
def test_autoguide_over_the_weights_with_ordering_units_trains_a_consistent_objective(cls):
    bnnn = _bnnn()
    x, y = _data(n=40)
    guide = bnnn.autoguide(cls)
    elbo, optim = Trace_ELBO(), pyro.optim.Adam({"lr": 0.05})
    assert not fast_path_applies(bnnn.model, guide)
    losses = []
    for step in range(80):
        with poutine.trace(param_only=True) as capture:
            losses.append(elbo.loss_and_grads(bnnn.model, guide, x, y))
        updated = {id(s["value"].unconstrained()) for s in capture.trace.nodes.values()}
        if step == 0:  # every parameter with a gradient is one SVI updates
            grads = [p for p in [*bnnn.parameters(), *guide.parameters()] if p.grad is not None]
            assert grads and all(id(p) in updated for p in grads)
            # the package guide's weight posterior is not part of this objective
            assert all(p.grad is None for p in bnnn.guide.parameters() if p.dim() > 1)
            assert all(v.keep_logits.grad is not None for v in bnnn.vous.values())
        optim([s["value"].unconstrained() for s in capture.trace.nodes.values()])
        pyro.infer.util.zero_grads(
            {s["value"].unconstrained() for s in capture.trace.nodes.values()}
        )
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 10


class _CountingTraceGraph(pyro.infer.TraceGraph_ELBO):
    calls = 0

    def loss_and_grads(self, *args, **kwargs):
        type(self).calls += 1
        return super().loss_and_grads(*args, **kwargs)


def test_fit_takes_any_elbo_instance_and_steps_lr_schedulers_per_epoch():
    bnnn = _bnnn()
    x, y = _data(n=48)
    scheduler = pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.01}, "gamma": 0.1}
    )
    bnnn.fit((x, y), epochs=3, batch_size=16, optimizer=scheduler, loss=_CountingTraceGraph(),
             progress=False, seed=0)  # fmt: skip
    assert _CountingTraceGraph.calls == 3 * 3
    lrs = [g["lr"] for s in scheduler.optim_objs.values() for g in s.optimizer.param_groups]
    assert len(scheduler.optim_objs) == len(list(bnnn.parameters()))
    assert_close(torch.tensor(lrs), torch.full((len(lrs),), 0.01 * 0.1**3, dtype=torch.float64))


def test_normal_likelihood_regression_learns_the_noise_scale():
    torch.manual_seed(0)
    x = torch.randn(400, 3)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])) + 0.3 * torch.randn(400, 1)
    bnnn = BNNN(MLP(3, [16], 1, groups=4), likelihood=likelihoods.Normal(), prior_scale=1.0)
    history = bnnn.fit((x, y), epochs=60, batch_size=100, progress=False, seed=0,
                       optimizer=pyro.optim.Adam({"lr": 0.02}))  # fmt: skip
    assert history.loss[-1] < history.loss[0]
    mean = bnnn.predict(x, num_samples=8).mean(0)
    assert mean.shape == (400, 1)
    assert float(F.mse_loss(mean, y)) < 0.1 * float(y.var())
    assert 0.2 < float(bnnn.likelihood.scale_value.detach()) < 0.6  # the noise is 0.3


@pytest.mark.slow
def test_nuts_over_the_weights_of_a_small_bnnn_with_masks_fixed_to_a_config():
    from pyro.infer import MCMC, NUTS

    torch.manual_seed(0)
    x = torch.randn(40, 2)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    bnnn = BNNN(MLP(2, [4], 2, groups=2), weight_prior=dist.Normal(0.0, 1.0))
    full_mask = {"hidden.0": torch.ones(1)}  # both blocks of the hidden layer kept
    model = poutine.condition(bnnn.model, data=full_mask)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model), num_samples=150, warmup_steps=150, disable_progbar=True)
    mcmc.run(x, y)
    samples = mcmc.get_samples()
    assert set(samples) == set(bnnn.weight_site_names())  # the weights, not the mask
    assert samples["output.weight"].shape == (150, 2, 4)
    probs = Predictive(model, posterior_samples=samples, return_sites=["_RETURN"])(x)["_RETURN"]
    accuracy = float((probs.softmax(-1).mean(0).argmax(-1) == y).float().mean())
    assert accuracy > 0.9
    prior = Predictive(model, num_samples=150, return_sites=["_RETURN"])(x)["_RETURN"]
    assert float((prior.softmax(-1).mean(0).argmax(-1) == y).float().mean()) < 0.8
