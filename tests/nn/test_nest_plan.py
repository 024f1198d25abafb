"""nest(): which layers the data flow lets it nest, and the errors for those it cannot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest import subnet
from bayes_nest.nn import NestError, SlicedLinear, axes, nest, nest_plan
from bayes_nest.testing import assert_close
from tests.nn.test_nest import plain_mlp


class Flattened(nn.Module):
    """A convolution whose output reaches the head through one of the supported flattenings."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 4, 3)
        self.out = nn.Linear(4 if how == "mean" else 4 * 6 * 6, 2)

    def forward(self, x):
        x = self.conv(x).relu()
        if self.how == "mean":
            x = x.mean((2, 3))
        elif self.how == "flatten":
            x = x.flatten(1)
        elif self.how == "reshape":
            x = x.reshape(x.shape[0], -1)
        elif self.how == "size":
            x = x.view(x.size()[0], -1)
        else:
            x = x.view(-1, 144)  # a literal width: breaks when the channels narrow
        return self.out(x)


@pytest.mark.parametrize("how", ["mean", "flatten", "reshape", "size", "literal"])
def test_flattening_forms(how):
    torch.manual_seed(0)
    plain = Flattened(how)
    plan = {p.path: p for p in nest_plan(plain, groups=2)}
    if how == "literal":
        assert plan["conv"].role == "whole" and "method .view()" in plan["conv"].reason
        return
    assert plan["conv"].role == "nested"
    net = nest(plain, groups=2)
    x = torch.randn(3, 1, 8, 8)
    assert_close(net(x), plain(x))
    with subnet.use(net, {"conv": 1}):
        half = net(x)
    with torch.no_grad():
        plain.conv.weight[2:] = 0.0  # the oracle: channels 2 and 3 dropped (relu(0) = 0)
        plain.conv.bias[2:] = 0.0
    assert_close(half, plain(x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.branch = nn.Linear(8, 8)
        self.hidden = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + F.relu(self.branch(x))
        return self.out(F.relu(self.hidden(x)))


def test_layers_feeding_a_residual_sum_are_kept_whole_with_a_warning():
    torch.manual_seed(0)
    plain = Residual()
    roles = {p.path: p.role for p in nest_plan(plain, groups=4)}
    assert roles == {"stem": "whole", "branch": "whole", "hidden": "nested", "out": "output"}
    with pytest.warns(UserWarning, match=r"'stem': its output reaches function add\(\)"):
        net = nest(plain, groups=4)
    assert list(axes(net)) == ["hidden"]
    x = torch.randn(5, 4)
    assert_close(net(x), plain(x))
    with pytest.raises(NestError, match="'branch'.*add"):
        nest(plain, groups=4, strict=True)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.twice = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.twice(F.relu(self.twice(F.relu(self.first(x))))))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.grouped = nn.Conv2d(8, 8, 3, groups=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.out(F.relu(self.grouped(F.relu(self.conv(x)))))


@pytest.mark.parametrize(
    ("model", "path", "reason"),
    [
        (Reused, "twice", "called 2 times"),
        (Grouped, "grouped", r"grouped convolution \(groups=2\)"),
        (Grouped, "conv", "grouped convolution Conv2d 'grouped'"),
    ],
)
def test_layers_that_cannot_be_nested_name_path_and_reason(model, path, reason):
    torch.manual_seed(0)
    assert {p.path: p for p in nest_plan(model(), groups=4)}[path].role == "whole"
    with pytest.raises(NestError, match=f"'{path}': .*{reason}"):
        nest(model(), groups=4, strict=True)


def test_a_reused_layer_is_kept_whole_but_takes_a_narrowed_input():
    torch.manual_seed(0)
    plain = Reused()
    with pytest.warns(UserWarning, match="'twice': it is called 2 times"):
        net = nest(plain, groups=4)
    assert list(axes(net)) == ["first"] and type(net.twice) is SlicedLinear
    x = torch.randn(3, 4)
    assert_close(net(x), plain(x))
    with subnet.use(net, {"first": 1}):
        assert net(x).shape == (3, 2)


def test_grouped_conv_model_has_nothing_to_nest():
    with pytest.raises(NestError, match=r"no layer of Grouped can be nested .*'conv'"):
        nest(Grouped(), groups=4)


class TwoHeads(nn.Module):
    """A trunk feeding two heads (both sliced), and a concatenation that keeps a layer whole."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 8)
        self.side = nn.Linear(4, 8)
        self.head_a = nn.Linear(8, 2)
        self.head_b = nn.Linear(16, 3)

    def forward(self, x):
        t = F.relu(self.trunk(x))
        return self.head_a(t), self.head_b(torch.cat([t, torch.sigmoid(self.side(x))], -1))


class Orders(nn.Module):
    """conv -> pool -> BN (a norm after the pooling), and a functional sigmoid (f(0) != 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn(F.max_pool2d(self.conv(x), 2)).mean((2, 3))
        return self.out(torch.sigmoid(self.fc(x)))


@pytest.mark.parametrize(
    ("model", "reasons"),
    [
        (TwoHeads, {"trunk": "function cat()", "side": "function sigmoid()"}),
        (Orders, {"conv": "BatchNorm2d 'bn'", "fc": "function sigmoid()"}),
    ],
)
def test_operations_nest_cannot_follow_keep_layers_whole(model, reasons):
    plans = nest_plan(model(), groups=2)
    assert {p.path for p in plans if p.role == "whole"} == set(reasons)
    assert all(p.role == "output" for p in plans if p.path not in reasons)
    for plan in plans:
        if plan.path in reasons:
            assert f"its output reaches {reasons[plan.path]}" in plan.reason, plan
            assert "nest cannot follow" in plan.reason


def test_a_trunk_shared_by_two_sliced_heads_is_nested():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Linear(4, 8)
            self.head_a = nn.Linear(8, 2)
            self.head_b = nn.Linear(8, 3)

        def forward(self, x):
            t = F.dropout(F.relu(self.trunk(x)), 0.0)
            return self.head_a(t) + self.head_b(t).sum(-1, keepdim=True)

    torch.manual_seed(0)
    plain = Shared()
    net = nest(plain, groups=4)
    assert list(axes(net)) == ["trunk"]
    x = torch.randn(5, 4)
    assert_close(net(x), plain(x))
    with subnet.use(net, {"trunk": 1}):
        assert net(x).shape == (5, 2)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.b(F.relu(self.a(x)))


def test_bad_input_gets_a_clear_error():
    with pytest.raises(NestError, match="Untraceable.forward.*torch.fx.*leaf_modules"):
        nest(Untraceable())
    with pytest.raises(NestError, match="calls no nn.Linear or nn.Conv2d"):
        nest(nn.Sequential(nn.ReLU()))
    with pytest.raises(NestError, match=r"no layer of Sequential can be nested \(output"):
        nest(nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="groups must be a positive int, got 0"):
        nest(plain_mlp(), groups=0)
    with pytest.raises(ValueError, match=r"always_on must be in \[0, groups=4\], got 5"):
        nest(plain_mlp(), groups=4, always_on=5)
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        nest("net")
    plan = {p.path: p for p in nest_plan(plain_mlp(), groups=5)}
    assert (
        plan["1"].role == "whole" and "16 outputs are not divisible by groups=5" in plan["1"].reason
    )


def test_leaf_modules_make_control_flow_traceable():
    class Block(nn.Module):
        def forward(self, x):
            return -x if x.sum() > 0 else x

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), Block(), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match="'2': its output reaches Block '3'"):
        net = nest(model, groups=2, leaf_modules=(Block,))
    assert {p.path: p.role for p in nest_plan(model, groups=2, leaf_modules=(Block,))} == {
        "0": "nested",
        "2": "whole",
        "4": "output",
    }
    x = torch.randn(3, 4)
    assert_close(net(x), model(x))
