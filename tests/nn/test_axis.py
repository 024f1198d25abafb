"""Axes, owners and masks: validation, naming, sharing and the masked() context manager."""

import numpy as np
import pytest
import torch
from torch import nn

from bayes_nest.nn import (
    Axis,
    NestedLinear,
    NestedModule,
    axes,
    full_block_mask,
    get_masks,
    masked,
    set_masks,
)


class Owner(NestedModule):
    axis_kind = "paths"

    def __init__(self, size=4, always_on=1, axis_name=None):
        super().__init__(size=size, always_on=always_on, axis_name=axis_name)

    def forward(self, x):
        return x


# -- Axis -----------------------------------------------------------------------------------


def test_axis_orderable_and_counts():
    axis = Axis("a", "width", 6, 2, 3)
    assert axis.orderable == 4
    assert [axis.check_count(n) for n in range(2, 7)] == [2, 3, 4, 5, 6]
    assert axis.check_count(np.int64(5)) == 5
    assert axis.check_count(torch.tensor(3)) == 3
    assert axis.check_count(4.0) == 4


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"kind": "height"}, "kind"),
        ({"size": 0}, "size"),
        ({"always_on": 5}, "always_on"),
        ({"always_on": -1}, "always_on"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_axis_validation_names_the_field(kwargs, word):
    args = {"name": "a", "kind": "width", "size": 4, "always_on": 1, "block_size": 1} | kwargs
    with pytest.raises(ValueError, match=word):
        Axis(**args)


@pytest.mark.parametrize("field", ["size", "always_on", "block_size"])
def test_axis_rejects_non_integer_fields(field):
    args = {"name": "a", "kind": "width", "size": 4, "always_on": 1, "block_size": 1}
    args[field] = 1.5
    with pytest.raises(TypeError, match=field):
        Axis(**args)


@pytest.mark.parametrize("count", [0, 7, -1])
def test_check_count_range(count):
    with pytest.raises(ValueError, match=r"out of range \[always_on=1, size=6\]"):
        Axis("a", "width", 6, 1).check_count(count)


@pytest.mark.parametrize("count", [True, 2.5, "3", None, torch.tensor(2.5), torch.tensor([1, 2])])
def test_check_count_rejects_non_integers(count):
    with pytest.raises(TypeError, match="keep count must be an integer"):
        Axis("a", "width", 6, 1).check_count(count)


# -- owners and names ----------------------------------------------------------------------


def test_axis_names_default_to_module_paths():
    net = nn.Sequential(Owner(), nn.Sequential(nn.ReLU(), Owner(size=3, always_on=0)))
    found = axes(net)
    assert list(found) == ["0", "1.1"]
    assert found["1.1"] == Axis("1.1", "paths", 3, 0, 1)


def test_root_owner_named_after_its_class():
    assert list(axes(Owner())) == ["Owner"]


def test_shared_axis_names_merge_and_must_agree():
    net = nn.Sequential(Owner(axis_name="s"), Owner(axis_name="s"), Owner())
    assert list(axes(net)) == ["s", "2"]
    bad = nn.Sequential(Owner(axis_name="s"), Owner(size=5, axis_name="s"))
    with pytest.raises(ValueError, match="disagree"):
        axes(bad)


def test_owner_validation():
    with pytest.raises(ValueError, match="axis_name"):
        Owner(axis_name="")
    with pytest.raises(ValueError, match="always_on"):
        Owner(size=2, always_on=3)


def test_kept_blocks_and_block_scale():
    owner = Owner(size=4)
    assert owner.kept_blocks() == 4 and owner.block_scale() is None
    owner.mask = 2
    assert owner.kept_blocks() == 2 and owner.block_scale() is None
    owner.mask = torch.tensor([1.0, 0.5, 0.0, 0.0])
    assert owner.kept_blocks() == 4
    assert owner.block_scale(torch.float64).dtype == torch.float64


# -- masks ------------------------------------------------------------------------------------


def test_full_block_mask_pads_always_on_ones():
    axis = Axis("a", "width", 5, 2)
    m = torch.tensor([0.9, 0.5, 0.1])
    assert torch.equal(full_block_mask(axis, m), torch.tensor([1.0, 1.0, 0.9, 0.5, 0.1]))
    batch = torch.rand(7, 3)
    assert full_block_mask(axis, batch).shape == (7, 5)
    assert full_block_mask(Axis("b", "width", 3, 0), m) is m
    with pytest.raises(ValueError, match="expected 3"):
        full_block_mask(axis, torch.ones(4))


def test_set_and_get_masks():
    net = nn.Sequential(Owner(axis_name="s"), Owner(axis_name="s"), Owner())
    set_masks(net, {"s": 2, "2": torch.ones(4)})
    assert net[0].mask == 2 and net[1].mask == 2
    assert torch.equal(net[2].mask, torch.ones(4))
    assert get_masks(net)["s"] == 2
    set_masks(net, {"s": torch.tensor(3)})  # a 0-dim tensor is a count
    assert net[0].mask == 3 and isinstance(net[0].mask, int)
    set_masks(net, {"s": None})
    assert net[1].mask is None


def test_set_masks_validation():
    net = nn.Sequential(Owner(), Owner())
    with pytest.raises(ValueError, match="unknown axis 'x'"):
        set_masks(net, {"x": 2})
    set_masks(net, {"x": 2, "0": 2}, strict=False)
    assert net[0].mask == 2
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        set_masks(net, {"0": torch.ones(3)})
    with pytest.raises(ValueError, match="out of range"):
        set_masks(net, {"0": 9})


def test_masked_restores_previous_masks():
    net = nn.Sequential(Owner(), Owner())
    net[0].mask = 3
    with masked(net, {"0": 2, "1": 1}):
        assert (net[0].mask, net[1].mask) == (2, 1)
    assert (net[0].mask, net[1].mask) == (3, None)


def test_masked_restores_on_exception_in_body_and_in_validation():
    net = nn.Sequential(Owner(), Owner())
    net[1].mask = 2
    with pytest.raises(RuntimeError, match="boom"), masked(net, {"0": 1, "1": 4}):
        assert net[1].mask == 4
        raise RuntimeError("boom")
    assert (net[0].mask, net[1].mask) == (None, 2)
    with pytest.raises(ValueError, match="out of range"), masked(net, {"0": 1, "1": 99}):
        pass  # pragma: no cover - never entered
    assert (net[0].mask, net[1].mask) == (None, 2)


def test_masked_with_real_layer_changes_output_width():
    layer = NestedLinear(3, 8, groups=4)
    x = torch.randn(2, 3)
    with masked(layer, {"NestedLinear": 2}):
        assert layer(x).shape == (2, 4)
    assert layer(x).shape == (2, 8)
