"""Ordered-dropout sampler: distribution, determinism, masks, sandwich rule, Pyro sites."""

import pyro
import pytest
import torch
from scipy import stats

from bayes_nest.distributions import KeepCount
from bayes_nest.infer import OrderedDropout, conditional_keep_probs, keep_count_probs
from bayes_nest.models import MLP
from bayes_nest.nn import get_masks
from bayes_nest.testing import assert_close


def _net(groups=8, always_on=1, hidden=(32, 48)):
    torch.manual_seed(0)
    return MLP(10, list(hidden), 3, groups=groups, always_on=always_on)


def _chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    n = counts.sum().item()
    p = probs.double()
    expected = (p / p.sum() * n).numpy()
    return stats.chisquare(counts.double().numpy(), expected).pvalue


@pytest.mark.parametrize(
    "distribution, keep_prob, oracle",
    [
        ("geometric", 0.8, lambda d: KeepCount.geometric(0.8, d).probs),
        ("geometric", 0.95, lambda d: KeepCount.geometric(0.95, d).probs),
        ("uniform", 0.9, lambda d: KeepCount.uniform(d).probs),
    ],
)
def test_sampled_counts_match_keep_count_probs(distribution, keep_prob, oracle):
    net = _net(groups=8, always_on=2)
    sampler = OrderedDropout(net, keep_prob, distribution, seed=123)
    draws = 20000
    counts = {name: torch.zeros(7, dtype=torch.long) for name in sampler.axes}
    for _ in range(draws):
        for name, n in sampler.sample().items():
            counts[name][n - 2] += 1  # always_on=2, D=6
    expected = oracle(6)
    for name in sampler.axes:
        assert_close(sampler.probs[name], expected, dtype=torch.float32)
        assert _chi_square_pvalue(counts[name], expected) > 1e-3
    # The two axes are drawn independently: a 2-D contingency test on joint counts.
    sampler = OrderedDropout(net, keep_prob, distribution, seed=7)
    table = torch.zeros(7, 7)
    for _ in range(5000):
        a, b = sampler.sample().values()
        table[a - 2, b - 2] += 1
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-3


def test_geometric_and_uniform_closed_forms():
    pi, d = 0.7, 5
    q = keep_count_probs(conditional_keep_probs(d, "geometric", pi))
    closed = [pi**b * (1 - pi) for b in range(d)] + [pi**d]
    assert_close(q, closed, dtype=torch.float32)
    u = keep_count_probs(conditional_keep_probs(d, "uniform"))
    assert_close(u, torch.full((d + 1,), 1 / (d + 1)))


def test_per_axis_keep_prob_by_name_and_kind():
    net = _net()
    sampler = OrderedDropout(net, {"width": 0.6, "hidden.1": 0.9})
    assert_close(sampler.keep_probs["hidden.0"], torch.full((7,), 0.6))
    assert_close(sampler.keep_probs["hidden.1"], torch.full((7,), 0.9))
    # A kind the module lacks is ignored (per-kind settings fit any model).
    assert set(OrderedDropout(net, {"width": 0.6, "bits": 0.5}).probs) == {"hidden.0", "hidden.1"}
    defaulted = OrderedDropout(net, {"hidden.1": 0.6, "default": 0.7})
    assert_close(defaulted.keep_probs["hidden.0"], torch.full((7,), 0.7))
    mixed = OrderedDropout(net, 0.9, {"hidden.0": "uniform", "hidden.1": "geometric"})
    assert_close(mixed.probs["hidden.0"], torch.full((8,), 1 / 8))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"keep_prob": 1.0}, ValueError),
        ({"keep_prob": 0.0}, ValueError),
        ({"keep_prob": "0.9"}, TypeError),
        ({"keep_prob": {"nope": 0.9}}, ValueError),
        ({"keep_prob": {"hidden.0": 0.9}}, ValueError),  # no value for hidden.1
        ({"distribution": "poisson"}, ValueError),
        ({"sandwich": "middle"}, ValueError),
        ({"seed": 1.5}, TypeError),
    ],
)
def test_bad_arguments_raise(kwargs, error):
    with pytest.raises(error):
        OrderedDropout(_net(), **kwargs)


def test_module_without_orderable_axes_raises():
    with pytest.raises(ValueError, match="orderable"):
        OrderedDropout(MLP(4, 8, 2, groups=2, always_on=2))
    with pytest.raises(TypeError):
        OrderedDropout("not a module")


def test_setting_parameters_recomputes_cache_and_bad_value_keeps_old():
    sampler = OrderedDropout(_net(), 0.9, seed=0)
    sampler.keep_prob = 0.5
    assert_close(sampler.probs["hidden.0"][0], 0.5)
    with pytest.raises(ValueError):
        sampler.keep_prob = 2.0
    assert sampler.keep_prob == 0.5  # the stored setting itself, unchanged
    assert_close(sampler.probs["hidden.0"][0], 0.5)
    sampler.distribution = "uniform"
    assert_close(sampler.probs["hidden.1"], torch.full((8,), 1 / 8))


