"""Width layers: slicing equals masking, narrower inputs, batch-norm slices, validation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest.nn import (
    NestedConv2d,
    NestedLinear,
    SlicedConv2d,
    SlicedLinear,
    make_activation,
)
from bayes_nest.testing import assert_close


def randomize_norm(layer):
    """Give a layer's batch-norm non-trivial statistics and affine parameters."""
    norm = layer.norm
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_()
        norm.bias.normal_()


def prefix_mask(size, count):
    return torch.cat([torch.ones(count), torch.zeros(size - count)])


def make_layer(kind, **kwargs):
    if kind == "linear":
        return NestedLinear(5, 12, groups=4, norm="batch", **kwargs), torch.randn(6, 5)
    return NestedConv2d(3, 8, 3, padding=1, groups=4, **kwargs), torch.randn(2, 3, 5, 5)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_int_mask_equals_tensor_mask(kind, count):
    torch.manual_seed(count)
    layer, x = make_layer(kind)
    randomize_norm(layer)
    layer.eval()
    layer.mask = count
    sliced = layer(x)
    layer.mask = prefix_mask(4, count)
    scaled = layer(x)
    units = count * layer.axis_block_size
    assert sliced.shape[1] == units
    assert_close(sliced, scaled[:, :units])
    assert torch.all(scaled[:, units:] == 0)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_tensor_mask_scales_blocks(kind):
    torch.manual_seed(0)
    layer, x = make_layer(kind)
    layer.eval()
    full = layer(x)
    m = torch.tensor([1.0, 0.5, 0.25, 0.0])
    layer.mask = m
    unit_scale = m.repeat_interleave(layer.axis_block_size)
    shape = [1, -1] + [1] * (x.dim() - 2)
    assert_close(layer(x), full * unit_scale.view(shape))


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_dropped_block_weights_do_not_matter(kind):
    torch.manual_seed(1)
    layer, x = make_layer(kind)
    layer.eval()
    layer.mask = 2
    units = 2 * layer.axis_block_size
    before = layer(x)
    with torch.no_grad():
        layer.affine.weight[units:] += 10.0
        layer.norm.weight[units:] += 10.0
    assert_close(layer(x), before)
    with torch.no_grad():
        layer.affine.weight[units - 1] += 1.0
    assert not torch.allclose(layer(x), before)


def test_narrower_input_equals_zero_padded_input():
    torch.manual_seed(2)
    layer = NestedLinear(6, 8, groups=2, norm=None)
    x = torch.randn(4, 6)
    x[:, 4:] = 0.0
    assert_close(layer(x[:, :4]), layer(x))
    conv = NestedConv2d(6, 4, 3, padding=1, groups=2)
    conv.eval()
    xc = torch.randn(2, 6, 4, 4)
    xc[:, 3:] = 0.0
    assert_close(conv(xc[:, :3]), conv(xc))


def test_wider_input_rejected():
    with pytest.raises(ValueError, match="more than 4"):
        NestedLinear(4, 8, groups=2)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="more than 2"):
        SlicedConv2d(2, 4, 1)(torch.randn(1, 3, 2, 2))


def test_batchnorm_training_updates_only_kept_slice():
    torch.manual_seed(3)
    layer = NestedLinear(5, 8, groups=4, norm="batch", activation=None)
    layer.train()
    layer.mask = 2
    x = torch.randn(32, 5)
    mean0 = layer.norm.running_mean.clone()
    var0 = layer.norm.running_var.clone()
    out = layer(x)
    # oracle: a plain batch-norm on the kept pre-activations
    reference = nn.BatchNorm1d(4)
    pre = F.linear(x, layer.affine.weight[:4], layer.affine.bias[:4])
    assert_close(out, reference(pre))
    assert_close(layer.norm.running_mean[:4], reference.running_mean)
    assert_close(layer.norm.running_var[:4], reference.running_var)
    # exact: the dropped units' statistics are not touched at all
    assert torch.equal(layer.norm.running_mean[4:], mean0[4:])
    assert torch.equal(layer.norm.running_var[4:], var0[4:])
    assert not torch.equal(layer.norm.running_mean[:4], mean0[:4])
    assert int(layer.norm.num_batches_tracked) == 1


