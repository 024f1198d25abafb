"""Input shapes and calibration data: checked, inferred where the layers fix them, never
silently truncated or skipped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayes_nest.models import MLP, ConvNet
from bayes_nest.nn import NestedConv2d, NestedLinear, SlicedLinear
from bayes_nest.search import greedy
from bayes_nest.subnet import (
    CostModel,
    LatencyTable,
    cost,
    costs,
    export,
    layer_costs,
    measure_latency,
    recalibrate_batchnorm,
    use,
)
from bayes_nest.testing import assert_close
from tests.subnet.subnet_testing import randomize_norms


def _mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(16, [8], 4, groups=4)  # MACs: 16·8 + 8·4 = 160


def test_mlp_costs_with_an_inferred_input_shape():
    net = _mlp()
    assert cost(net, {}, "macs") == 16 * 8 + 8 * 4
    assert cost(net, {"hidden.0": 1}, "params") == (16 * 2 + 2) + (2 * 4 + 4)
    assert costs(net, {}) == costs(net, {}, (16,))
    assert [c.in_units for c in layer_costs(net, {}) if c.op == "linear"] == [16, 8]
    assert CostModel(net, "macs").input_shape == (16,)
    front = greedy(net, lambda c: float(c["hidden.0"]), progress=False)  # cost="macs"
    assert front.best(16 * 8 + 8 * 4).config == {"hidden.0": 4}


@pytest.mark.parametrize("shape", [(10,), (17,), (4, 5)])
def test_costs_refuse_an_input_shape_the_mlp_does_not_take(shape):
    net = _mlp()
    for call in (
        lambda: cost(net, {}, "macs", input_shape=shape),
        lambda: costs(net, {}, shape),
        lambda: layer_costs(net, {}, shape),
        lambda: CostModel(net, "macs", shape),
        lambda: greedy(net, lambda c: 0.0, input_shape=shape, progress=False),
    ):
        with pytest.raises(ValueError, match=r"\(N, 16\)"):
            call()


def test_user_networks_of_nested_layers_refuse_short_inputs():
    """Nested layers take narrowed inputs, so only the full network tells a wrong shape."""
    linear = nn.Sequential(NestedLinear(6, 8, groups=4), SlicedLinear(8, 2))
    assert cost(linear, {}, "macs") == 6 * 8 + 8 * 2  # inferred from the first layer
    with pytest.raises(ValueError, match=r"'0.affine' takes 6 input features/channels but gets 5"):
        cost(linear, {}, "macs", input_shape=(5,))
    with pytest.raises(ValueError, match=r"'0.affine' takes 6 .* gets 5"):
        export(linear, {}, input_shape=(5,))
    with pytest.raises(ValueError, match=r"'0.affine' takes 6 .* gets 5"):
        measure_latency(linear, (5,))
    with pytest.raises(ValueError, match=r"'0.affine' takes 6 .* gets 5"):
        LatencyTable.measure(linear, (5,))
    conv = nn.Sequential(NestedConv2d(3, 4, 3, groups=2, padding=1))
    with pytest.raises(ValueError, match=r"'0.affine' takes 3 .* gets 2"):
        cost(conv, {}, "macs", input_shape=(2, 5, 5))
    with pytest.raises(ValueError, match="input_shape"):
        cost(conv, {}, "macs")  # an image size is not fixed by the layers


def test_export_infers_the_mlp_input_shape():
    net = _mlp()
    config = {"hidden.0": 2}
    exported = export(net, config)
    linears = [m for m in exported.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 4), (4, 4)]
    x = torch.randn(3, 16)
    with torch.no_grad(), use(net, config):
        expected = net(x)
    assert_close(exported(x), expected)
    explicit = export(net, config, input_shape=(16,))
    assert torch.equal(explicit(x), exported(x))  # the same layers: the same operations


def test_export_refuses_wrong_shapes_and_uninferable_ones():
    net = _mlp()
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        export(net, {}, input_shape=(10,))
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        export(net, {}, example_input=torch.randn(2, 10))
    with pytest.raises(ValueError, match="input_shape"):
        export(ConvNet(3, 1, (4,), groups=2), {})
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        export(ConvNet(3, 1, (4,), groups=2), {}, input_shape=(3, 8, 8))


# ----------------------------------------------------------------------------- calibration data


def _bn_mlp() -> MLP:
    torch.manual_seed(1)
    return randomize_norms(MLP(6, [8], 3, groups=4, norm="batch")).eval()


def _bad_data():
    good = torch.randn(8, 6)
    nan, inf = good.clone(), good.clone()
    nan[3, 2] = float("nan")
    inf[0, 0] = float("-inf")
    return {
        "nan tensor": (nan, "calibration batch 0 holds 1 NaN or infinite"),
        "inf pair": ((inf, torch.zeros(8)), "calibration batch 0 holds 1 NaN or infinite"),
        "nan second batch": ([good, nan[:5]], "calibration batch 1 holds 1 NaN"),
        "empty tensor": (torch.empty(0, 6), "calibration batch 0 holds no examples"),
        "empty pair": ((torch.empty(0, 6), torch.empty(0)), "batch 0 holds no examples"),
        "empty second batch": ([good, torch.empty(0, 6)], "calibration batch 1 holds no examples"),
        "no batches": ([], "no batches"),
    }


@pytest.mark.parametrize("case", sorted(_bad_data()))
def test_bad_calibration_data_is_refused_and_changes_nothing(case):
    data, match = _bad_data()[case]
    net = _bn_mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        export(net, {"hidden.0": 2}, input_shape=(6,), calibration_data=data)
    with pytest.raises(ValueError, match=match):
        recalibrate_batchnorm(net, data, {"hidden.0": 2})
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # statistics restored


def test_example_input_must_hold_finite_examples():
    net = _mlp()
    with pytest.raises(ValueError, match="example_input holds no examples"):
        export(net, {}, example_input=torch.empty(0, 16))
    with pytest.raises(ValueError, match="example_input holds 16 NaN"):
        export(net, {}, example_input=torch.full((1, 16), float("nan")))
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        export(net, {}, example_input=[[0.0] * 16])


def test_a_list_of_two_batches_is_two_batches_not_an_x_y_pair():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    first, second = torch.randn(5, 3), torch.randn(5, 3) + 4.0
    recalibrate_batchnorm(net, [first, second])
    with torch.no_grad():
        pre = net[0](torch.cat([first, second]))
    assert_close(net[1].running_mean, pre.mean(0))
    assert_close(net[1].running_var, pre.var(0))
