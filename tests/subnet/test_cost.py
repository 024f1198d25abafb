"""Cost models: analytic MACs/params against thop and torch on the exported model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayes_nest.models import MLP
from bayes_nest.nn import NestedLinear, SlicedLinear
from bayes_nest.nn.bayesian import to_bayesian_
from bayes_nest.subnet import CostModel, cost, costs, export, layer_costs
from tests.subnet.subnet_testing import model_zoo, random_configs

thop = pytest.importorskip("thop")
ZOO = model_zoo()


def _thop_counts(model: nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
    """thop's MACs of convolutions and linear layers only, and its parameter count."""
    zero = thop.vision.basic_hooks.zero_ops
    not_counted = {
        nn.BatchNorm1d: zero,
        nn.BatchNorm2d: zero,
        nn.MaxPool2d: zero,
        nn.AvgPool2d: zero,
        nn.AdaptiveAvgPool2d: zero,
    }
    macs, params = thop.profile(
        model, inputs=(torch.zeros(1, *shape),), custom_ops=not_counted, verbose=False
    )
    return macs, params


@pytest.mark.parametrize("name", sorted(ZOO))
def test_macs_and_params_match_thop_on_exported_model(name):
    model, shape = ZOO[name]
    for config in random_configs(model, 2, seed=1):
        exported = export(model, config, input_shape=shape)
        thop_macs, thop_params = _thop_counts(exported, shape)
        ours = costs(model, config, shape)
        assert ours["macs"] == thop_macs, config
        assert ours["params"] == thop_params, config
        assert ours["params"] == sum(p.numel() for p in exported.parameters()), config


def test_mlp_closed_form():
    net = MLP(10, [16, 32], 3, groups=4)
    config = {"hidden.0": 2, "hidden.1": 3}  # widths 8 and 24
    assert cost(net, config, "macs", (10,)) == 10 * 8 + 8 * 24 + 24 * 3
    assert cost(net, config, "params", (10,)) == (10 * 8 + 8) + (8 * 24 + 24) + (24 * 3 + 3)
    assert cost(net, config, "weight_bits", (10,)) == 32 * cost(net, config, "params", (10,))


def test_bits_metrics_closed_form():
    net = MLP(10, [16], 3, groups=4, bits=6)
    config = {"hidden.0": 3, "bits": 4}  # 12 hidden units; only the hidden layer is quantized
    w0, b0, w1, b1 = 10 * 12, 12, 12 * 3, 3
    assert cost(net, config, "weight_bits", (10,)) == 4 * w0 + 32 * (b0 + w1 + b1)
    macs0, macs1 = 10 * 12, 12 * 3
    assert cost(net, config, "bitops", (10,)) == (macs0 * 4 + macs1 * 32) * 32
    assert cost(net, config, "bitops", (10,), activation_bits=8) == (macs0 * 4 + macs1 * 32) * 8
    # bits do not change MACs or the parameter count
    assert cost(net, config, "macs", (10,)) == cost(net, {"hidden.0": 3}, "macs", (10,))


def test_costs_shrink_with_every_axis():
    model, shape = ZOO["resnet"]
    for metric in ("macs", "params"):
        full_cost = cost(model, {}, metric, shape)
        for name, count in random_configs(model, 0)[1].items():
            assert cost(model, {name: count}, metric, shape) <= full_cost


def test_bayesian_layers_cost_as_their_mean_network():
    net = MLP(10, [16, 16], 3, groups=4)
    config = {"hidden.0": 1, "hidden.1": 3}
    before = costs(net, config, (10,))
    to_bayesian_(net)
    assert costs(net, config, (10,)) == before


def test_empty_width_layer_costs_nothing():
    net = nn.Sequential(NestedLinear(6, 8, groups=4, always_on=0), SlicedLinear(8, 2))
    # a fully dropped layer: the head sees no inputs (no MACs) and keeps only its bias
    assert cost(net, {"0": 0}, "macs", (6,)) == 0.0
    assert cost(net, {"0": 0}, "params", (6,)) == 2


def test_cost_model_is_cached_and_matches_cost():
    model, shape = ZOO["convnet"]
    model_cost = CostModel(model, "macs", shape)
    config = random_configs(model, 1, seed=3)[-1]
    assert model_cost(config) == cost(model, config, "macs", shape)
    assert model_cost(dict(config)) == model_cost(config)
    assert len(model_cost._cache) == 1


def test_layer_costs_report_units():
    net = MLP(10, [16], 3, groups=4)
    items = layer_costs(net, {"hidden.0": 2}, (10,))
    linear = [c for c in items if c.op == "linear"]
    assert [(c.in_units, c.out_units) for c in linear] == [(10, 8), (8, 3)]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"metric": "flops"}, ValueError),
        ({"input_shape": (9,)}, ValueError),
        ({"input_shape": (0, 3)}, ValueError),
        ({"input_shape": "abc"}, ValueError),
        ({"activation_bits": 0}, ValueError),
        ({"activation_bits": 2.5}, TypeError),
    ],
)
def test_validation_errors(kwargs, error):
    net = MLP(10, [16], 3, groups=4)
    args = {"metric": "macs", "input_shape": (10,)} | kwargs
    with pytest.raises(error):
        cost(net, {}, args.pop("metric"), args.pop("input_shape"), **args)


def test_config_errors_name_the_axis():
    net = MLP(10, [16], 3, groups=4)
    with pytest.raises(ValueError, match="hidden.7"):
        cost(net, {"hidden.7": 1}, "macs", (10,))
    with pytest.raises(ValueError, match="out of range"):
        cost(net, {"hidden.0": 9}, "macs", (10,))
    with pytest.raises(TypeError):
        CostModel(object(), "macs", (10,))
