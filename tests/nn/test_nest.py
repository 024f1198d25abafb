"""nest(): plain PyTorch models made nested; exactness, sub-networks, errors and the whole toolchain."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest import subnet
from bayes_nest.nn import (
    NestedConv2d,
    NestedLinear,
    NestError,
    SlicedLinear,
    axes,
    masked,
    nest,
    nest_plan,
)
from bayes_nest.testing import assert_close


def plain_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 16),
        nn.ReLU(),
        nn.Linear(16, 8),
        nn.BatchNorm1d(8),
        nn.Tanh(),
        nn.Dropout(0.2),
        nn.Linear(8, 3),
    )


def plain_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


class CustomNet(nn.Module):
    """A forward with functional activations, a sigmoid module, a view and a spatial mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gate = nn.Sigmoid()
        self.fc = nn.Linear(8 * 4 * 4, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.gate(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.head(F.gelu(self.fc(x)))


def randomize_norms(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine parameters (fixed seed)."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


CASES = {
    "mlp": (plain_mlp, (6,), {"1": "linear", "3": "linear"}),
    "cnn": (plain_cnn, (1, 8, 8), {"0": "conv", "4": "conv", "9": "linear"}),
    "custom": (CustomNet, (2, 8, 8), {"conv1": "conv", "conv2": "conv", "fc": "linear"}),
}


def make(case: str, groups: int = 4):
    build, shape, nested_paths = CASES[case]
    torch.manual_seed(0)
    plain = build()
    randomize_norms(plain)
    return plain, nest(plain, groups=groups), shape, nested_paths


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_config_computes_the_plain_model(case):
    plain, net, shape, nested_paths = make(case)
    assert {name: a.kind for name, a in axes(net).items()} == dict.fromkeys(nested_paths, "width")
    kinds = {NestedLinear: "linear", NestedConv2d: "conv"}
    assert {p: kinds[type(net.get_submodule(p))] for p in nested_paths} == nested_paths
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(1))
    plain.eval(), net.eval()
    assert_close(net(x), plain(x))
    with subnet.use(net, subnet.full(net)):
        assert_close(net(x), plain(x))
    # training mode: batch statistics and the running averages they update agree too
    plain.train(), net.train()
    torch.manual_seed(5)
    expected = plain(x)
    torch.manual_seed(5)
    assert_close(net(x), expected)
    plain_stats = [m.running_mean for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    net_stats = [m.running_mean for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(plain_stats) == len(net_stats)
    for a, b in zip(net_stats, plain_stats, strict=True):
        assert_close(a, b)


def _zero_dropped(plain: nn.Module, keep: dict[str, int]) -> list:
    """Forward hooks zeroing the dropped units of ``plain`` where the nested net masks them."""
    hooks = []
    for path, units in keep.items():

        def hook(_module, _inputs, out, units=units):
            out = out.clone()
            out.narrow(1, units, out.shape[1] - units).zero_()
            return out

        hooks.append(plain.get_submodule(path).register_forward_hook(hook))
    return hooks


def test_sub_network_is_the_plain_model_with_dropped_units_zeroed():
    # the oracle: the plain model with the dropped units set to zero after norm and activation
    plain, net, shape, _ = make("mlp")
    plain.eval(), net.eval()
    x = torch.randn(9, *shape)
    hooks = _zero_dropped(plain, {"2": 2 * 4, "5": 3 * 2})  # 2 of 4 blocks of 4, 3 of 4 of 2
    try:
        expected = plain(x)
    finally:
        for h in hooks:
            h.remove()
    with subnet.use(net, {"1": 2, "3": 3}):
        sliced = net(x)
    assert_close(sliced, expected)
    mask = {"1": torch.tensor([1.0, 1.0, 0.0, 0.0]), "3": torch.tensor([1.0, 1.0, 1.0, 0.0])}
    with masked(net, mask):
        assert_close(net(x), expected)


def test_weights_are_copied_unless_inplace():
    plain = plain_mlp()
    net = nest(plain, groups=4)
    assert isinstance(plain[1], nn.Linear) and isinstance(net[1], NestedLinear)
    with torch.no_grad():
        net[1].affine.weight.add_(1.0)
    assert not torch.equal(net[1].affine.weight, plain[1].weight)
    assert {t.device for t in net.state_dict().values()} == {plain[1].weight.device}
    shared = nest(plain, groups=4, inplace=True)
    assert shared is plain and isinstance(plain[1], NestedLinear)
    assert isinstance(plain[2], nn.Identity) and isinstance(plain[7], SlicedLinear)


def test_output_layer_is_kept_whole_and_sliced_on_its_input():
    _, net, shape, _ = make("cnn")
    head = net[11]
    assert type(head) is SlicedLinear and head.out_features == 5
    with subnet.use(net, subnet.smallest(net)):
        assert net(torch.zeros(2, *shape)).shape == (2, 5)


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


def test_cost_macs_and_params_equal_thop_on_the_plain_model():
    thop = pytest.importorskip("thop")
    zero = thop.vision.basic_hooks.zero_ops
    not_counted = {m: zero for m in (nn.BatchNorm1d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)}
    for case in ("mlp", "cnn", "custom"):
        plain, net, shape, _ = make(case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs, params = thop.profile(
                plain, inputs=(torch.zeros(1, *shape),), custom_ops=not_counted, verbose=False
            )
        assert subnet.cost(net, subnet.full(net), "macs", shape) == macs, case
        assert subnet.cost(net, subnet.full(net), "params", shape) == params, case
