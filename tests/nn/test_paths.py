"""Parallel paths: the output is the (masked) sum of the branches, plus the input if residual."""

import pytest
import torch
from torch import nn

from bayes_nest.nn import Axis, NestedPaths, axes
from bayes_nest.testing import assert_close
from tests.nn.nn_testing import CountingBranch, check_dropped_blocks_do_not_matter, check_int_mask


def relu_branch(width_in=4, width_out=4):
    return CountingBranch(width_in, width_out, activation=torch.relu)


def make_paths(residual=True, always_on=1, n=4, width_out=4):
    torch.manual_seed(0)
    return NestedPaths(
        [relu_branch(4, width_out) for _ in range(n)], always_on=always_on, residual=residual
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
    check_int_mask(layer, layer.branches, torch.randn(5, 4), count, reference)


def test_full_and_soft_masks():
    layer = make_paths(residual=False, width_out=3)
    x = torch.randn(5, 4)
    assert_close(layer(x), reference(layer, x, [1.0] * 4))
    m = torch.tensor([0.5, 0.25, 1.0, 0.0])  # always-on entries scale too
    layer.mask = m
    assert_close(layer(x), reference(layer, x, m.tolist()))


def test_residual_with_zero_paths_is_identity():
    layer = make_paths(always_on=0)
    layer.mask = 0
    x = torch.randn(2, 4)
    assert torch.equal(layer(x), x)  # exact: no path runs, the input passes through


def test_dropped_branch_weights_do_not_matter():
    layer = make_paths()
    check_dropped_blocks_do_not_matter(layer, layer.branches, torch.randn(5, 4), kept=2, shift=3.0)


def test_gradient_reaches_tensor_mask():
    layer = make_paths(residual=False)
    x = torch.randn(5, 4)
    m = torch.tensor([1.0, 0.6, 0.3, 0.1], requires_grad=True)
    layer.mask = m
    layer(x).sum().backward()
    expected = torch.stack([b(x).sum() for b in layer.branches]).detach()
    assert_close(m.grad, expected)


def test_mismatched_branch_shapes_rejected():
    layer = NestedPaths([relu_branch(4, 4), relu_branch(4, 3)], residual=False)
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
