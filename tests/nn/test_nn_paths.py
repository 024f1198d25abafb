"""Parallel paths: the output is the (masked) sum of the branches, plus the input if residual."""

import pytest
import torch
from torch import nn

from bayes_nest.nn import Axis, NestedPaths, axes


class Branch(nn.Module):
    def __init__(self, width_in=4, width_out=4):
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.relu(self.linear(x))


def make_paths(residual=True, always_on=1, n=4, width_out=4):
    torch.manual_seed(0)
    return NestedPaths(
        [Branch(4, width_out) for _ in range(n)], always_on=always_on, residual=residual
    )


def reference(layer, x, scales):
    out = x if layer.residual else 0.0
    for s, branch in zip(scales, layer.branches, strict=True):
        out = out + s * branch(x)
    return out


def test_axis_of_paths():
    layer = make_paths(always_on=2)
    assert axes(layer) == {"NestedPaths": Axis("NestedPaths", "paths", 4, 2, 1)}
    assert isinstance(layer.branches, nn.ModuleList)
    named = NestedPaths([nn.Identity()], axis_name="p")
    assert list(axes(nn.Sequential(named))) == ["p"]


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_int_mask_equals_tensor_mask(residual, count):
    layer = make_paths(residual)
    x = torch.randn(5, 4)
    scales = [1.0] * count + [0.0] * (4 - count)
    for branch in layer.branches:
        branch.calls = 0
    layer.mask = count
    out = layer(x)
    assert [b.calls for b in layer.branches] == [1] * count + [0] * (4 - count)
    torch.testing.assert_close(out, reference(layer, x, scales))
    layer.mask = torch.tensor(scales)
    torch.testing.assert_close(layer(x), out, atol=1e-6, rtol=1e-5)


def test_full_and_soft_masks():
    layer = make_paths(residual=False, width_out=3)
    x = torch.randn(5, 4)
    torch.testing.assert_close(layer(x), reference(layer, x, [1.0] * 4))
    m = torch.tensor([0.5, 0.25, 1.0, 0.0])  # always-on entries scale too
    layer.mask = m
    torch.testing.assert_close(layer(x), reference(layer, x, m.tolist()))


def test_residual_with_zero_paths_is_identity():
    layer = make_paths(always_on=0)
    layer.mask = 0
    x = torch.randn(2, 4)
    assert torch.equal(layer(x), x)


def test_dropped_branch_weights_do_not_matter():
    layer = make_paths()
    x = torch.randn(5, 4)
    layer.mask = 2
    before = layer(x)
    with torch.no_grad():
        layer.branches[2].linear.weight.add_(3.0)
        layer.branches[3].linear.bias.add_(3.0)
    torch.testing.assert_close(layer(x), before)
    with torch.no_grad():
        layer.branches[1].linear.bias.add_(3.0)
    assert not torch.allclose(layer(x), before)


def test_gradient_reaches_tensor_mask():
    layer = make_paths(residual=False)
    x = torch.randn(5, 4)
    m = torch.tensor([1.0, 0.6, 0.3, 0.1], requires_grad=True)
    layer.mask = m
    layer(x).sum().backward()
    expected = torch.stack([b(x).sum() for b in layer.branches]).detach()
    torch.testing.assert_close(m.grad, expected)


def test_mismatched_branch_shapes_rejected():
    layer = NestedPaths([Branch(4, 4), Branch(4, 3)], residual=False)
    with pytest.raises(ValueError, match="branch 1"):
        layer(torch.randn(2, 4))


@pytest.mark.parametrize(
    ("branches", "kwargs", "error", "word"),
    [
        ([], {}, ValueError, "branches"),
        ([nn.Identity(), 1], {}, TypeError, r"branches\[1\]"),
        ([nn.Identity()], {"always_on": 2}, ValueError, "always_on"),
        ([nn.Identity()], {"always_on": 0, "residual": False}, ValueError, "always_on"),
        ([nn.Identity()], {"residual": 1}, TypeError, "residual"),
    ],
)
def test_paths_validation(branches, kwargs, error, word):
    with pytest.raises(error, match=word):
        NestedPaths(branches, **kwargs)
