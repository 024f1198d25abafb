"""Property tests of sub-network configs: random valid configs are accepted and compute what the
equivalent hard tensor masks compute; random invalid configs (unknown axis, count out of range,
wrong type) are rejected with ValueError/TypeError naming the axis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bayes_nest.models import MLP, ConvNet, ResNet, ResNeXt
from bayes_nest.nn import axes, get_masks, masked
from bayes_nest.subnet import full, smallest, use, validate_config
from bayes_nest.testing import assert_close
from tests.property.property_testing import examples


def _build():
    torch.manual_seed(0)
    nets = {
        "mlp": (MLP(12, [16, 8], 3, groups=4, always_on=0), (12,)),
        "mlp-bits": (MLP(12, [16, 8], 3, groups=4, bits=4), (12,)),
        "convnet-bits": (ConvNet(3, 1, (8, 8), hidden=8, groups=4, bits=3), (1, 8, 8)),
        "resnet": (ResNet(3, 1, (8, 16), (2, 2), groups=4), (1, 8, 8)),
        "resnext": (
            ResNeXt(3, 1, (8, 16), (1, 2), cardinality=3, path_width=2, groups=4),
            (1, 8, 8),
        ),
    }
    inputs = {}
    for name, (net, shape) in nets.items():
        net.eval()
        inputs[name] = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    return {name: net for name, (net, _) in nets.items()}, inputs


NETS, INPUTS = _build()


@st.composite
def valid_configs(draw):
    name = draw(st.sampled_from(sorted(NETS)))
    net = NETS[name]
    config = {}
    for axis_name, axis in axes(net).items():
        if draw(st.booleans()) or axis.kind == "bits":
            config[axis_name] = draw(st.integers(axis.always_on, axis.size))
    return name, config


def _hard_mask(size: int, count: int) -> torch.Tensor:
    return torch.cat([torch.ones(count), torch.zeros(size - count)])


@examples(60)
@given(valid_configs(), st.sampled_from(["int", "numpy", "float", "tensor"]))
def test_valid_configs_compute_what_the_equivalent_tensor_masks_compute(case, kind):
    name, config = case
    net, x = NETS[name], INPUTS[name]
    known = axes(net)
    convert = {
        "int": int,
        "numpy": np.int64,
        "float": float,  # integer-valued floats are accepted, never rounded
        "tensor": lambda c: torch.tensor(c),
    }[kind]
    given_config = {a: convert(c) for a, c in config.items()}
    checked = validate_config(net, given_config)
    assert set(checked) == set(known)
    assert all(type(c) is int for c in checked.values())
    assert checked == {a: config.get(a, axis.size) for a, axis in known.items()}
    before = get_masks(net)
    with torch.no_grad():
        with use(net, given_config):
            sliced = net(x)
        tensor_masks = {a: _hard_mask(known[a].size, c) for a, c in checked.items()}
        with masked(net, tensor_masks):
            scaled = net(x)
    assert get_masks(net) == before  # restored on exit
    assert sliced.shape == scaled.shape == (x.shape[0], 3)
    # sliced weights vs masked products: sums over many terms in another order
    assert_close(sliced, scaled, scale=10)


@examples(10)
@given(st.sampled_from(sorted(NETS)))
def test_full_and_smallest_are_the_ends_of_every_axis(name):
    net = NETS[name]
    assert validate_config(net, {}) == full(net)
    with torch.no_grad(), use(net, full(net)):
        whole = net(INPUTS[name])
    with torch.no_grad():
        # exact: the full keep counts slice whole weights, the unmasked network's very operations
        assert_close(whole, net(INPUTS[name]), rtol=0, atol=0)
    assert all(smallest(net)[a] == axis.always_on for a, axis in axes(net).items())
    validate_config(net, smallest(net), partial=False)


# ----------------------------------------------------------------------------- invalid


@st.composite
def invalid_configs(draw):
    """A valid config with one defect; returns (net name, config, error type, axis named)."""
    name, config = draw(valid_configs())
    known = axes(NETS[name])
    defect = draw(st.sampled_from(["unknown", "below", "above", "type"]))
    if defect == "unknown":
        bad = draw(st.text(min_size=1, max_size=12).filter(lambda s: s not in known))
        return name, {**config, bad: 1}, ValueError, bad
    axis_name = draw(st.sampled_from(sorted(known)))
    axis = known[axis_name]
    if defect == "below":
        value = draw(st.integers(-(10**6), axis.always_on - 1))
        return name, {**config, axis_name: value}, ValueError, axis_name
    if defect == "above":
        value = draw(st.integers(axis.size + 1, 10**6))
        return name, {**config, axis_name: value}, ValueError, axis_name
    value = draw(
        st.one_of(
            st.text(max_size=4),
            st.none(),
            st.booleans(),
            st.floats(allow_nan=True).filter(lambda f: not (math.isfinite(f) and f == int(f))),
            st.lists(st.integers(0, 3), max_size=3),
            st.just(torch.tensor([1, 2])),
            st.just(torch.tensor(True)),
        )
    )
    return name, {**config, axis_name: value}, TypeError, axis_name


@examples(100)
@given(invalid_configs())
def test_invalid_configs_are_rejected_naming_the_axis(case):
    name, config, error, axis_name = case
    net = NETS[name]
    before = get_masks(net)
    with pytest.raises(error) as info:
        validate_config(net, config)
    assert repr(axis_name) in str(info.value)
    with pytest.raises(error):
        with use(net, config):
            pytest.fail("use() entered with an invalid config")
    assert get_masks(net) == before  # nothing was left set


@examples(20)
@given(st.one_of(st.lists(st.integers()), st.text(), st.integers(), st.none()))
def test_a_config_that_is_not_a_mapping_is_a_type_error(config):
    with pytest.raises(TypeError, match="mapping"):
        validate_config(NETS["mlp"], config)