def test_seeded_draws_and_state_round_trip():
    net = _net()
    a, b = OrderedDropout(net, seed=5), OrderedDropout(net, seed=5)
    assert [a.sample() for _ in range(50)] == [b.sample() for _ in range(50)]
    state = a.state_dict()
    expected = [a.sample() for _ in range(20)]
    c = OrderedDropout(net, 0.5, "uniform", seed=99)
    c.load_state_dict(state)
    assert c.keep_prob == 0.9 and c.distribution == "geometric"
    assert [c.sample() for _ in range(20)] == expected
    torch.manual_seed(3)
    d = OrderedDropout(net)
    torch.manual_seed(3)
    e = OrderedDropout(net)
    assert [d.sample() for _ in range(20)] == [e.sample() for _ in range(20)]


def test_call_sets_int_masks_and_the_network_slices():
    net = _net()
    sampler = OrderedDropout(net, 0.5, seed=1)
    counts = sampler()
    assert get_masks(net) == counts
    assert all(isinstance(v, int) for v in counts.values())
    # The first hidden layer's output is narrowed to the kept units.
    h = net.hidden[0](torch.randn(2, 10))
    assert h.shape == (2, counts["hidden.0"] * 4)
    sampler.clear()
    assert get_masks(net) == {"hidden.0": None, "hidden.1": None}


def test_sandwich_configs():
    net = _net()
    assert len(OrderedDropout(net).step_configs()) == 1
    full, smallest = {"hidden.0": 8, "hidden.1": 8}, {"hidden.0": 1, "hidden.1": 1}
    both = OrderedDropout(net, sandwich="both").step_configs()
    assert len(both) == 3 and both[0] == full and both[2] == smallest
    assert OrderedDropout(net, sandwich="full").step_configs()[0] == full
    assert OrderedDropout(net, sandwich="smallest").step_configs()[-1] == smallest
    sampler = OrderedDropout(net, sandwich="both", seed=0)
    seen = [dict(get_masks(net)) for _ in sampler.iter_steps()]
    assert seen[0] == full and seen[-1] == smallest


def test_pyro_sites_named_after_axes():
    net = _net()
    sampler = OrderedDropout(net, 0.8, seed=0)
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(sampler.sample_sites).get_trace()
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert sites == ["hidden.0", "hidden.1"]
    masks = get_masks(net)
    for name in sites:
        value = trace.nodes[name]["value"]
        assert value.shape == (7,)  # orderable blocks
        count = int(value.sum()) + 1
        assert masks[name] == count
        assert torch.equal(value, (torch.arange(7) < count - 1).to(value.dtype))  # a prefix
    # The sites' prior is the sampler's keep-count law.
    prior = trace.nodes["hidden.0"]["fn"]
    assert_close(prior.index_distribution.probs, sampler.probs["hidden.0"])
    tensors = sampler.sample_sites(slice_hard=False)
    assert tensors["hidden.0"].shape == (8,)


def test_coupled_axes_keep_their_marginals_and_move_together():
    torch.manual_seed(0)
    net = MLP(10, [32, 48], 3, groups=8, always_on=1, bits=6)  # two width axes + one bits axis
    sampler = OrderedDropout(net, {"width": 0.8, "bits": 0.7}, coupling="kind", seed=3)
    draws = [sampler.sample() for _ in range(20000)]
    # Same kind and same law: identical counts at every draw.
    assert all(d["hidden.0"] == d["hidden.1"] for d in draws)
    # Each axis keeps its own law exactly (chi-square against KeepCount).
    for name, pi, orderable in (("hidden.1", 0.8, 7), ("bits", 0.7, 5)):
        counts = torch.bincount(torch.tensor([d[name] - 1 for d in draws]), minlength=orderable + 1)
        assert _chi_square_pvalue(counts, KeepCount.geometric(pi, orderable).probs) > 1e-3
    # Different kinds stay independent.
    table = torch.zeros(8, 6)
    for d in draws[:5000]:
        table[d["hidden.0"] - 1, d["bits"] - 1] += 1
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-3
    # coupling="all": one uniform for every axis, so counts are comonotone across kinds.
    together = OrderedDropout(net, {"width": 0.8, "bits": 0.7}, coupling="all", seed=3)
    pairs = sorted({(d["hidden.0"], d["bits"]) for d in (together.sample() for _ in range(3000))})
    bits_in_order = [b for _, b in pairs]
    assert bits_in_order == sorted(bits_in_order)
    with pytest.raises(ValueError, match="coupling"):
        OrderedDropout(net, coupling="layer")
