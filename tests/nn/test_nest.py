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
    SlicedLinear,
    axes,
    masked,
    nest,
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
