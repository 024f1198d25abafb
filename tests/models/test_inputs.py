"""Reference models refuse inputs of the wrong shape instead of running on truncated layers."""

from __future__ import annotations

import re

import pytest
import torch

from bayes_nest.models import MLP, VGG, ConvNet, ResNet, ResNeXt, UNet
from bayes_nest.subnet import export
from bayes_nest.testing import assert_close

MODELS = {
    "MLP": (lambda: MLP(16, [8, 8], 3, groups=4), (16,)),
    "ConvNet": (lambda: ConvNet(3, 2, (4, 8), hidden=8, groups=2), (2, 8, 8)),
    "ResNet": (lambda: ResNet(3, 2, (4, 8), (2, 1), groups=2), (2, 8, 8)),
    "ResNeXt": (
        lambda: ResNeXt(3, 2, (4,), (2,), cardinality=2, path_width=2, groups=2),
        (2, 8, 8),
    ),
    "VGG": (lambda: VGG(3, 2, "tiny", head_width=8, groups=4, nest_first=True), (2, 8, 8)),
    "UNet": (lambda: UNet(2, 3, (4, 8), bottleneck_blocks=1, groups=2), (2, 8, 8)),
}

# Shapes each model must refuse: fewer features/channels (these used to run on the leading
# columns of the first layer's weights), more, and a missing batch dimension.
WRONG = {
    "MLP": [(2, 10), (2, 17), (16,), (2, 3, 5)],
    "ConvNet": [(2, 1, 8, 8), (2, 3, 8, 8), (2, 8, 8), (2, 2, 8)],
    "ResNet": [(2, 1, 8, 8), (2, 3, 8, 8), (2, 8, 8)],
    "ResNeXt": [(2, 1, 8, 8), (2, 3, 8, 8), (2, 8, 8)],
    "VGG": [(2, 1, 8, 8), (2, 3, 8, 8), (2, 8, 8)],
    "UNet": [(2, 1, 8, 8), (2, 3, 8, 8), (2, 8, 8)],
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wrong_input_shapes_are_refused_with_the_expected_shape(name):
    factory, shape = MODELS[name]
    model = factory().eval()
    expected = f"(N, {shape[0]}" if len(shape) == 1 else f"(N, {shape[0]}, H, W)"
    for wrong in WRONG[name]:
        with pytest.raises(ValueError, match=rf"{name} expects .*{re.escape(expected)}"):
            model(torch.randn(wrong))
    assert model(torch.randn(2, *shape)).shape[:2] == (2, 3)


def test_mlp_accepts_any_example_shape_with_the_right_number_of_values():
    model = MLP(16, [8], 3, groups=4).eval()
    x = torch.randn(5, 4, 4)
    assert torch.equal(model(x), model(x.reshape(5, 16)))  # same data, same operations


def test_non_tensor_inputs_are_refused():
    with pytest.raises(TypeError, match="tensor"):
        MLP(4, [4], 2, groups=2)([[0.0] * 4])
    with pytest.raises(TypeError, match="tensor"):
        ConvNet(2, 1, (4,), groups=2)(None)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_checks_do_not_reach_the_exported_network(name):
    """Export traces ``forward`` symbolically: the check is skipped there, and the exported
    network computes what the model computes."""
    factory, shape = MODELS[name]
    model = factory().eval()
    exported = export(model, {}, input_shape=shape)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert_close(exported(x), model(x))
