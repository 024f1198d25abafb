"""Depth stages: truncation skips trailing branches, tensor masks scale them."""

import pytest
import torch
from torch import nn

from bayes_nest.nn import Axis, NestedStage, axes, masked
from bayes_nest.testing import assert_close
from tests.nn.nn_testing import CountingBranch, check_dropped_blocks_do_not_matter, check_int_mask


def make_stage(always_on=1, branches=3):
    torch.manual_seed(0)
    first = nn.Sequential(nn.Linear(3, 5), nn.ReLU())  # changes the shape: always on
    blocks = [first] * always_on + [CountingBranch(5) for _ in range(branches)]
    if always_on == 0:
        blocks = [CountingBranch(3) for _ in range(branches)]
    return NestedStage(blocks, always_on=always_on)


def reference(stage, x, scales):
    """x <- g(x) for always-on blocks, x <- x + s_i f_i(x) for the rest (an independent loop)."""
    for i, block in enumerate(stage.blocks):
        if i < stage.axis_always_on:
            x = block(x)
        else:
            x = x + scales[i] * block(x)
    return x


def test_axis_of_a_stage():
    stage = make_stage()
    assert axes(stage) == {"NestedStage": Axis("NestedStage", "depth", 4, 1, 1)}
    named = NestedStage([nn.Identity(), nn.Identity()], always_on=0, axis_name="d")
    assert axes(nn.Sequential(named)) == {"d": Axis("d", "depth", 2, 0, 1)}
    assert isinstance(named.blocks, nn.ModuleList)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_int_mask_runs_only_kept_blocks_and_equals_tensor_mask(count):
    stage = make_stage()
    check_int_mask(stage, stage.blocks, torch.randn(4, 3), count, reference)


def test_tensor_mask_scales_branches():
    stage = make_stage()
    x = torch.randn(4, 3)
    m = torch.tensor([0.3, 0.9, 0.5, 0.1])  # the always-on entry is ignored
    stage.mask = m
    assert_close(stage(x), reference(stage, x, [1.0, 0.9, 0.5, 0.1]))


def test_dropped_block_weights_do_not_matter():
    stage = make_stage()
    check_dropped_blocks_do_not_matter(stage, stage.blocks, torch.randn(4, 3), kept=2, shift=0.5)


def test_always_on_zero_allows_identity():
    stage = make_stage(always_on=0)
    x = torch.randn(2, 3)
    with masked(stage, {"NestedStage": 0}):
        assert_close(stage(x), x)
    stage.mask = None
    assert_close(stage(x), reference(stage, x, [1.0, 1.0, 1.0]))


def test_gradient_reaches_tensor_mask():
    stage = make_stage()
    x = torch.randn(4, 3)
    m = torch.tensor([1.0, 0.5, 0.5, 0.5], dtype=torch.float64, requires_grad=True)
    stage.double()

    def f(mask):
        stage.mask = mask
        return stage(x.double())

    assert torch.autograd.gradcheck(f, (m,))
    stage.mask = m
    stage(x.double()).sum().backward()
    assert m.grad[0] == 0 and torch.all(m.grad[1:] != 0)


def test_shape_changing_branch_rejected():
    stage = NestedStage([nn.Identity(), nn.Linear(3, 4)], always_on=1)
    with pytest.raises(ValueError, match="must keep the shape"):
        stage(torch.randn(2, 3))


@pytest.mark.parametrize(
    ("blocks", "kwargs", "error", "word"),
    [
        ([], {}, ValueError, "blocks"),
        (nn.Linear(2, 2), {}, TypeError, "blocks"),
        ([nn.Identity(), "relu"], {}, TypeError, r"blocks\[1\]"),
        (3, {}, TypeError, "blocks"),
        ([nn.Identity()], {"always_on": 2}, ValueError, "always_on"),
        ([nn.Identity()], {"always_on": -1}, ValueError, "always_on"),
        ([nn.Identity()], {"always_on": 1.0}, TypeError, "always_on"),
        ([nn.Identity()], {"axis_name": ""}, ValueError, "axis_name"),
    ],
)
def test_stage_validation(blocks, kwargs, error, word):
    with pytest.raises(error, match=word):
        NestedStage(blocks, **kwargs)
