"""BNNN model and guide: the ELBO term by term, predictions, Pyro integration."""

import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Normal, kl_divergence

from bayes_nest.infer.bnnn import BNNN
from bayes_nest.models import MLP, ConvNet, ResNet
from bayes_nest.subnet import full, smallest
from bayes_nest.testing import assert_close


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    net = MLP(4, [8, 8], 3, groups=4, always_on=1)
    bnnn = BNNN(net, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # spread the variational parameters so every term matters
        for vou in bnnn.vous.values():
            vou.keep_logits.copy_(torch.randn(vou.keep_logits.shape, generator=g))
        for _, layer, *_ in bnnn.bayesian_layers():
            layer.weight_rho.add_(torch.rand(layer.weight_rho.shape, generator=g) * 3)
    return bnnn


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _keep_count_probs_by_hand(beta):
    beta = beta.double()
    head = torch.cat([torch.ones(1, dtype=beta.dtype), torch.cumprod(beta, 0)])
    tail = torch.cat([1 - beta, torch.ones(1, dtype=beta.dtype)])
    return head * tail


def _weight_kl_by_hand(bnnn):
    """sum_layers sum_k P(b >= k) KL(q(W_k) || p(W_k)), from the parameters only."""
    marg = {n: torch.cumprod(torch.sigmoid(v.keep_logits), 0) for n, v in bnnn.vous.items()}
    return _weight_kl_given(bnnn, {n: torch.cat([torch.ones(1), m]) for n, m in marg.items()})


def _weight_kl_given(bnnn, block_weights):
    """sum_layers sum_k w_k KL(q(W_k) || p(W_k)) with per-block weights (ones: no axis)."""
    total = 0.0
    for path, layer, axis, block_size in bnnn.bayesian_layers():
        prior = Normal(layer.prior_loc, layer.prior_scale)
        sigma_w = torch.log1p(torch.exp(layer.weight_rho))
        sigma_b = torch.log1p(torch.exp(layer.bias_rho))
        per_unit = kl_divergence(Normal(layer.weight_loc, sigma_w), prior).sum(1)
        per_unit = per_unit + kl_divergence(Normal(layer.bias_loc, sigma_b), prior)
        if axis is None:
            weights = torch.ones(len(per_unit))
        else:
            weights = block_weights[axis].repeat_interleave(block_size)
        assert path.startswith(("hidden", "output"))
        total = total + (weights * per_unit).sum()
    return total


def _traces(bnnn, x, y, seed):
    pyro.set_rng_seed(seed)
    guide_tr = poutine.trace(bnnn.guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(bnnn.model, trace=guide_tr)).get_trace(x, y)
    return guide_tr, model_tr


def _guide_block_masks(bnnn, guide_tr):
    return {n: torch.cat([torch.ones(1), guide_tr.nodes[n]["value"]]) for n in bnnn.vous}


def test_mean_field_elbo_equals_its_terms_computed_by_hand():
    bnnn = _tiny(kl_scale=0.7, prior_keep_prob=0.8)
    x, y = _data()
    bnnn.likelihood.dataset_size = 30  # a mini-batch of 12 out of 30 examples
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    guide_tr, model_tr = _traces(bnnn, x, y, seed=3)  # the same noise
    logits = model_tr.nodes["_RETURN"]["value"]
    loglik = F.log_softmax(logits, -1).gather(1, y[:, None]).sum() * 30 / 12
    mask_kl = 0.0
    for name, vou in bnnn.vous.items():
        q = _keep_count_probs_by_hand(torch.sigmoid(vou.keep_logits))
        p = _keep_count_probs_by_hand(torch.full_like(vou.keep_logits, 0.8))
        mask_kl = mask_kl + (q * (q / p).log()).sum()
        assert name in guide_tr.nodes and name in model_tr.nodes
    # given the masks, kept blocks pay their weights' KL, dropped ones revert to the prior
    weight_kl = _weight_kl_given(bnnn, _guide_block_masks(bnnn, guide_tr))
    expected = -loglik + mask_kl + 0.7 * weight_kl
    assert_close(loss.double(), expected.double(), dtype=torch.float32, scale=100)
    grads = torch.autograd.grad(loss, list(bnnn.parameters()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_trace_elbo_uses_relaxed_mask_densities_and_weight_densities():
    bnnn = _tiny(seed=1)
    x, y = _data(seed=1)
    bnnn.likelihood.dataset_size = 12
    pyro.set_rng_seed(5)
    loss = Trace_ELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    guide_tr, model_tr = _traces(bnnn, x, y, seed=5)
    logits = model_tr.nodes["_RETURN"]["value"]
    expected = -F.log_softmax(logits, -1).gather(1, y[:, None]).sum()
    blocks = _guide_block_masks(bnnn, guide_tr)
    for name in bnnn.vous:
        value = guide_tr.nodes[name]["value"]
        log_q = guide_tr.nodes[name]["fn"].log_prob(value)
        log_p = model_tr.nodes[name]["fn"].log_prob(value)
        expected = expected + log_q - log_p
    for path, layer, axis, block_size in bnnn.bayesian_layers():
        keep = torch.ones(layer.weight_loc.shape[0])
        if axis is not None:
            keep = blocks[axis].repeat_interleave(block_size)
        for kind, rho in (("weight", layer.weight_rho), ("bias", layer.bias_rho)):
            loc = getattr(layer, f"{kind}_loc")
            k = keep.view(-1, *([1] * (loc.dim() - 1)))
            value = guide_tr.nodes[f"{path}.{kind}"]["value"]
            q_loc = torch.where(k > 0, loc, layer.prior_loc)
            q_scale = torch.where(k > 0, F.softplus(rho), layer.prior_scale)
            log_q = Normal(q_loc, q_scale).log_prob(value).sum()
            log_p = Normal(layer.prior_loc, layer.prior_scale).log_prob(value).sum()
            expected = expected + log_q - log_p
    assert_close(loss.double(), expected.double(), dtype=torch.float32, scale=100)


def test_model_runs_the_network_under_the_guides_masks_and_weights():
    bnnn = _tiny(seed=2)
    x, y = _data(seed=2)
    net = bnnn.net
    guide_tr, model_tr = _traces(bnnn, x, y, seed=0)
    h = x
    for i, layer in enumerate(net.hidden):
        w, b = (guide_tr.nodes[f"hidden.{i}.affine.{k}"]["value"] for k in ("weight", "bias"))
        mask = torch.cat([torch.ones(1), guide_tr.nodes[f"hidden.{i}"]["value"]])
        h = F.relu(F.linear(h, w, b)) * mask.repeat_interleave(layer.axis_block_size)
    w, b = (guide_tr.nodes[f"output.{k}"]["value"] for k in ("weight", "bias"))
    assert_close(model_tr.nodes["_RETURN"]["value"], F.linear(h, w, b))
    assert all(layer.mask is None for layer in net.hidden)  # masks restored
    assert all(layer.pinned is None for _, layer, *_ in bnnn.bayesian_layers())
    obs = model_tr.nodes["obs"]
    assert obs["is_observed"] and obs["scale"] == 1.0


def test_predictions_are_probability_vectors():
    bnnn = _tiny()
    x, _ = _data(n=9)
    for config in (None, full(bnnn.net), smallest(bnnn.net), {"hidden.0": 1}):
        probs = bnnn.predict(x, config=config, num_samples=4)
        assert probs.shape == (4, 9, 3)
        assert (probs >= 0).all()
        assert_close(probs.sum(-1), torch.ones(4, 9))
    assert bnnn.net.training  # training mode restored


def test_predict_truncation_and_marginal_scaling_by_hand():
    bnnn = _tiny(seed=4)
    x, _ = _data(n=5)
    net = bnnn.net
    config = {"hidden.0": 2, "hidden.1": 1}
    probs = bnnn.predict(x, config=config, num_samples=1, sample_weights=False)
    scaled = bnnn.predict(
        x, config=config, num_samples=1, sample_weights=False, scale_by_keep_marginals=True
    )
    marg = bnnn.keep_marginals()
    h, h_scaled = x, x
    for i, layer in enumerate(net.hidden):
        a, n = layer.affine, config[f"hidden.{i}"]
        units = n * layer.axis_block_size
        h = F.relu(F.linear(h, a.weight_loc[:units, : h.shape[1]], a.bias_loc[:units]))
        scale = marg[f"hidden.{i}"][:n].repeat_interleave(layer.axis_block_size)
        z = F.linear(h_scaled, a.weight_loc[:units, : h_scaled.shape[1]], a.bias_loc[:units])
        h_scaled = F.relu(z) * scale
    out = net.output
    expected = torch.softmax(F.linear(h, out.weight_loc[:, : h.shape[1]], out.bias_loc), -1)
    assert_close(probs[0], expected)
    z = F.linear(h_scaled, out.weight_loc[:, : h_scaled.shape[1]], out.bias_loc)
    assert_close(scaled[0], torch.softmax(z, -1))
    assert not torch.allclose(probs, scaled)


def test_predict_validation():
    bnnn = _tiny()
    x, _ = _data()
    with pytest.raises(ValueError, match="unknown axis"):
        bnnn.predict(x, config={"nope": 1})
    with pytest.raises(ValueError, match="out of range"):
        bnnn.predict(x, config={"hidden.0": 0})
    with pytest.raises(ValueError, match="num_samples"):
        bnnn.predict(x, num_samples=0)
    with pytest.raises(TypeError, match="Tensor"):
        bnnn.predict(x.numpy())


def test_constructor_validation():
    with pytest.raises(ValueError, match="no axis with orderable blocks"):
        BNNN(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="kl_scale"):
        BNNN(MLP(4, [8], 3, groups=2), kl_scale=-1.0)
    with pytest.raises(ValueError, match="prior_keep_prob"):
        BNNN(MLP(4, [8], 3, groups=2), prior_keep_prob=1.5)
    with pytest.raises(ValueError, match="unknown axis"):
        BNNN(MLP(4, [8], 3, groups=2), prior_keep_prob={"hidden.7": 0.9})
    with pytest.raises(TypeError, match="nn.Module"):
        BNNN("net")


def test_keep_summaries_are_consistent():
    bnnn = _tiny()
    for name, vou in bnnn.vous.items():
        q = bnnn.keep_count_probs()[name]
        assert_close(q.sum(), torch.tensor(1.0))
        expected = vou.axis.always_on + (q * torch.arange(len(q))).sum()
        assert_close(bnnn.expected_keep_counts()[name], float(expected), dtype=torch.float32)
        assert_close(bnnn.keep_probs()[name], torch.sigmoid(vou.keep_logits))
    assert_close(bnnn.weight_kl(), _weight_kl_by_hand(bnnn).float())


def test_predictive_returns_mask_sites_and_observations():
    bnnn = _tiny()
    x, _ = _data(n=7)
    out = Predictive(bnnn.model, guide=bnnn.guide, num_samples=6, return_sites=["hidden.0", "obs"])(
        x
    )
    assert out["obs"].shape == (6, 7)
    assert out["obs"].min() >= 0 and out["obs"].max() < 3
    masks = out["hidden.0"].reshape(6, -1)
    assert masks.shape == (6, 3)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}  # straight-through: hard masks


def test_svi_in_global_parameter_mode_trains():
    bnnn = _tiny()
    x, y = _data(n=30)
    svi = pyro.infer.SVI(
        bnnn.model, bnnn.guide, pyro.optim.Adam({"lr": 0.05}), TraceMeanField_ELBO()
    )
    before = bnnn.net.output.weight_loc.detach().clone()
    losses = [svi.step(x, y) for _ in range(30)]
    names = set(pyro.get_param_store().keys())
    assert "bnnn.guide.masks.hidden.0.keep_logits" in names
    assert "bnnn.guide.weights.output.weight_rho" in names
    assert not torch.equal(before, bnnn.net.output.weight_loc)  # SVI updates our own tensors
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_module_local_params_elbo_module_sees_all_parameters():
    pyro.settings.set(module_local_params=True)
    bnnn = _tiny()
    x, y = _data(n=30)
    elbo = TraceMeanField_ELBO()(bnnn.model, bnnn.guide)
    assert {id(p) for p in elbo.parameters()} == {id(p) for p in bnnn.parameters()}
    opt = torch.optim.Adam(elbo.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = elbo(x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert len(pyro.get_param_store().keys()) == 0
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_a_new_bnnn_drops_stale_param_store_entries():
    first = _tiny()
    svi = pyro.infer.SVI(first.model, first.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(*_data())
    second = _tiny(seed=3)
    store = pyro.get_param_store()
    assert not any(k.startswith("bnnn.") for k in store.keys())
    svi = pyro.infer.SVI(second.model, second.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(*_data())
    assert store["bnnn.guide.weights.output.weight_loc"] is second.net.output.weight_loc
    with pytest.raises(RuntimeError, match="distinct names"):  # the older one would train ours
        svi = pyro.infer.SVI(first.model, first.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        svi.step(*_data())


def test_posterior_samples_for_arviz():
    bnnn = _tiny()
    x, y = _data(n=5)
    draws = bnnn.posterior_samples(10, x)
    assert draws["keep_probs/hidden.0"].shape == (10, 3)
    assert draws["keep_count/hidden.1"].shape == (10,)
    assert set(np.unique(draws["keep_count/hidden.1"])) <= {1, 2, 3, 4}
    assert draws["mask/hidden.0"].shape == (10, 3)
    # exact: sums of zeros and ones
    np.testing.assert_array_equal(
        draws["mask/hidden.0"].sum(1) + 1, draws["keep_count/hidden.0"].astype(np.float32)
    )
    assert draws["weight/output"].shape == (10, 3, 8)
    probs = draws.pop("probs")
    assert probs.shape == (10, 5, 3)
    assert_close(probs.sum(-1), np.ones(probs.shape[:-1]), dtype=torch.float32)
    pytest.importorskip("arviz")
    from bayes_nest.analysis import to_arviz

    data = to_arviz(draws, posterior_predictive={"probs": probs}, observed_data={"labels": y})
    assert "keep_probs.hidden.0" in data.posterior
    with pytest.raises(ValueError, match="no Bayesian layer"):
        bnnn.posterior_samples(2, weights=["nope"])


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: ConvNet(4, 1, (8, 16), hidden=16, groups=4), (6, 1, 8, 8)),
        (lambda: ResNet(4, 1, (8, 16), (1, 1), groups=4), (6, 1, 8, 8)),
        (lambda: MLP(12, [16], 4, groups=4, bits=4), (6, 12)),
    ],
)
def test_conv_residual_and_bit_nested_networks(make, shape):
    torch.manual_seed(0)
    net = make()
    bnnn = BNNN(net)
    x, y = torch.randn(shape), torch.randint(0, 4, (shape[0],))
    # every conv/linear layer became Bayesian, width layers' KL is weighted by their axis
    assert not [m for m in net.modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d)]
    layers = bnnn.bayesian_layers()
    assert any(axis is not None for _, _, axis, _ in layers)
    assert all(name in bnnn.vous for _, _, name, _ in layers if name is not None)
    bnnn.likelihood.dataset_size = 6
    loss = TraceMeanField_ELBO().differentiable_loss(bnnn.model, bnnn.guide, x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(v.keep_logits.grad is not None for v in bnnn.vous.values())
    probs = bnnn.predict(x, config=smallest(bnnn.net), num_samples=2)
    assert_close(probs.sum(-1), torch.ones(2, 6))