def test_batchnorm_cumulative_average_momentum_none():
    torch.manual_seed(4)
    layer = NestedConv2d(2, 4, 1, groups=2, activation=None)
    layer.norm.momentum = None
    layer.train()
    batches = [torch.randn(8, 2, 3, 3) for _ in range(3)]
    means = []
    for x in batches:
        layer(x)
        pre = layer.affine(x)
        means.append(pre.mean(dim=(0, 2, 3)))
    assert_close(layer.norm.running_mean, torch.stack(means).mean(0))


def test_gradient_reaches_tensor_mask():
    torch.manual_seed(5)
    layer = NestedLinear(3, 6, groups=3, norm=None, activation=None)
    x = torch.randn(4, 3)
    m = torch.tensor([1.0, 0.7, 0.2], requires_grad=True)
    layer.mask = m
    layer(x).sum().backward()
    blocks = layer.affine(x).detach().view(4, 3, 2).sum(dim=(0, 2))
    assert_close(m.grad, blocks)


def test_weight_quantizer_hook_sees_full_weight():
    layer = NestedLinear(4, 8, groups=4, norm=None, activation=None)
    seen = []

    class Halve(nn.Module):
        def forward(self, w):
            seen.append(w.shape)
            return w / 2

    layer.weight_quantizer = Halve()
    layer.mask = 2
    x = torch.randn(3, 4)
    expected = F.linear(x, layer.affine.weight[:4] / 2, layer.affine.bias[:4])
    assert_close(layer(x), expected)
    assert seen == [torch.Size([8, 4])]
    assert_close(layer.full_weight(), layer.affine.weight / 2)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_zero_kept_blocks(kind):
    torch.manual_seed(6)
    layer, x = make_layer(kind, always_on=0)
    layer.eval()
    layer.mask = 0
    out = layer(x)
    assert out.shape[1] == 0 and out.shape[0] == x.shape[0]
    assert out.shape[2:] == x.shape[2:]
    # the next layer then sees only zeros: its output is its bias (after norm/activation)
    if kind == "linear":
        nxt = NestedLinear(12, 4, groups=2, norm=None, activation=None)
        assert_close(nxt(out), nxt.affine.bias.expand(6, 4))
    else:
        nxt = SlicedConv2d(8, 4, 3, padding=1)
        assert_close(nxt(out), nxt(torch.zeros(2, 8, 5, 5)))


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"groups": 0}, ValueError, "groups"),
        ({"groups": 5}, ValueError, "divisible by groups"),
        ({"groups": True}, ValueError, "groups"),
        ({"always_on": 5}, ValueError, "always_on"),
        ({"norm": "layer"}, ValueError, "norm"),
        ({"activation": "swish"}, ValueError, "activation"),
        ({"axis_name": ""}, ValueError, "axis_name"),
    ],
)
def test_width_validation(kwargs, error, word):
    args = {"groups": 4} | kwargs
    with pytest.raises(error, match=word):
        NestedLinear(3, 8, **args)


def test_sliced_layers_and_activation_lookup():
    head = SlicedLinear(6, 3)
    x = torch.randn(2, 4)
    assert_close(head(x), F.linear(x, head.weight[:, :4], head.bias))
    assert_close(head(x, out_units=2), head(x)[:, :2])
    with pytest.raises(ValueError, match="groups=1"):
        SlicedConv2d(4, 4, 3, groups=2)
    assert make_activation("tanh") is torch.tanh
    assert make_activation(None) is None
    with pytest.raises(ValueError, match="activation"):
        make_activation("nope")
